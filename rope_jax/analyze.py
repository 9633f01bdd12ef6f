r"""Analysis CLI: the paper's §4–5 measurements on a trained (or imported) run.

    python -m rope_jax.analyze --workdir=/runs/tiny_rope --analysis=frequency_usage --out=/tmp/fu
    python -m rope_jax.analyze --workdir=/runs/gemma7b --vocab_path=/ckpts/gemma/tokenizer.model \
        --analysis=frequency_usage,heads,patterns --layer=1 --head=5 --out=/tmp/gemma7b

The run's newest intact checkpoint (or ``--step``) is restored onto the host CPU, parameters only
(``rope_jax.checkpoint.rundir``), whatever mesh trained it. The prompts (``--prompts``, one per
line; default: ten Shakespeare quotes in ``rope_jax/analysis/prompts.txt``, as the paper's
Figs 3–4) are tokenized with the run's vocabulary (``rope_jax.data.text``; ``--vocab_path``
overrides, and imported weights need it), BOS first, and measured by
``rope_jax.analysis.measure``; ``rope_jax.analysis.report`` writes the files of each
``--analysis`` into ``--out``, one or more of: ``frequency_usage`` (Figs 3–4), ``heads``
(diagonal / previous-token heads, the paper's strict definition and the mean score),
``patterns`` (attention maps), ``cauchy_schwarz`` (Tables 3–5: per-frequency activation vs
its Cauchy–Schwarz bound for one head), ``head_types`` (BOS / sink and apostrophe /
punctuation heads, which frequency bands carry what), ``domains`` (Fig. 19: frequency usage on
the shipped Italian, Chinese, code, arithmetic and Shakespeare prompts).

    python -m rope_jax.analyze --workdir=/runs/tiny_rope --analysis=cauchy_schwarz,head_types \
        --layer=0 --head=2 --bands=0:4,4:16,16:32 --out=/tmp/heads
    python -m rope_jax.analyze --workdir=/runs/tiny_rope --analysis=domains --out=/tmp/fig19

Exit codes are ``rope_jax.errors``'s: 2 for bad input (flag, analysis name, index, prompts file,
vocabulary), 5 when the workdir holds no restorable checkpoint (or not ``--step``), 4 for an I/O
error; each with one line on stderr and no traceback.

This module only parses flags: the library is ``rope_jax.analysis`` (``measure``, ``report``).
"""

from __future__ import annotations

from collections.abc import Sequence

from rope_jax import entrypoint
from rope_jax import errors
from rope_jax.analysis import report


def define_flags() -> None:
  """Defines the CLI's absl flags (called from :func:`main` only: importing defines none)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if "analysis" in flags.FLAGS:
    return
  flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/ (rope_jax.train or "
                      "rope_jax.import_gemma).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest intact one).")
  flags.DEFINE_string("analysis", None, f"One or more of {', '.join(report.ANALYSES)}, "
                      "comma-separated.")
  flags.DEFINE_string("prompts", None, "A shipped prompt set by name (shakespeare, italian, "
                      "chinese, code, arithmetic) or a text file, one prompt per line ('#' lines "
                      "skipped); default: ten Shakespeare quotes.")
  flags.DEFINE_integer("layer", None, "Layer (0-indexed) of the per-head frequency-usage figure "
                       "(default: first and last), of the attention patterns (default 0) and of "
                       "cauchy_schwarz (default: the best diagonal head's).")
  flags.DEFINE_integer("head", None, "Head (0-indexed) of the attention patterns (default: all) "
                       "and of cauchy_schwarz (default: the best diagonal head).")
  flags.DEFINE_integer("prompt_index", 0, "Prompt (0-indexed) of the attention patterns.")
  flags.DEFINE_string("out", None, "Output directory (created).")
  flags.DEFINE_string("vocab_path", "", "SentencePiece model overriding the run's data.vocab_path "
                      "(needed for imported Gemma weights: Gemma's tokenizer.model).")
  flags.DEFINE_integer("batch_size", 16, "Prompts per forward pass.")
  flags.DEFINE_float("epsilon", 0.5, "heads, head_types: list heads whose strict score (min over "
                     "queries, the paper's definition) and, separately, whose mean score exceeds "
                     "1 - epsilon.")
  flags.DEFINE_integer("top_heads", 3, "heads: how many top heads of each kind to detail.")
  flags.DEFINE_bool("add_bos", True, "Prepend BOS to every prompt.")
  flags.DEFINE_string("bands", "4", "cauchy_schwarz, head_types, domains: frequency bands, a "
                      "number of equal bands or start:stop chunk ranges (e.g. 0:4,4:16,16:32).")
  flags.DEFINE_string("marker", "apostrophe", "head_types: the marker tokens of the marker head "
                      "(apostrophe or punctuation).")
  flags.DEFINE_string("domains", "all", "domains: the shipped prompt sets to compare "
                      "(comma-separated, or all), the first one the reference.")
  flags.DEFINE_bool("verify", True, "Check the restored arrays against their save-time "
                    "fingerprints.")


def _run(argv: Sequence[str]) -> None:
  """The job under absl: flags parsed; user errors -> one line and their exit code."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  flag_values = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {list(argv[1:])}")
  entrypoint.quiet_orbax_logs()
  for name in ("workdir", "analysis", "out"):
    if not flag_values[name].value:
      raise errors.BadInputError(f"--{name} is required.")
  paths = report.analyze(
      flag_values.workdir, flag_values.analysis, flag_values.out, step=flag_values.step,
      prompts=flag_values.prompts, layer=flag_values.layer, head=flag_values.head,
      prompt_index=flag_values.prompt_index, vocab_path=flag_values.vocab_path,
      batch_size=flag_values.batch_size, epsilon=flag_values.epsilon,
      top_heads_k=flag_values.top_heads, add_bos=flag_values.add_bos,
      verify=flag_values.verify, bands=flag_values.bands, marker=flag_values.marker,
      domains=flag_values.domains)
  print(f"Wrote {len(paths)} files to {flag_values.out}:")
  for path in paths:
    print(f"  {path}")


def main(argv: Sequence[str] | None = None) -> None:
  """Entry point: defines the flags, then runs the job under the shared runner (one-line errors,
  the exit-code table of rope_jax.errors; ``argv``: default sys.argv)."""
  entrypoint.run_absl(_run, define_flags, argv)


if __name__ == "__main__":
  main()
