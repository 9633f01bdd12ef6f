r"""The paper's Table 2 grid at CPU scale: the README's first command.

    python -m experiments.table2_cpu --workdir=runs/table2_cpu

The seven positional encodings of Table 2 (NoPE, RoPE θ=10k, RoPE θ=500k, 0.75-RoPE reversed,
0.75 partial rotary, 0.25-RoPE, 0.75-RoPE; ``rope_jax.sweeps.grid``, the same definition the TPU
launcher uses) are each trained from scratch on the tiny Gemma-shaped config, offline, on a
mixture of the CPython-docs corpus and the synthetic probes. Each run is
``python -m rope_jax.train`` in its own process (exactly what a TPU worker runs), resumable: a
re-run skips finished runs and resumes interrupted ones.

Then every run is restored onto the host CPU and evaluated on the same fixed validation sets:
corpus perplexity at 1x, 2x and 4x the training length (length generalisation), and the answer
accuracy of the positional probes (copy, reverse) and the semantic probe (associative recall)
at 1x and 2x. The table is printed with the paper's Gemma 2B numbers beside each row, and
written to ``<workdir>/results.md`` / ``results.json``. Frequency-usage and positional-head
figures are written per run and side by side under ``<workdir>/figures``.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before anything imports TensorFlow.
import subprocess  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys
import time

from absl import app
from absl import flags
from absl import logging

from rope_jax.sweeps import grid

_WORKDIR = flags.DEFINE_string("workdir", "runs/table2_cpu", "Root of the runs (one per row).")
_ROWS = flags.DEFINE_list("rows", None, "Subset of row keys (default: all seven), e.g. "
                          "nope,rope-10k,p075-rope.")
_STEPS = flags.DEFINE_integer("steps", None, "Override the number of training steps.")
_EVAL_BATCHES = flags.DEFINE_integer("eval_batches", 4, "Validation batches per measurement.")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "Extra --config.KEY=VALUE for every run "
                                       "(without the leading --config.).")

DATASET = "mixture"


def _train(run: grid.Run, workdir: str, overrides: list[str]) -> float:
  """Trains one cell in a subprocess (resuming if interrupted); returns seconds spent."""
  cmd = [sys.executable, "-m", "rope_jax.train", *run.train_flags(workdir),
         *(f"--config.{o}" for o in overrides)]
  os.makedirs(workdir, exist_ok=True)
  log_path = os.path.join(workdir, "train.log")
  start = time.perf_counter()
  print(f"  $ {' '.join(cmd[1:])}", flush=True)
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
             TF_CPP_MIN_LOG_LEVEL="2")
  with open(log_path, "a") as log:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    for line in proc.stdout:
      log.write(line)
      if "] step " in line or "] eval step" in line or "Resumed" in line:
        print(f"  [{run.row.label}] {line.split('] ', 1)[-1].rstrip()}", flush=True)
    if proc.wait():
      raise RuntimeError(f"Training {run.name} failed (exit {proc.returncode}); see {log_path}.")
  return time.perf_counter() - start


def _finished(workdir: str, num_steps: int) -> bool:
  from rope_jax.checkpoint import rundir  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(rundir.checkpoint_dir(workdir)):
    return False
  steps = rundir.available_steps(workdir)
  return bool(steps) and steps[-1] >= num_steps


def _evaluate(workdir: str, eval_batches: int) -> dict[str, float]:
  """Perplexity at 1x/2x/4x and probe accuracy at 1x/2x of a restored run."""
  from rope_jax.training import evaluate  # pylint: disable=g-import-not-at-top
  from rope_jax.checkpoint import rundir as restore  # pylint: disable=g-import-not-at-top
  model, config, step = restore.load_model(workdir)
  seq_len = config.train.seq_len
  batch = config.train.global_batch_size
  out: dict[str, float] = {"step": step}
  for mult in (1, 2, 4):
    r = evaluate.evaluate(model, config.data, task="offline", seq_len=seq_len * mult,
                          batch_size=batch, num_batches=eval_batches)
    out[f"ppl_{mult}x"] = r["perplexity"]
  for probe in ("copy", "reverse", "recall"):
    for mult in (1, 2):
      r = evaluate.evaluate(model, config.data, task=f"probe_{probe}", seq_len=seq_len * mult,
                            batch_size=batch, num_batches=eval_batches)
      out[f"{probe}_{mult}x"] = r["accuracy"]
  return out


def _table(runs: list[grid.Run], results: dict[str, dict[str, float]], seq_len: int) -> str:
  header = ["Table 2 row", "steps", f"ppl L={seq_len}", f"ppl {2 * seq_len}",
            f"ppl {4 * seq_len}", "copy acc", "copy acc 2L", "reverse acc", "reverse acc 2L",
            "recall acc", "recall acc 2L", "paper Wiki", "paper FlanV2"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for run in runs:
    r = results[run.name]
    cells = [run.row.label, f"{int(r['step'])}/{run.num_steps}"]
    cells += [f"{r[f'ppl_{m}x']:.2f}" for m in (1, 2, 4)]
    cells += [f"{100 * r[f'{p}_{m}x']:.1f}%" for p in ("copy", "reverse", "recall") for m in (1, 2)]
    cells += [f"{run.row.paper['wiki']:.4f}", f"{run.row.paper['flan_v2']:.4f}"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.ERROR)  # Orbax logs every file it reads; progress is printed.
  root = os.path.abspath(_WORKDIR.value)
  runs = grid.expand("cpu", rows=_ROWS.value)
  overrides = list(_OVERRIDES.value)
  if _STEPS.value is not None:
    overrides.append(f"train.num_steps={_STEPS.value}")
    runs = [grid.dataclasses.replace(r, num_steps=_STEPS.value) for r in runs]
  t0 = time.perf_counter()
  for i, run in enumerate(runs):
    workdir = run.workdir(root)
    if _finished(workdir, run.num_steps):
      print(f"[{i + 1}/{len(runs)}] {run.row.label}: already trained in {workdir}", flush=True)
      continue
    print(f"[{i + 1}/{len(runs)}] training {run.row.label} ({run.config}) -> {workdir}",
          flush=True)
    secs = _train(run, workdir, overrides)
    print(f"[{i + 1}/{len(runs)}] {run.row.label} trained in {secs:.0f}s", flush=True)

  print("Evaluating every run on the same validation sets ...", flush=True)
  results = {}
  for run in runs:
    results[run.name] = _evaluate(run.workdir(root), _EVAL_BATCHES.value)
  from rope_jax.config import base as config_lib  # pylint: disable=g-import-not-at-top
  seq_len = config_lib.load_config(runs[0].config).train.seq_len

  figures_dir = os.path.join(root, "figures")
  from experiments import frequency_usage_compare  # pylint: disable=g-import-not-at-top
  figures = frequency_usage_compare.compare([r.workdir(root) for r in runs], figures_dir)

  table = _table(runs, results, seq_len)
  with open(os.path.join(root, "results.md"), "w") as f:
    f.write(table)
  with open(os.path.join(root, "results.json"), "w") as f:
    json.dump({r.name: {"label": r.row.label, "config": r.config, **results[r.name]}
               for r in runs}, f, indent=2)
  print()
  print("Table 2 at CPU scale (tiny Gemma-shaped model, offline corpus + probes; perplexity is "
        "per SentencePiece token of the held-out corpus, lower is better). The paper's Gemma 2B "
        "Wiki / FlanV2 perplexities (SPEC.md §2f) are beside each row; the scales differ, so "
        "compare orderings, not values.\n")
  print(table)
  print(f"Runs, checkpoints, metrics.jsonl and TensorBoard events: {root}/{DATASET}/<row>/")
  print(f"Figures: {figures_dir}/ ({len(figures)} files)")
  print(f"Total wall time: {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
  app.run(main)
