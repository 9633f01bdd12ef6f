r"""Continued pre-training RoPE -> p-RoPE against p-RoPE from scratch, at the same total steps.

    python -m experiments.continued_pretraining --workdir=runs/cpt          # CPU, minutes
    python -m experiments.continued_pretraining --workdir=gs://B/cpt --scale=pod --seeds=3

The paper's rebuttal reported, as "preliminary", that a RoPE model continued with p-RoPE keeps
its quality. Per seed, three runs of the same decoder on the same data mixture (the offline
corpus with the passkey and flip-flop probes):

* ``rope``: RoPE from scratch for N1 steps;
* ``cont``: 0.75-RoPE (``--p``) for N2 steps, started from ``rope``'s parameters with a fresh
  optimizer and schedule in its own workdir (``checkpoint.init_from=<rope workdir>``);
* ``scratch``: 0.75-RoPE from scratch for N1 + N2 steps (the same total tokens as rope + cont).

Every run is measured as in ``p_sweep`` (``beyond_common.measure``: corpus perplexity at L and
4L, passkey and sparse flip-flop exact match at L and 4L). ``cont - scratch`` is reported with a
95% interval: paired by seed (Student's t) for perplexity, Newcombe's for the pooled exact match;
a difference is called only when its interval excludes zero. Writes ``continued_pretraining.md`` / ``.json`` and
``continued_pretraining.png`` (training loss against total steps; the final measurements).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before anything imports TensorFlow.
import dataclasses  # pylint: disable=g-import-not-at-top,wrong-import-position
import json
import time

from absl import app
from absl import flags

from experiments import beyond_common as common

# N1 = N2 = the scale's train.num_steps (the scratch run trains twice as long).
SCALES = {name: dataclasses.replace(s, overrides={**s.overrides, "train.num_steps": steps})
          for (name, s), steps in zip(common.MIXTURE_SCALES.items(), (80, 5000))}
RUNS = ("rope", "cont", "scratch")
LABELS = {"rope": "RoPE (N1 steps)", "cont": "RoPE → p-RoPE (N1 + N2)",
          "scratch": "p-RoPE from scratch (N1 + N2)"}

_WORKDIR = flags.DEFINE_string("workdir", "runs/continued_pretraining", "Root of the runs.")
_SCALE = flags.DEFINE_enum("scale", "cpu", list(SCALES), "Experiment size.")
_P = flags.DEFINE_float("p", 0.75, "The fraction of the continued and the scratch p-RoPE runs.")
_STEPS = flags.DEFINE_integer("steps", None, "N1 = N2 (default: the scale's train.num_steps).")
_SEEDS = flags.DEFINE_integer("seeds", 1, "Seeds (each a rope / cont / scratch triple).")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "KEY=VALUE for every run.")


def configs(scale: common.Scale, p: float, seed: int, steps: int, root: str,
            overrides: dict) -> dict[str, tuple[object, str]]:
  """``{run: (config, workdir)}`` of one seed's triple."""
  workdirs = {r: os.path.join(root, r, f"seed{seed}") for r in RUNS}
  base = {**scale.overrides, "train.seed": seed}
  specs = {
      "rope": ("pe=rope", {"train.num_steps": steps}),
      "cont": (f"pe=p_rope,p={p}", {"train.num_steps": steps,
                                    "checkpoint.init_from": workdirs["rope"]}),
      "scratch": (f"pe=p_rope,p={p}", {"train.num_steps": 2 * steps}),
  }
  return {r: (common.load(f"{scale.config_file}:{arg}", base, extra, overrides), workdirs[r])
          for r, (arg, extra) in specs.items()}


def train_losses(workdir: str) -> tuple[list[int], list[float]]:
  steps, losses = [], []
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      rec = json.loads(line)
      if rec.get("split") == "train" and "loss" in rec:
        steps.append(int(rec["step"]))
        losses.append(float(rec["loss"]))
  return steps, losses


def compare(cont: list[dict], scratch: list[dict]) -> dict[str, dict]:
  """``cont - scratch`` per measurement with its 95% interval."""
  from rope_jax.data import scoring  # pylint: disable=g-import-not-at-top
  out = {}
  for key in cont[0]:
    if key == "step":
      continue
    if key.startswith("ppl"):
      diffs = [c[key]["value"] - s[key]["value"] for c, s in zip(cont, scratch)]
      mean, lo, hi = scoring.t_interval(diffs)
    else:
      k1, n1 = sum(c[key]["correct"] for c in cont), sum(c[key]["total"] for c in cont)
      k2, n2 = sum(s[key]["correct"] for s in scratch), sum(s[key]["total"] for s in scratch)
      mean = k1 / n1 - k2 / n2
      lo, hi = scoring.newcombe_interval(k1, n1, k2, n2)
    out[key] = {"diff": mean, "lo": lo, "hi": hi, "differs": bool(lo > 0 or hi < 0)}
  return out


def plot(curves: dict[str, list], summary: dict[str, dict], steps: int, path: str,
         title: str) -> None:
  """Training loss against total steps; final perplexities; final probe exact match."""
  plt = common.pyplot()
  fig, (ax, px, bx) = plt.subplots(1, 3, figsize=(14, 3.6))
  colours = {"rope": "tab:blue", "cont": "tab:green", "scratch": "tab:orange"}
  for run, seeds in curves.items():
    for i, (x, y) in enumerate(seeds):
      offset = steps if run == "cont" else 0
      ax.plot([s + offset for s in x], y, color=colours[run], alpha=0.8,
              label=LABELS[run] if i == 0 else None)
  ax.axvline(steps, color="gray", lw=0.8, ls="--")
  ax.set_xlabel("total training steps")
  ax.set_ylabel("training loss (mixture)")
  ax.legend(fontsize=7)
  for axis, prefix, field in ((px, "ppl", "mean"), (bx, "", "accuracy")):
    keys = [k for k in summary["rope"] if k != "step" and k.startswith("ppl") == bool(prefix)]
    width = 0.27
    for i, run in enumerate(RUNS):
      cells = [summary[run][key] for key in keys]
      vals = [c[field] for c in cells]
      axis.bar([j + (i - 1) * width for j in range(len(keys))], vals, width,
               yerr=common.error_bars(cells, field),
               capsize=2, color=colours[run], label=LABELS[run])
    axis.set_xticks(range(len(keys)), keys, rotation=20, fontsize=7)
  px.set_title("corpus perplexity (lower is better)", fontsize=9)
  bx.set_title("probe exact match [Wilson 95%]", fontsize=9)
  bx.set_ylim(0, 1)
  fig.tight_layout()
  common.save_figure(fig, path, title)


def main(argv: list[str]) -> None:
  scale, overrides = common.begin(argv, SCALES, _SCALE.value, _OVERRIDES.value)
  steps = _STEPS.value or scale.overrides["train.num_steps"]
  root = _WORKDIR.value
  t0 = time.perf_counter()
  raw = {r: [] for r in RUNS}
  curves = {r: [] for r in RUNS}
  seq_len = None
  for seed in range(_SEEDS.value):
    for run, (config, workdir) in configs(scale, _P.value, seed, steps, root, overrides).items():
      common.train(config, workdir, f"{run} seed {seed}")
      raw[run].append(common.measure(workdir, scale))
      curves[run].append(train_losses(workdir))
      seq_len = config.train.seq_len
  summary = {r: common.summarize(raw[r]) for r in RUNS}
  diff = compare(raw["cont"], raw["scratch"])
  title = (f"Continued pre-training RoPE → {_P.value:g}-RoPE vs from scratch: {scale.name} "
           f"scale, N1 = N2 = {steps} steps, L={seq_len}, {_SEEDS.value} seed(s)")
  os.makedirs(root, exist_ok=True)
  plot(curves, summary, steps, os.path.join(root, "continued_pretraining.png"), title)
  keys = [k for k in summary["rope"] if k != "step"]
  header = ["run"] + keys
  rows = []
  for run in RUNS:
    cells = []
    for key in keys:
      c = summary[run][key]
      cells.append(common.interval(c) if key.startswith("ppl") else common.pct(c))
    rows.append([LABELS[run]] + cells)
  rows.append(["cont − scratch"] + [
      common.interval(d, "diff", "+.3f") + (" *" if d["differs"] else "")
      for d in (diff[k] for k in keys)])
  payload = {"scale": scale.name, "p": _P.value, "steps_each": steps, "seeds": _SEEDS.value,
             "seq_len": seq_len, "summary": summary, "cont_minus_scratch": diff, "per_seed": raw}
  table = common.write_table(root, "continued_pretraining", header, rows, payload)
  print(f"\n{title}. ppl_Nx: corpus perplexity at N x L (mean [t 95%] over seeds); probes: "
        f"exact match [Wilson 95%]; last row: cont − scratch [95%], * = interval excludes 0 "
        f"(perplexity needs >= 2 seeds).\n\n{table}")
  print(f"Figure: {os.path.join(root, 'continued_pretraining.png')}; "
        f"total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
  app.run(main)
