r"""Imports official Gemma 1 weights into a rope_jax checkpoint.

    python -m rope_jax.import_gemma --layout=hf --src=/ckpts/gemma-7b \
        --config=configs/gemma_7b.py --config.model.vocab_size=256000 --out=/runs/gemma7b
    python -m rope_jax.import_gemma --layout=flax --src=/ckpts/gemma_7b/7b \
        --config=configs/gemma_7b.py --out=/runs/gemma7b

``--src`` is a Hugging Face checkpoint directory (``*.safetensors`` + ``config.json``, e.g.
``google/gemma-7b``) or the gemma library's Orbax params directory (Kaggle ``gemma/flax``).
Without ``--config`` the sizes are read from the checkpoint (``config.json`` or the tensor
shapes) on top of ``config_lib.base_config()``. Hugging Face's Gemma vocabulary has 256,000
rows, the gemma library's 256,128 (as ``configs/gemma_*.py``): set
``--config.model.vocab_size=256000`` or pass ``--pad_vocab`` to zero-pad.
``--config.model.param_dtype=bfloat16`` halves the memory (the official weights are bf16).

The result is ``<out>/checkpoints/<step>/`` with ``{"params": ...}`` and the config in the
metadata, restored like any trained run (``rope_jax.checkpoint.rundir.load``, the
analysis scripts, ``python -m rope_jax.sample``). With ``--shard`` the params are laid out on
the config's mesh while importing (a TPU host importing 7B with ``--config.mesh.fsdp=-1``).
"""

from __future__ import annotations

import json
import time

from rope_jax import entrypoint


def define_flags() -> None:
  """The CLI's flags (called from :func:`cli` only, so importing this module defines none)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_enum("layout", "auto", ["auto", "hf", "flax"], "Checkpoint layout of --src.")
  flags.DEFINE_string("src", None, "Checkpoint to import (directory or .safetensors file).")
  flags.DEFINE_string("out", None, "rope_jax workdir; the checkpoint goes to <out>/checkpoints.")
  config_flags.DEFINE_config_file("config", None, "rope_jax experiment config file[:args]; "
                                  "default: sizes read from the checkpoint.", lock_config=True)
  flags.DEFINE_bool("pad_vocab", False, "Zero-pad a smaller checkpoint vocabulary to "
                    "model.vocab_size (HF Gemma 256,000 -> 256,128).")
  flags.DEFINE_bool("shard", False, "Lay the params out on the config's mesh while importing.")
  flags.DEFINE_integer("step", 0, "Step number of the saved checkpoint.")
  flags.mark_flags_as_required(["src", "out"])


def main(argv: list[str]) -> None:
  del argv
  import os  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  from rope_jax import errors  # pylint: disable=g-import-not-at-top
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if "://" not in FLAGS.src and not os.path.exists(FLAGS.src):
    raise errors.BadInputError(f"--src={FLAGS.src!r} does not exist; give a Hugging Face "
                               "checkpoint directory (*.safetensors + config.json) or the gemma "
                               "library's Orbax params directory.")
  from rope_jax.config import base as config_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.model import transformer as model_lib  # pylint: disable=g-import-not-at-top
  from rope_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.checkpoint import rundir  # pylint: disable=g-import-not-at-top
  from rope_jax.weights import gemma  # pylint: disable=g-import-not-at-top

  config = entrypoint.config_flag(FLAGS)
  if config is None:
    fields = gemma.infer_model_fields(FLAGS.src, FLAGS.layout)
    config = config_lib.base_config()
    rope = fields.pop("rope", {})
    config.model.update(fields)
    config.model.rope.update(rope)
    logging.info("Model sizes from the checkpoint: %s", fields)
  cfg = config_lib.model_config(config)
  mesh = rules = None
  if FLAGS.shard:
    mesh_cfg = sharding_lib.MeshConfig.from_dict(config_lib.to_dict(config.mesh))
    mesh, rules = sharding_lib.make_mesh(mesh_cfg), mesh_cfg.logical_axis_rules
  layout = gemma.detect_layout(FLAGS.src) if FLAGS.layout == "auto" else FLAGS.layout
  start = time.time()
  params = gemma.import_params(FLAGS.src, cfg, layout=layout, mesh=mesh, rules=rules,
                               pad_vocab=FLAGS.pad_vocab)
  counts = model_lib.count_params(cfg)
  logging.info("Imported %s (%s layout, %.2fB params) in %.1f s.", FLAGS.src, layout,
               counts["total"] / 1e9, time.time() - start)
  metadata = {"import": {"src": FLAGS.src, "layout": layout, "pad_vocab": FLAGS.pad_vocab}}
  directory = rundir.save_params(FLAGS.out, params, json.loads(config.to_json_best_effort()),
                                 step=FLAGS.step, metadata=metadata)
  logging.info("Saved step %d to %s.", FLAGS.step, directory)
  print(f"Saved {cfg.num_layers}-layer Gemma ({counts['total']:,} params) to {directory}")


def cli(argv: list[str] | None = None) -> None:
  entrypoint.run_absl(main, define_flags, argv)


if __name__ == "__main__":
  cli()
