r"""Passkey retrieval (needle in a haystack), trained at one length and tested to 4x.

    python -m experiments.passkey_heatmap --workdir=runs/passkey            # CPU, minutes
    python -m experiments.passkey_heatmap --workdir=gs://B/passkey --scale=pod

Each positional encoding (NoPE, RoPE, 0.75-RoPE, ALiBi; ``--encodings``) trains the same decoder
on the ``probe_passkey`` task (``rope_jax.data.long_probes``: a number hidden at a uniformly random
depth in a periodic filler, asked for at the end) at length L. Every run is then scored on the
fixed validation rows on a grid of context length (L, 2L, 3L, 4L) x needle depth (0 = right
after bos ... 1 = right before the question): whole-answer exact match (every digit) with its
Wilson 95% interval (``rope_jax.training.probe_eval.passkey_grid``).

Writes into ``--workdir``: ``passkey_heatmap.png`` (one panel per encoding: depth x length,
colour = exact match, the familiar needle-in-a-haystack picture), ``passkey.md`` /
``passkey.json`` (accuracy per length, pooled over depths, with intervals; every cell in the
json), and one run directory per encoding and seed.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before anything imports TensorFlow.
import time  # pylint: disable=g-import-not-at-top,wrong-import-position

from absl import app
from absl import flags
import numpy as np

from experiments import beyond_common as common

# Encodings: key -> config argument (``alibi``: ALiBi's logit bias on NoPE layers).
ENCODINGS = {
    "nope": "pe=nope",
    "rope": "pe=rope",
    "p075-rope": "pe=p_rope,p=0.75",
    "alibi": "pe=alibi",
}
LABELS = {"nope": "NoPE", "rope": "RoPE", "p075-rope": "0.75-RoPE", "alibi": "ALiBi"}
SCALES = {
    "cpu": common.Scale(
        "cpu", "configs/tiny.py",
        {**common.MICRO_MODEL, "model.vocab_size": 256, "data.task": "probe_passkey",
         "data.long_probe.passkey_digits": 3, "train.seq_len": 32, "train.global_batch_size": 32,
         "train.num_steps": 400, "train.learning_rate": 1e-2, "train.warmup_steps": 40,
         "train.log_every_steps": 100, "eval.num_batches": 0,
         "checkpoint.save_every_steps": 1000},
        num_examples=24, eval_batches=0),
    "pod": common.Scale(
        "pod", "configs/small_100m.py",
        {"data.task": "probe_passkey", "train.seq_len": 2048, "train.global_batch_size": 64,
         "train.num_steps": 5000, "eval.num_batches": 0},
        num_examples=200, eval_batches=0),
}

_WORKDIR = flags.DEFINE_string("workdir", "runs/passkey", "Root of the runs and the outputs.")
_SCALE = flags.DEFINE_enum("scale", "cpu", list(SCALES), "Experiment size.")
_ENCODINGS = flags.DEFINE_list("encodings", list(ENCODINGS), f"Subset of {list(ENCODINGS)}.")
_SEEDS = flags.DEFINE_integer("seeds", 1, "Training seeds per encoding (cells pool them).")
_DEPTHS = flags.DEFINE_list("depths", ["0", "0.25", "0.5", "0.75", "1"], "Needle depths.")
_MULTIPLIERS = flags.DEFINE_list("length_multipliers", ["1", "2", "3", "4"],
                                 "Context lengths as multiples of the training length.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", None, "Rows per cell (default: scale's).")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "KEY=VALUE for every run, e.g. "
                                       "train.num_steps=300.")


def heatmap(results: dict[str, list[dict]], lengths: list[int], depths: list[float],
            path: str, title: str) -> None:
  """One panel per encoding: rows depth (top = 0), columns length, colour = exact match."""
  plt = common.pyplot()
  names = list(results)
  fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names) + 1.2, 3.4), squeeze=False)
  image = None
  for ax, name in zip(axes[0], names):
    grid = np.zeros((len(depths), len(lengths)))
    for cell in results[name]:
      grid[depths.index(cell["depth"]), lengths.index(cell["seq_len"])] = cell["accuracy"]
    image = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
      ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{100 * d:.0f}%" for d in depths])
    ax.set_xlabel("context length (tokens)")
    ax.set_title(LABELS.get(name, name))
  axes[0][0].set_ylabel("needle depth")
  fig.colorbar(image, ax=axes[0].tolist(), label="exact match")
  common.save_figure(fig, path, title)


def pooled(cells: list[dict], seq_len: int) -> dict[str, float]:
  """Exact match at one length pooled over depths (and seeds), with its Wilson interval."""
  from rope_jax.data import scoring  # pylint: disable=g-import-not-at-top
  k = sum(c["correct"] for c in cells if c["seq_len"] == seq_len)
  n = sum(c["total"] for c in cells if c["seq_len"] == seq_len)
  lo, hi = scoring.wilson_interval(k, n)
  return {"correct": k, "total": n, "accuracy": k / n, "lo": lo, "hi": hi}


def main(argv: list[str]) -> None:
  scale, overrides = common.begin(argv, SCALES, _SCALE.value, _OVERRIDES.value)
  from rope_jax.checkpoint import rundir  # pylint: disable=g-import-not-at-top
  from rope_jax.training import probe_eval  # pylint: disable=g-import-not-at-top
  bad = [e for e in _ENCODINGS.value if e not in ENCODINGS]
  if bad:
    raise app.UsageError(f"Unknown encoding(s) {bad}; known: {list(ENCODINGS)}.")
  depths = [float(d) for d in _DEPTHS.value]
  num_examples = _NUM_EXAMPLES.value or scale.num_examples
  root = _WORKDIR.value
  t0 = time.perf_counter()
  train_len = None
  results: dict[str, list[dict]] = {}
  for name in _ENCODINGS.value:
    results[name] = []
    for seed in range(_SEEDS.value):
      config = common.load(f"{scale.config_file}:{ENCODINGS[name]}", scale.overrides,
                           {"train.seed": seed}, overrides)
      workdir = os.path.join(root, name, f"seed{seed}")
      common.train(config, workdir, f"{LABELS[name]} seed {seed}")
      train_len = config.train.seq_len
      lengths = [train_len * int(m) for m in _MULTIPLIERS.value]
      model, run_config, _ = rundir.load_model(workdir)
      cells = probe_eval.passkey_grid(model, run_config.data, lengths=lengths, depths=depths,
                                      num_examples=num_examples)
      results[name] += [{**c, "seed": seed} for c in cells]
  lengths = [train_len * int(m) for m in _MULTIPLIERS.value]

  # Pool seeds per cell for the picture; the json keeps every (seed, cell).
  merged = {}
  for name, cells in results.items():
    merged[name] = []
    for n in lengths:
      for d in depths:
        same = [c for c in cells if c["seq_len"] == n and c["depth"] == d]
        k, total = sum(c["correct"] for c in same), sum(c["total"] for c in same)
        merged[name].append({"seq_len": n, "depth": d, "accuracy": k / total})
  digits = config.data.long_probe.passkey_digits
  title = (f"Passkey retrieval ({digits} digits), trained at L={train_len}, {_SEEDS.value} "
           f"seed(s), {num_examples} rows per cell per seed")
  os.makedirs(root, exist_ok=True)
  heatmap(merged, lengths, depths, os.path.join(root, "passkey_heatmap.png"), title)
  header = ["encoding"] + [f"L={n}" + (" (train)" if n == train_len else "") for n in lengths]
  rows, payload = [], {"train_len": train_len, "depths": depths, "lengths": lengths,
                       "num_examples": num_examples, "seeds": _SEEDS.value, "scale": scale.name,
                       "runs": {}}
  for name, cells in results.items():
    per_len = {n: pooled(cells, n) for n in lengths}
    rows.append([LABELS[name]] + [common.pct(per_len[n]) for n in lengths])
    payload["runs"][name] = {"config": ENCODINGS[name], "cells": cells,
                             "pooled": {str(n): per_len[n] for n in lengths}}
  table = common.write_table(root, "passkey", header, rows, payload)
  print(f"\n{title}. Whole-answer exact match pooled over depths {depths}, with Wilson 95% "
        f"intervals:\n\n{table}")
  print(f"Heatmap: {os.path.join(root, 'passkey_heatmap.png')}; "
        f"total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
  app.run(main)
