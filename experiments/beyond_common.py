"""What the "beyond the paper" experiment scripts share: scales, training runs, tables.

Each script (``passkey_heatmap``, ``p_sweep``, ``continued_pretraining``) trains a few small
runs with the library's training loop, in this process, each in its own run directory under
``--workdir`` (a re-run skips finished runs and resumes interrupted ones), then restores them and
measures. A :class:`Scale` is a config file plus overrides: ``cpu`` (the default, minutes on a
laptop) or ``pod`` (the same experiment at a size worth a TPU pod); ``--override KEY=VALUE``
changes any config key of every run.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from rope_jax.config import base as config_lib
from rope_jax.training import loop


@dataclasses.dataclass(frozen=True)
class Scale:
  """A config file and the overrides (``section.key -> value``) that size an experiment."""

  name: str
  config_file: str
  overrides: Mapping[str, Any]
  num_examples: int  # probe rows per measured cell (Wilson intervals ~ 1/sqrt of it)
  eval_batches: int  # validation batches of the corpus per perplexity


# A 2-layer, 64-wide decoder: an induction-style lookup is within reach in ~100 steps on a CPU.
MICRO_MODEL = {"model.num_layers": 2, "model.embed_dim": 64, "model.num_heads": 4,
               "model.num_kv_heads": 1, "model.head_dim": 16, "model.mlp_dim": 256}
# The corpus + long-probe mixture of the p sweep and the continued pre-training comparison.
MIXTURE_SCALES = {
    "cpu": Scale(
        "cpu", "configs/tiny.py",
        {**MICRO_MODEL, "data.task": "mixture",
         "data.mixture": "offline:8,probe_passkey:4,probe_flipflop:4",
         "data.long_probe.passkey_digits": 3, "train.seq_len": 32,
         "train.global_batch_size": 16, "train.num_steps": 100, "train.learning_rate": 1e-2,
         "train.warmup_steps": 10, "train.log_every_steps": 10, "eval.num_batches": 0,
         "checkpoint.save_every_steps": 1000},
        num_examples=64, eval_batches=4),
    "pod": Scale(
        "pod", "configs/small_100m.py",
        {"data.task": "mixture", "data.mixture": "offline:16,probe_passkey:8,probe_flipflop:8",
         "train.seq_len": 1024, "train.global_batch_size": 32, "train.num_steps": 10_000,
         "eval.num_batches": 0},
        num_examples=500, eval_batches=32),
}
# Probes measured on the mixture runs: name -> (task, data.long_probe settings at evaluation).
PROBES = {
    "passkey": ("probe_passkey", {"passkey_depth": -1.0}),
    "flipflop_sparse": ("probe_flipflop", {"flipflop_p_ignore": 0.98}),
}


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
  """``["train.num_steps=50", "data.task=offline"]`` -> ``{"train.num_steps": 50, ...}``."""
  out = {}
  for item in items:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
      raise ValueError(f"Override {item!r} is not KEY=VALUE (e.g. train.num_steps=50).")
    try:
      value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
      value = text.strip()
    out[key.strip().removeprefix("config.")] = value
  return out


def set_value(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  """Sets ``config.<key>`` (dotted path) to ``value``; an unknown key is a ValueError."""
  *path, last = key.split(".")
  section = config
  for part in path:
    if part not in section:
      raise ValueError(f"Unknown config key {key!r} (no section {part!r}).")
    section = section[part]
  if last not in section:
    raise ValueError(f"Unknown config key {key!r}; {'.'.join(path) or 'config'} has "
                     f"{sorted(section.keys())}.")
  if isinstance(value, list):
    value = tuple(value)
  section[last] = value


def load(spec: str, *overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """``load_config(spec)`` with each mapping of overrides applied in order."""
  config = config_lib.load_config(spec)
  for mapping in overrides:
    for key, value in mapping.items():
      set_value(config, key, value)
  config_lib.validate(config)
  return config


def finished(workdir: str, num_steps: int) -> bool:
  """Whether ``workdir`` holds a checkpoint at ``num_steps`` or later."""
  from rope_jax.checkpoint import rundir  # pylint: disable=g-import-not-at-top
  try:
    steps = rundir.available_steps(workdir)
  except FileNotFoundError:
    return False
  return bool(steps) and steps[-1] >= num_steps


def train(config: ml_collections.ConfigDict, workdir: str, label: str) -> float:
  """Trains ``config`` in ``workdir`` with the library loop (resuming); returns seconds spent."""
  if finished(workdir, config.train.num_steps):
    print(f"  {label}: already trained in {workdir}", flush=True)
    return 0.0
  os.makedirs(workdir, exist_ok=True)
  print(f"  {label}: training {config.train.num_steps} steps -> {workdir}", flush=True)
  start = time.perf_counter()
  loop.run(config, workdir)
  seconds = time.perf_counter() - start
  print(f"  {label}: trained in {seconds:.0f}s", flush=True)
  return seconds


def measure(workdir: str, scale: Scale) -> dict[str, dict]:
  """Perplexity at L and 4L and the probes' exact match at L and 4L of one run."""
  from rope_jax.checkpoint import rundir  # pylint: disable=g-import-not-at-top
  from rope_jax.training import evaluate  # pylint: disable=g-import-not-at-top
  from rope_jax.training import probe_eval  # pylint: disable=g-import-not-at-top
  model, config, step = rundir.load_model(workdir)
  seq_len, batch = config.train.seq_len, config.train.global_batch_size
  out: dict[str, dict] = {"step": {"value": step}}
  for mult in (1, 4):
    r = evaluate.evaluate(model, config.data, task="offline", seq_len=seq_len * mult,
                          batch_size=batch, num_batches=scale.eval_batches)
    out[f"ppl_{mult}x"] = {"value": r["perplexity"]}
    for name, (task, settings) in PROBES.items():
      s = probe_eval.score(model, config.data, task=task, seq_len=seq_len * mult,
                           num_examples=scale.num_examples, settings=settings)
      out[f"{name}_{mult}x"] = s.to_dict()
  return out


def summarize(per_seed: list[dict[str, dict]]) -> dict[str, dict]:
  """Seeds combined: perplexity mean with t interval, probe counts pooled with Wilson."""
  from rope_jax.data import scoring  # pylint: disable=g-import-not-at-top
  out = {}
  for key in per_seed[0]:
    if key == "step":
      continue
    if key.startswith("ppl"):
      mean, lo, hi = scoring.t_interval([r[key]["value"] for r in per_seed])
      out[key] = {"mean": mean, "lo": lo, "hi": hi}
    else:
      k = sum(r[key]["correct"] for r in per_seed)
      n = sum(r[key]["total"] for r in per_seed)
      lo, hi = scoring.wilson_interval(k, n)
      out[key] = {"correct": k, "total": n, "accuracy": k / n, "lo": lo, "hi": hi}
  return out


def write_table(out_dir: str, name: str, header: Sequence[str], rows: Sequence[Sequence[str]],
                payload: Any) -> str:
  """Writes ``<out_dir>/<name>.md`` (the table) and ``<name>.json`` (``payload``); returns md."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  table = "\n".join(lines) + "\n"
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
    f.write(table)
  with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
    json.dump(payload, f, indent=2)
  return table


def interval(cell: Mapping[str, float], field: str = "mean", fmt: str = ".2f") -> str:
  """``"12.34 [11.00, 13.70]"``, or ``"12.34 [n/a]"`` when the interval is unbounded (1 seed)."""
  if not (math.isfinite(cell["lo"]) and math.isfinite(cell["hi"])):
    return f"{cell[field]:{fmt}} [n/a]"
  return f"{cell[field]:{fmt}} [{cell['lo']:{fmt}}, {cell['hi']:{fmt}}]"


def error_bars(cells: Sequence[Mapping[str, float]], field: str) -> list[list[float]]:
  """``[[below...], [above...]]`` for matplotlib; 0 where the interval is unbounded."""
  def finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0
  return [[finite(c[field] - c["lo"]) for c in cells], [finite(c["hi"] - c[field]) for c in cells]]


def pct(score: Mapping[str, float]) -> str:
  """``"62.5% [44.0, 77.8]"`` from a ``Score.to_dict()``."""
  return (f"{100 * score['accuracy']:.1f}% [{100 * score['lo']:.1f}, "
          f"{100 * score['hi']:.1f}]")


def begin(argv: Sequence[str], scales: Mapping[str, Scale], scale: str,
          overrides: Sequence[str]) -> tuple[Scale, dict[str, Any]]:
  """A script's start: no stray arguments, quiet logs; ``(scale, parsed overrides)``."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {list(argv[1:])}")
  logging.set_verbosity(logging.ERROR)  # The scripts print their own progress lines.
  return scales[scale], parse_overrides(overrides)


def pyplot() -> Any:
  """``matplotlib.pyplot`` on the file-only Agg backend."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def save_figure(fig: Any, path: str, title: str) -> None:
  """Titles, writes (PNG at 130 dpi) and closes a figure."""
  fig.suptitle(title, fontsize=10, y=1.02)
  fig.savefig(path, dpi=130, bbox_inches="tight")
  pyplot().close(fig)
