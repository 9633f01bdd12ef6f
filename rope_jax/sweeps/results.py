r"""Collects the Table 2 results of finished (or running) runs and prints them as markdown.

    python -m rope_jax.results --root=gs://BUCKET/rope_jax/table2            # grid layout
    python -m rope_jax.results --root=/tmp/table2_cpu --scale=cpu
    python -m rope_jax.results --workdirs=gs://B/table2/wiki/nope,/tmp/other_run

Reads each run's ``metrics.jsonl`` (written by ``rope_jax.training.metrics``; local paths or ``gs://``
through ``etils.epath``): the validation perplexity of the latest eval record at 1×, 2× and 4×
the training length (``perplexity_len<L>``), and the highest step any record reached. With
``--root`` every cell of the grid (``rope_jax.sweeps.grid``) gets a row, found or not; ``--workdirs``
lists arbitrary runs (matched to a grid cell when the path ends in the cell's
``<dataset>/<row>``). Prints the Table 2 layout (ours beside the paper's) and a row per run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import posixpath
import re
import sys
from typing import Any, Sequence

from etils import epath

from rope_jax.sweeps import grid as grid_lib
from rope_jax.training import metrics as metrics_lib

_PPL_KEY = re.compile(r"^perplexity_len(\d+)$")
# Typical standard deviation of a language model's per-token loss (nats): the assumption behind
# resolvable_difference (ours, not a measurement of the paper's runs).
TOKEN_LOSS_SD = 2.5


def resolvable_difference(perplexity: float, num_tokens: int, *,
                          token_loss_sd: float = TOKEN_LOSS_SD, z: float = 1.96) -> float:
  """The smallest perplexity difference two runs' evaluations on ``num_tokens`` can resolve.

  Two mean losses over ``num_tokens`` tokens each (per-token sd ``token_loss_sd``, tokens
  treated as independent) differ by ``z · sd · sqrt(2 / N)`` nats at 95%; near ``perplexity``
  that is ``perplexity · z · sd · sqrt(2 / N)``. Pairing on the same tokens lowers it; token
  correlation raises it: an order of magnitude, not a test.
  """
  if num_tokens <= 0:
    raise ValueError(f"num_tokens must be positive, got {num_tokens}.")
  return perplexity * z * token_loss_sd * (2.0 / num_tokens) ** 0.5


def eval_tokens(run: grid_lib.Run) -> int:
  """Tokens one evaluation of a grid cell scores at the training length (its config)."""
  from rope_jax.config import base as config_lib  # pylint: disable=g-import-not-at-top
  cfg = config_lib.load_config(run.config)
  batch = cfg.eval.global_batch_size or cfg.train.global_batch_size
  return int(cfg.eval.num_batches * batch * cfg.train.seq_len)


@dataclasses.dataclass
class RunResult:
  """What ``metrics.jsonl`` says about one run.

  Attributes:
    name: the grid cell's name, or the workdir's basename off the grid.
    workdir: where it was read from.
    run: the grid cell (None off the grid).
    found: whether ``metrics.jsonl`` exists.
    steps: the highest step of any record (0 if none).
    eval_step: the step of the latest eval record (None if no eval yet).
    perplexity: ``{eval length: perplexity}`` at ``eval_step``.
  """

  name: str
  workdir: str
  run: grid_lib.Run | None = None
  found: bool = False
  steps: int = 0
  eval_step: int | None = None
  perplexity: dict[int, float] = dataclasses.field(default_factory=dict)

  @property
  def planned_steps(self) -> int | None:
    return self.run.num_steps if self.run is not None else None

  @property
  def finished(self) -> bool:
    return self.planned_steps is not None and self.steps >= self.planned_steps

  def perplexity_at(self, multiple: int) -> float | None:
    """Perplexity at ``multiple`` × the shortest eval length (1× = the training length)."""
    if not self.perplexity:
      return None
    base = min(self.perplexity)
    return self.perplexity.get(base * multiple)


def read_records(workdir: str) -> list[dict[str, Any]] | None:
  """The records of ``workdir/metrics.jsonl``; None if there is no such file.

  Lines that are not JSON objects (e.g. cut short by a kill) are skipped.
  """
  path = epath.Path(workdir) / metrics_lib.JSONL
  if not path.exists():
    return None
  out = []
  for line in path.read_text().splitlines():
    try:
      rec = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(rec, dict) and isinstance(rec.get("step"), (int, float)):
      out.append(rec)
  return out


def collect(workdir: str, *, name: str | None = None,
            run: grid_lib.Run | None = None) -> RunResult:
  """Summarises one run directory."""
  result = RunResult(name=name or posixpath.basename(workdir.rstrip("/")), workdir=workdir,
                     run=run)
  records = read_records(workdir)
  if records is None:
    return result
  result.found = True
  result.steps = int(max((r["step"] for r in records), default=0))
  evals = [r for r in records if r.get("split") == "eval"
           and any(_PPL_KEY.match(k) for k in r)]
  if evals:
    last = max(reversed(evals), key=lambda r: r["step"])  # Ties: the last written.
    result.eval_step = int(last["step"])
    result.perplexity = {int(m.group(1)): float(v) for k, v in last.items()
                         if (m := _PPL_KEY.match(k))}
  return result


def collect_root(root: str, scale: str = "paper") -> list[RunResult]:
  """Every cell of the grid at ``scale`` under ``root`` (grid layout ``root/<dataset>/<row>``)."""
  return [collect(run.workdir(root), name=run.name, run=run) for run in grid_lib.expand(scale)]


def match_run(workdir: str) -> grid_lib.Run | None:
  """The grid cell whose ``<dataset>/<row>`` suffix ends ``workdir`` (any scale), if any."""
  path = workdir.rstrip("/")
  for scale in grid_lib.SCALES:
    for run in grid_lib.expand(scale):
      if path == run.workdir_suffix or path.endswith("/" + run.workdir_suffix):
        return run
  return None


def collect_workdirs(workdirs: Sequence[str]) -> list[RunResult]:
  """The listed run directories, matched to grid cells where their paths allow."""
  out = []
  for wd in workdirs:
    run = match_run(wd)
    out.append(collect(wd, name=run.name if run else None, run=run))
  return out


def _fmt(x: float | None, digits: int = 4) -> str:
  return "—" if x is None else f"{x:.{digits}f}"


def _steps(r: RunResult) -> str:
  if not r.found:
    return "not started"
  planned = r.planned_steps
  return f"{r.steps:,}" if planned is None else f"{r.steps:,} / {planned:,}"


def table2_markdown(results: Sequence[RunResult]) -> str:
  """Table 2's layout: a row per encoding, ours beside the paper's per dataset.

  A value from a run that has not reached its planned steps is marked ``*``.
  """
  on_grid = [r for r in results if r.run is not None]
  if not on_grid:
    return ""
  datasets = list(dict.fromkeys(r.run.dataset for r in on_grid))
  rows = list(dict.fromkeys(r.run.row.key for r in on_grid))
  by_cell = {(r.run.row.key, r.run.dataset): r for r in on_grid}
  row_of = {r.run.row.key: r.run.row for r in on_grid}
  header = ["Row"]
  for d in datasets:
    label = grid_lib.DATASET_LABELS.get(d, d)
    header.append(f"{label} (ours)")
    if any(d in row_of[k].paper for k in rows):
      header.append(f"{label} (paper)")
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for key in rows:
    row = row_of[key]
    cells = [row.label]
    for d in datasets:
      r = by_cell.get((key, d))
      ours = r.perplexity_at(1) if r is not None else None
      cell = _fmt(ours)
      if ours is not None and not r.finished:
        cell += "*"
      cells.append(cell)
      if any(d in row_of[k].paper for k in rows):
        cells.append(_fmt(row.paper.get(d)))
    lines.append("| " + " | ".join(cells) + " |")
  if any(r.perplexity and not r.finished for r in on_grid):
    lines.append("")
    lines.append("\\* run not finished: the latest evaluation before its planned steps.")
  return "\n".join(lines)


def runs_markdown(results: Sequence[RunResult]) -> str:
  """A row per run: validation perplexity at 1×/2×/4× the training length, the paper's number
  and the difference, the eval step, and steps reached / planned."""
  header = ["Run", "Dataset", "Config", "Eval L", "ppl 1×", "Paper", "Δ vs paper", "ppl 2×",
            "ppl 4×", "Eval step", "Steps (reached / planned)"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in results:
    ppl1 = r.perplexity_at(1)
    paper = r.run.paper_perplexity if r.run is not None else None
    delta = f"{ppl1 - paper:+.4f}" if ppl1 is not None and paper is not None else "—"
    cells = [
        r.name,
        r.run.dataset if r.run is not None else "—",
        f"`{r.run.config}`" if r.run is not None else f"`{r.workdir}`",
        str(min(r.perplexity)) if r.perplexity else "—",
        _fmt(ppl1), _fmt(paper), delta, _fmt(r.perplexity_at(2)), _fmt(r.perplexity_at(4)),
        "—" if r.eval_step is None else f"{r.eval_step:,}",
        _steps(r),
    ]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def resolution_note(results: Sequence[RunResult]) -> str:
  """One line: the smallest perplexity difference the grid's evaluation resolves (or "")."""
  on_grid = [r for r in results if r.run is not None and r.run.paper_perplexity is not None]
  if not on_grid:
    return ""
  n = eval_tokens(on_grid[0].run)
  ppl = min(r.run.paper_perplexity for r in on_grid)
  return (f"Evaluation: {n:,} tokens per run and length; near ppl {ppl:.2f} two runs must differ "
          f"by about {resolvable_difference(ppl, n):.3f} ppl to be told apart (95%, per-token "
          f"loss sd {TOKEN_LOSS_SD} nats assumed). The paper's RoPE vs 0.75-RoPE gaps are 0.021 "
          "(Wiki) and 0.0007 (FlanV2): raise eval.num_batches to resolve them.")


def report(results: Sequence[RunResult]) -> str:
  """Both tables, as printed by the CLI."""
  parts = []
  t2 = table2_markdown(results)
  if t2:
    parts += ["## Table 2: validation perplexity at the training length (lower is better)", "",
              t2, ""]
    note = resolution_note(results)
    if note:
      parts += [note, ""]
  parts += ["## Runs", "", runs_markdown(results)]
  return "\n".join(parts) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  from rope_jax import entrypoint  # pylint: disable=g-import-not-at-top
  parser = entrypoint.ArgumentParser(prog="python -m rope_jax.results", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  src = parser.add_mutually_exclusive_group(required=True)
  src.add_argument("--root", help="Grid root (local or gs://): runs at ROOT/<dataset>/<row>.")
  src.add_argument("--workdirs", help="Comma-separated run directories (local or gs://).")
  parser.add_argument("--scale", default="paper", choices=sorted(grid_lib.SCALES),
                      help="Grid scale for --root (default: paper).")
  parser.add_argument("--out", default=None, help="Also write the markdown to this file.")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  if args.root:
    results = collect_root(args.root, args.scale)
  else:
    results = collect_workdirs([w.strip() for w in args.workdirs.split(",") if w.strip()])
  text = report(results)
  sys.stdout.write(text)
  if args.out:
    epath.Path(args.out).write_text(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
