r"""Exports a rope_jax run as a Hugging Face transformers checkpoint.

    python -m rope_jax.export_hf --workdir=/runs/tiny_rope --out=/tmp/hf
    python -c "import transformers as t; t.AutoModelForCausalLM.from_pretrained('/tmp/hf')"

Writes ``model.safetensors`` (above ``--max_shard_mb``: ``model-0000i-of-0000n.safetensors`` and
``model.safetensors.index.json``), ``config.json`` (``GemmaForCausalLM`` for the house's Gemma
decoder, ``LlamaForCausalLM`` for the Llama choices), RoPE in both schemas (``rope_parameters`` and
``rope_theta`` / ``rope_scaling``; p-RoPE as the ``"proportional"`` rope type with its
``partial_rotary_factor``), ``generation_config.json`` and, when the run's data used a SentencePiece
vocabulary, ``tokenizer.model`` with its transformers configs (``rope_jax.weights.hf_checkpoint``).
A run transformers cannot reproduce exactly (reversed or partial rotary, interleaved pairs,
per-layer encodings, another decoder) is refused, naming the field, before anything is written.

Exit codes are ``rope_jax.errors``'s: 2 bad input or a refused encoding, 5 no restorable
checkpoint, 4 I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from rope_jax import entrypoint
from rope_jax import errors


def define_flags() -> None:
  """Defines the CLI's absl flags (called from :func:`cli` only: importing defines none)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest intact one).")
  flags.DEFINE_string("out", None, "Output directory (new or empty).")
  flags.DEFINE_float("max_shard_mb", 5120.0, "Shard model.safetensors above this many MiB.")
  flags.DEFINE_integer("max_position_embeddings", None, "config.json max_position_embeddings "
                       "(default: the largest evaluated length, eval multipliers x seq_len).")
  flags.DEFINE_string("vocab_path", "", "SentencePiece model to ship as tokenizer.model "
                      "(default: the run's data vocabulary; 'none' ships none).")


def vocab_file(config, vocab_size: int, override: str = "") -> str | None:
  """The SentencePiece file to ship: ``override``, else the run's data vocabulary when the model
  can hold it (synthetic-data runs, and runs whose vocabulary outgrows the model, ship none)."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from rope_jax.data import text  # pylint: disable=g-import-not-at-top
  from rope_jax.weights import hf_checkpoint  # pylint: disable=g-import-not-at-top
  if override == "none":
    return None
  if override:
    return override
  if config.get("train", {}).get("data_source") == "synthetic":
    return None
  try:
    path, _ = text.vocab_path(config.get("data"))
    hf_checkpoint.check_vocab(path, vocab_size)
  except (ValueError, OSError) as e:
    logging.warning("No tokenizer shipped: %s", e)
    return None
  return path


def export_run(workdir: str, out: str, *, step: int | None = None, max_shard_mb: float = 5120.0,
               max_position_embeddings: int | None = None, vocab_path: str = "") -> list[str]:
  """Exports the run; returns the files written."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from rope_jax.checkpoint import rundir  # pylint: disable=g-import-not-at-top
  from rope_jax.weights import hf_checkpoint  # pylint: disable=g-import-not-at-top
  from rope_jax.weights import hf_config  # pylint: disable=g-import-not-at-top

  _, cfg, _ = rundir.read_config(workdir, step)
  hf_config.hf_config(cfg, max_position_embeddings=1)  # Refuse before reading any array.
  restored = rundir.load(workdir, step)
  config = restored.config.to_dict()
  carried = dict(restored.metadata.get("import", {}).get("hf", {}))  # An imported run's.
  if restored.imported and not vocab_path:
    vocab_path = "none"  # The data section is the house default, not the weights' vocabulary.
  max_position_embeddings = max_position_embeddings or carried.pop("max_position_embeddings", None)
  if max_position_embeddings is None:
    train, ev = config.get("train", {}), config.get("eval", {})
    max_position_embeddings = int(train.get("seq_len", 2048)) * max(
        [1, *ev.get("length_multipliers", [1])])
  params = nnx.to_pure_dict(nnx.state(restored.model, nnx.Param))
  return hf_checkpoint.export(
      out, params, restored.model_config, max_position_embeddings=max_position_embeddings,
      vocab_file=vocab_file(config, restored.model_config.vocab_size, vocab_path),
      max_shard_bytes=int(max_shard_mb * 1024**2),
      special_ids=carried if restored.imported else None)


def main(argv: list[str]) -> None:
  """The job: flags parsed by ``entrypoint.run_absl``, which maps errors to exit codes."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  fv = flags.FLAGS
  entrypoint.quiet_orbax_logs()
  if len(argv) > 1:
    raise errors.BadInputError(f"Unexpected arguments: {list(argv[1:])}")
  for name in ("workdir", "out"):
    if not fv[name].value:
      raise errors.BadInputError(f"--{name} is required.")
  if fv.max_shard_mb <= 0:
    raise errors.BadInputError(f"--max_shard_mb must be positive, got {fv.max_shard_mb}.")
  files = export_run(fv.workdir, fv.out, step=fv.step, max_shard_mb=fv.max_shard_mb,
                     max_position_embeddings=fv.max_position_embeddings,
                     vocab_path=fv.vocab_path)
  print(f"Wrote {len(files)} files to {fv.out}: {', '.join(files)}")


def cli(argv: Sequence[str] | None = None) -> None:
  """Entry point: defines the flags, then runs :func:`main` (``argv``: default sys.argv)."""
  entrypoint.run_absl(main, define_flags, argv)


if __name__ == "__main__":
  cli()
