r"""A finer p sweep: p-RoPE at p in {0, 0.125, ..., 1}, perplexity and probes against p.

    python -m experiments.p_sweep --workdir=runs/p_sweep                 # CPU, minutes
    python -m experiments.p_sweep --workdir=gs://B/p_sweep --scale=pod --seeds=3

The paper tried p in {0, 0.25, 0.75, 1} (NoPE, 0.25-RoPE, 0.75-RoPE, RoPE) and its reviewers
asked which cutoff is best. Every (p, seed) trains the same decoder from scratch with the same
data order on a mixture of the offline corpus and the long-context probes (passkey, flip-flop),
one run directory each (``<workdir>/p<p>/seed<s>``; re-runs skip finished runs). Then every run
is measured on the same validation sets: corpus perplexity at L and 4L, and whole-answer exact
match of passkey (random depth) and flip-flop (sparse reads, p_ignore 0.98) at L and 4L.

Writes ``p_sweep.md`` / ``p_sweep.json`` (per p: perplexity mean over seeds with Student's t 95%
interval, probe exact match pooled over seeds with Wilson 95% interval) and ``p_sweep.png``
(each measurement against p, with those intervals).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before anything imports TensorFlow.
import time  # pylint: disable=g-import-not-at-top,wrong-import-position

from absl import app
from absl import flags
import numpy as np

from experiments import beyond_common as common

P_VALUES = tuple(i / 8 for i in range(9))
SCALES = common.MIXTURE_SCALES

_WORKDIR = flags.DEFINE_string("workdir", "runs/p_sweep", "Root of the runs and the outputs.")
_SCALE = flags.DEFINE_enum("scale", "cpu", list(SCALES), "Experiment size.")
_P = flags.DEFINE_list("p", [f"{p:g}" for p in P_VALUES], "The fractions p to train.")
_SEEDS = flags.DEFINE_integer("seeds", 1, "Training seeds per p.")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "KEY=VALUE for every run.")


def run_name(p: float) -> str:
  return f"p{p:.3f}".replace(".", "")


def plot(summary: dict[float, dict], path: str, title: str) -> None:
  plt = common.pyplot()
  ps = sorted(summary)
  panels = [("ppl", "corpus perplexity", "mean"), *[(n, f"{n} exact match", "accuracy")
                                                     for n in common.PROBES]]
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
  for ax, (key, label, field) in zip(axes, panels):
    for mult, marker in ((1, "o"), (4, "s")):
      cells = [summary[p][f"{key}_{mult}x"] for p in ps]
      y = np.array([c[field] for c in cells])
      ax.errorbar(ps, y, yerr=common.error_bars(cells, field), marker=marker, capsize=3, label=f"{mult}x train length")
    ax.set_xlabel("p (fraction of RoPE frequencies kept)")
    ax.set_title(label)
    ax.set_xticks(ps, [f"{p:g}" for p in ps], fontsize=7)
    if key == "ppl":
      ax.set_yscale("log")
    else:
      ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
  fig.tight_layout()
  common.save_figure(fig, path, title)


def main(argv: list[str]) -> None:
  scale, overrides = common.begin(argv, SCALES, _SCALE.value, _OVERRIDES.value)
  ps = [float(p) for p in _P.value]
  bad = [p for p in ps if not 0 <= p <= 1]
  if bad:
    raise app.UsageError(f"p must be in [0, 1], got {bad}.")
  root = _WORKDIR.value
  t0 = time.perf_counter()
  raw: dict[float, list[dict]] = {}
  config = None
  for p in ps:
    raw[p] = []
    for seed in range(_SEEDS.value):
      config = common.load(f"{scale.config_file}:pe=p_rope,p={p}", scale.overrides,
                           {"train.seed": seed}, overrides)
      workdir = os.path.join(root, run_name(p), f"seed{seed}")
      common.train(config, workdir, f"p={p:g} seed {seed}")
      raw[p].append(common.measure(workdir, scale))
  summary = {p: common.summarize(raw[p]) for p in ps}
  seq_len = config.train.seq_len
  title = (f"p-RoPE sweep: {scale.name} scale, L={seq_len}, {config.train.num_steps} steps, "
           f"{_SEEDS.value} seed(s)")
  os.makedirs(root, exist_ok=True)
  plot(summary, os.path.join(root, "p_sweep.png"), title)
  header = ["p", f"ppl L={seq_len}", f"ppl {4 * seq_len}"] + [
      f"{n} {m}" for n in common.PROBES for m in (f"L={seq_len}", str(4 * seq_len))]
  rows = []
  for p in ps:
    s = summary[p]
    ppl = [common.interval(s[f"ppl_{m}x"]) for m in (1, 4)]
    rows.append([f"{p:g}"] + ppl + [common.pct(s[f"{n}_{m}x"]) for n in common.PROBES
                                    for m in (1, 4)])
  payload = {"scale": scale.name, "seq_len": seq_len, "seeds": _SEEDS.value,
             "num_steps": config.train.num_steps,
             "probes": {k: v[1] for k, v in common.PROBES.items()},
             "summary": {f"{p:g}": summary[p] for p in ps},
             "per_seed": {f"{p:g}": raw[p] for p in ps}}
  table = common.write_table(root, "p_sweep", header, rows, payload)
  print(f"\n{title}. Perplexity: mean over seeds [t 95%]; probes: whole-answer exact match "
        f"pooled over seeds [Wilson 95%].\n\n{table}")
  print(f"Figure: {os.path.join(root, 'p_sweep.png')}; total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
  app.run(main)
