r"""Imports a Hugging Face Llama / Mistral / Gemma checkpoint into a rope_jax run directory.

    python -m rope_jax.import_hf --src=/ckpts/Meta-Llama-3.1-8B --out=/runs/llama31_8b \
        --param_dtype=bfloat16

``--src`` is a checkpoint directory as transformers saves it: ``config.json`` (the architecture,
``LlamaForCausalLM``, ``MistralForCausalLM`` or ``GemmaForCausalLM``; the sizes; RoPE from
``rope_parameters`` or the legacy ``rope_theta`` + ``rope_scaling``) and ``*.safetensors``
(sharded with ``model.safetensors.index.json`` or not). The model config is built from it
(``rope_jax.weights.hf_config``) on top of the house defaults; the params are read one tensor at
a time (``rope_jax.weights.hf_checkpoint``) and saved as ``<out>/checkpoints/<step>/`` with the
config in the metadata, so ``rope_jax.analyze``, ``rope_jax.sample`` and the experiments restore
it like any run. ``rope_jax.import_gemma`` stays for the gemma library's Orbax layout.

Exit codes are ``rope_jax.errors``'s: 2 for bad input (an unsupported architecture or rope type,
a missing file, a tensor of the wrong shape: one line naming it), 4 for an I/O error.
"""

from __future__ import annotations

from collections.abc import Sequence

from rope_jax import entrypoint
from rope_jax import errors


def define_flags() -> None:
  """Defines the CLI's absl flags (called from :func:`cli` only: importing defines none)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("src", None, "Hugging Face checkpoint directory (config.json + "
                      "*.safetensors).")
  flags.DEFINE_string("out", None, "rope_jax workdir; the checkpoint goes to <out>/checkpoints.")
  flags.DEFINE_enum("param_dtype", "float32", ["float32", "bfloat16"], "Storage dtype of the "
                    "imported params (bfloat16 halves the memory).")
  flags.DEFINE_bool("shard", False, "Lay the params out on the default mesh while importing.")
  flags.DEFINE_integer("step", 0, "Step number of the saved checkpoint.")


def import_run(src: str, out: str, *, param_dtype: str = "float32", shard: bool = False,
               step: int = 0) -> tuple[str, str, int]:
  """Imports ``src`` into the workdir ``out``; returns ``(family, checkpoint dir, params)``."""
  import json  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  from rope_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.checkpoint import rundir  # pylint: disable=g-import-not-at-top
  from rope_jax.config import base as config_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.model import transformer as model_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.weights import hf_checkpoint  # pylint: disable=g-import-not-at-top
  from rope_jax.weights import hf_config  # pylint: disable=g-import-not-at-top

  family, fields = hf_checkpoint.model_fields(src)
  config = config_lib.base_config()
  rope = fields.pop("rope")
  config.model.update(fields)
  config.model.rope.update(rope)
  config.model.param_dtype = param_dtype
  cfg = config_lib.model_config(config)
  mesh = rules = None
  if shard:
    mesh_cfg = sharding_lib.MeshConfig.from_dict(config_lib.to_dict(config.mesh))
    mesh, rules = sharding_lib.make_mesh(mesh_cfg), mesh_cfg.logical_axis_rules
  notes = hf_config.caveats(hf_checkpoint.read_config(src))
  for note in notes:
    logging.warning("%s", note)
  params = hf_checkpoint.import_params(src, cfg, mesh=mesh, rules=rules)
  total = model_lib.count_params(cfg)["total"]
  logging.info("Imported %s (%s, %d params).", src, family, total)
  metadata = {"import": {"src": src, "layout": "hf", "architecture": family,
                         "hf": hf_checkpoint.carried_fields(src), "caveats": notes}}
  directory = rundir.save_params(out, params, json.loads(config.to_json_best_effort()),
                                      step=step, metadata=metadata)
  return family, directory, total


def main(argv: list[str]) -> None:
  """The job: flags parsed by ``entrypoint.run_absl``, which maps errors to exit codes."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  fv = flags.FLAGS
  entrypoint.quiet_orbax_logs()
  if len(argv) > 1:
    raise errors.BadInputError(f"Unexpected arguments: {list(argv[1:])}")
  for name in ("src", "out"):
    if not fv[name].value:
      raise errors.BadInputError(f"--{name} is required.")
  family, directory, total = import_run(fv.src, fv.out, param_dtype=fv.param_dtype,
                                        shard=fv.shard, step=fv.step)
  print(f"Saved {family} ({total:,} params) to {directory}")


def cli(argv: Sequence[str] | None = None) -> None:
  """Entry point: defines the flags, then runs :func:`main` (``argv``: default sys.argv)."""
  entrypoint.run_absl(main, define_flags, argv)


if __name__ == "__main__":
  cli()
