r"""Samples continuations from a rope_jax checkpoint (imported Gemma weights or a trained run).

    python -m rope_jax.sample --workdir=/runs/gemma7b --vocab=/ckpts/gemma/tokenizer.model \
        --prompt="The capital of France is" --max_new_tokens=16
    python -m rope_jax.sample --workdir=/tmp/tiny --prompt="def " --temperature=0.8 --top_k=40

The model config comes from the checkpoint. The vocabulary is ``--vocab`` (a SentencePiece
model with Gemma's special ids: pad 0, eos 1, bos 2), else the run's ``data.vocab_path``, else
the shipped offline vocabulary; ``--vocab=bytes`` uses UTF-8 bytes as token ids. Several
``--prompt`` flags are sampled as one left-padded batch.
"""

from __future__ import annotations

from rope_jax import entrypoint


def define_flags() -> None:
  """The CLI's flags (called from :func:`cli` only, so importing this module defines none)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest intact one).")
  flags.DEFINE_multi_string("prompt", None, "Prompt text (repeat for a batch).")
  flags.DEFINE_string("vocab", "", "SentencePiece model path, or 'bytes'; default: the run's "
                      "data.vocab_path, else the shipped offline vocabulary.")
  flags.DEFINE_integer("max_new_tokens", 32, "Tokens to generate per prompt.")
  flags.DEFINE_float("temperature", 0.0, "0 = greedy.")
  flags.DEFINE_integer("top_k", 0, "Sample among the k most likely tokens (0 = all).")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_bool("add_bos", True, "Prepend BOS (id 2) to each prompt, as Gemma expects.")
  flags.mark_flags_as_required(["workdir", "prompt"])


def main(argv: list[str]) -> None:
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  from rope_jax.model import generate as generate_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.data import text  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from rope_jax.checkpoint import rundir  # pylint: disable=g-import-not-at-top

  restored = rundir.load(FLAGS.workdir, FLAGS.step, device=jax.local_devices()[0],
                         attention_impl=None)  # The run's own attention kernel.
  step, model, metadata = restored.step, restored.model, restored.metadata
  tokenizer = text.load_tokenizer(FLAGS.vocab, metadata.get("config"))
  prompts = text.encode_prompts(tokenizer, FLAGS.prompt, add_bos=FLAGS.add_bos,
                                vocab_size=model.cfg.vocab_size)
  tokens, mask = generate_lib.pad_prompts(prompts, side="left", pad_id=text.PAD_ID)
  out = generate_lib.generate(model, tokens, mask, max_new_tokens=FLAGS.max_new_tokens,
                              temperature=FLAGS.temperature, top_k=FLAGS.top_k,
                              eos_id=text.EOS_ID, pad_id=text.PAD_ID, rng=FLAGS.seed)
  print(f"# {FLAGS.workdir} step {step}")
  for prompt, row, n in zip(FLAGS.prompt, out.tokens, out.lengths):
    ids = [int(t) for t in row[:n] if t != text.EOS_ID]
    print(f"{prompt}\u2502{tokenizer.decode(ids)}")


def cli(argv: list[str] | None = None) -> None:
  entrypoint.run_absl(main, define_flags, argv)


if __name__ == "__main__":
  cli()
