"""The CPU Table 2's statistics, claims ledger, markdown and figures (from plain per-member data).

Input (``experiments/table2_cpu.py``): per member ``{"row", "seed", "loss": {context: nats},
"probes": {kind: {context: [0/1 per example]}}, "ablation": {band: {"loss": nats, kind: [0/1]}}}``.
Every member of every row was scored on the same tokens and the same probe examples, and seed i
of every row shares its init key, so differences against the reference row ``"rope"`` (RoPE at
the scaled θ) are paired by seed. Intervals are 95% Student-t over seeds
(``rope_jax.sweeps.stats``); a difference is called better / worse only when its interval
excludes 0. Pooled probe exact match also gets a Wilson interval over all examples of a row.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from rope_jax.sweeps import grid as grid_lib
from rope_jax.sweeps import regime
from rope_jax.sweeps import stats

REFERENCE = "rope"
PROBE_KINDS = ("copy", "recall")
BANDS = ("high", "low")
REPRODUCED, CONTRADICTED, INCONCLUSIVE = "reproduced", "contradicted", "inconclusive at this scale"


def regime_table(rows: Sequence[regime.CpuRow], head_dim: int, seq_len: int) -> str:
  """Per row: θ, and the largest rotation over L of the removed / the range of kept frequencies."""
  lines = [f"Regime: largest rotation over the training context (L = {seq_len}, H = {head_dim}); "
           f"the paper's 0.75-RoPE removes frequencies turning up to "
           f"{regime.paper_rotation():.2f} rad over L = {regime.PAPER_SEQ_LEN} (H = 256, θ = 10k).",
           "", "| row | θ | removed: max rad over L | kept: min – max rad over L |",
           "|---|---|---|---|"]
  for r in rows:
    rot = regime.rotations(r.rope, head_dim, seq_len)
    rem = "—" if rot["removed_max"] is None else f"{rot['removed_max']:.3g}"
    kept = ("—" if rot["kept_min"] is None else
            f"{rot['kept_min']:.3g} – {rot['kept_max']:.3g}")
    lines.append(f"| {r.label} | {r.rope.theta:.4g} | {rem} | {kept} |")
  return "\n".join(lines) + "\n"


def _by_row(members: dict[str, Any], rows: Sequence[regime.CpuRow], seeds: int):
  out = {r.key: [None] * seeds for r in rows}
  for m in members.values():
    out[m["row"]][m["seed"]] = m
  return out


def _iv(x) -> dict[str, float]:
  return stats.t_interval(x).to_json()


def summarise(rows: Sequence[regime.CpuRow], seeds: int, members: dict[str, Any],
              baselines: dict[str, float], *, seq_len: int, head_dim: int, steps: int,
              eval_tokens: int, probe_examples: int) -> dict[str, Any]:
  """Intervals per row, paired differences against RoPE, ablations and the ledger (JSON-able)."""
  by_row = _by_row(members, rows, seeds)
  contexts = sorted(next(iter(members.values()))["loss"], key=int)
  ref = by_row[REFERENCE]
  table = []
  for r in rows:
    ms = by_row[r.key]
    entry = {"key": r.key, "label": r.label, "arg": r.arg, "theta": r.rope.theta,
             "control": r.control, "paper": dict(_paper_row(r.paper_key).paper),
             "rotations": regime.rotations(r.rope, head_dim, seq_len),
             "ppl": {}, "ppl_diff_vs_rope": {}, "probes": {}, "ablation": {}}
    for c in contexts:
      ppl = [float(np.exp(m["loss"][c])) for m in ms]
      ref_ppl = [float(np.exp(m["loss"][c])) for m in ref]
      entry["ppl"][c] = {"seeds": ppl, **_iv(ppl)}
      d = stats.paired_difference(ppl, ref_ppl)
      entry["ppl_diff_vs_rope"][c] = {**d.to_json(), "verdict": stats.verdict(d)}
    for kind in PROBE_KINDS:
      entry["probes"][kind] = {}
      for c in contexts:
        em = [float(np.mean(m["probes"][kind][c])) for m in ms]
        ref_em = [float(np.mean(m["probes"][kind][c])) for m in ref]
        pooled = [x for m in ms for x in m["probes"][kind][c]]
        w = stats.wilson_interval(int(sum(pooled)), len(pooled))
        d = stats.paired_difference(em, ref_em)
        entry["probes"][kind][c] = {"seeds": em, **_iv(em), "pooled": w.to_json(),
                                    "diff_vs_rope": {**d.to_json(),
                                                     "verdict": stats.verdict(
                                                         d, lower_is_better=False)}}
    base_c = contexts[0]
    for band in BANDS:
      dl = [float(np.exp(m["ablation"][band]["loss"]) - np.exp(m["loss"][base_c])) for m in ms]
      entry["ablation"][band] = {"ppl_change": {"seeds": dl, **_iv(dl)}}
      for kind in PROBE_KINDS:
        de = [float(np.mean(m["ablation"][band][kind]) - np.mean(m["probes"][kind][base_c]))
              for m in ms]
        entry["ablation"][band][f"{kind}_change"] = {"seeds": de, **_iv(de)}
    table.append(entry)
  results = {"rows": table, "seeds": seeds, "steps": steps, "seq_len": seq_len,
             "contexts": contexts, "head_dim": head_dim, "eval_tokens": eval_tokens,
             "probe_examples_per_member": probe_examples, "baselines": baselines}
  results["ledger"] = ledger(results)
  results["beats_bigram"] = {e["key"]: e["ppl"][contexts[0]]["mean"] < baselines["bigram"]
                             for e in table}
  return results


def _paper_row(key: str) -> grid_lib.Row:
  return next(r for r in grid_lib.TABLE2_ROWS if r.key == key)


def _interval(d: dict[str, float]) -> stats.Interval:
  return stats.Interval(d["mean"], d["lo"], d["hi"], int(d["n"]))


def _fmt_diff(d: dict[str, float], scale: float = 1.0, digits: int = 2) -> str:
  return (f"{d['mean'] * scale:+.{digits}f} [{d['lo'] * scale:+.{digits}f}, "
          f"{d['hi'] * scale:+.{digits}f}]")


def ledger(results: dict[str, Any]) -> list[dict[str, str]]:
  """The paper's claims that this scale can test, each with our numbers and a verdict."""
  rows = {e["key"]: e for e in results["rows"]}
  c1 = results["contexts"][0]
  far = results["contexts"][1:]
  out = []

  def add(claim, evidence, verdict):
    out.append({"claim": claim, "evidence": evidence, "verdict": verdict})

  if "nope" in rows:
    d = rows["nope"]["ppl_diff_vs_rope"][c1]
    worst = max(rows.values(), key=lambda e: e["ppl"][c1]["mean"])["key"]
    v = stats.verdict(_interval(d))
    verdict = (REPRODUCED if v == "worse" and worst == "nope" else
               CONTRADICTED if v == "better" else INCONCLUSIVE)
    add("NoPE is worst at language modelling (Table 2)",
        f"NoPE − RoPE ppl at L: {_fmt_diff(d)}; highest mean ppl: {rows[worst]['label']}", verdict)
  if "p075-reversed" in rows:
    d = rows["p075-reversed"]["probes"]["copy"][c1]["diff_vs_rope"]
    hi = rows[REFERENCE]["ablation"]["high"]["copy_change"]
    lo = rows[REFERENCE]["ablation"]["low"]["copy_change"]
    diff = stats.paired_difference(hi["seeds"], lo["seeds"])
    v1, v2 = stats.verdict(_interval(d), lower_is_better=False), stats.verdict(diff)
    verdict = (REPRODUCED if v1 == "worse" and v2 == "better" else
               CONTRADICTED if v1 == "better" or v2 == "worse" else INCONCLUSIVE)
    add("The highest frequencies carry the positional (copy) mechanism (§5, Thm 5.3)",
        f"reversed − RoPE copy exact match at L: {_fmt_diff(d, 100, 1)} points; in RoPE, "
        f"ablating the fastest quarter changes copy by {_fmt_diff(hi, 100, 1)} points, the "
        f"slowest quarter by {_fmt_diff(lo, 100, 1)} (paired high − low: "
        f"{_fmt_diff(diff.to_json(), 100, 1)})", verdict)
  hi = rows[REFERENCE]["ablation"]["high"]["recall_change"]
  lo = rows[REFERENCE]["ablation"]["low"]["recall_change"]
  diff = stats.paired_difference(lo["seeds"], hi["seeds"])
  v = stats.verdict(diff)
  add("The lowest frequencies carry the semantic (recall) channel (§6)",
      f"in RoPE, ablating the slowest quarter changes recall by {_fmt_diff(lo, 100, 1)} points, "
      f"the fastest quarter by {_fmt_diff(hi, 100, 1)} (paired low − high: "
      f"{_fmt_diff(diff.to_json(), 100, 1)})",
      REPRODUCED if v == "better" else CONTRADICTED if v == "worse" else INCONCLUSIVE)
  for key, regime_name in (("p075-rope", "the paper's regime (θ scaled)"),
                           ("p075-theta10k", "the unscaled control (θ = 10k)")):
    if key not in rows:
      continue
    ref_key = REFERENCE if key == "p075-rope" else "rope-theta10k"
    d = rows[key]["ppl_diff_vs_rope"][c1]
    if key != "p075-rope" and ref_key in rows:
      d = stats.paired_difference(rows[key]["ppl"][c1]["seeds"],
                                  rows[ref_key]["ppl"][c1]["seeds"]).to_json()
    v = stats.verdict(_interval(d))
    add(f"0.75-RoPE has lower perplexity than RoPE in {regime_name} (Table 2)",
        f"0.75-RoPE − RoPE ppl at L: {_fmt_diff(d)}",
        REPRODUCED if v == "better" else CONTRADICTED if v == "worse" else INCONCLUSIVE)
  if "p075-rope" in rows:
    parts, vs = [], []
    for c in far:
      d = rows["p075-rope"]["probes"]["recall"][c]["diff_vs_rope"]
      vs.append(stats.verdict(_interval(d), lower_is_better=False))
      parts.append(f"{c} tokens: {_fmt_diff(d, 100, 1)} points")
    add("Removing the lowest frequencies helps semantic retrieval beyond the training length "
        "(§6.1, expected by the authors)",
        "0.75-RoPE − RoPE recall exact match at " + "; ".join(parts),
        REPRODUCED if "better" in vs and "worse" not in vs else
        CONTRADICTED if "worse" in vs and "better" not in vs else INCONCLUSIVE)
  if "rope-500k" in rows:
    d = rows["rope-500k"]["ppl_diff_vs_rope"][c1]
    v = stats.verdict(_interval(d))
    add("θ = 500k beats θ = 10k (Table 2: on Wiki; on FlanV2 it is worse)",
        f"RoPE 500k − RoPE 10k (both scaled) ppl at L: {_fmt_diff(d)}",
        REPRODUCED if v == "better" else CONTRADICTED if v == "worse" else INCONCLUSIVE)
  return out


def markdown(results: dict[str, Any]) -> str:
  """``results.md``: the table with intervals, baselines, ablations, the ledger, the timings."""
  cs = results["contexts"]
  c1 = cs[0]
  lines = [f"# Table 2 at CPU scale: {results['seeds']} seeds per row, {results['steps']} steps, "
           f"L = {results['seq_len']}", ""]
  lines.append("Perplexity per SentencePiece token on the same "
               f"{results['eval_tokens']:,} held-out targets at every context length "
               "(mean ± 95% t-interval over seeds); Δ = paired difference against RoPE at the "
               "scaled θ [95% CI] and its verdict. Count baselines on the same targets: unigram "
               f"{results['baselines']['unigram']:.2f}, bigram {results['baselines']['bigram']:.2f}.")
  lines.append("")
  head = (["row", "θ"] + [f"ppl {c}" for c in cs] + [f"Δ ppl {c1} vs RoPE", "verdict"]
          + [f"{k} EM {c}" for k in PROBE_KINDS for c in cs] + ["paper Wiki", "paper FlanV2"])
  lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for e in results["rows"]:
    d = e["ppl_diff_vs_rope"][c1]
    cells = [e["label"], f"{e['theta']:.4g}"]
    cells += [_interval(e["ppl"][c]).fmt(2) for c in cs]
    cells += ["—" if e["key"] == REFERENCE else _fmt_diff(d),
              "reference" if e["key"] == REFERENCE else d["verdict"]]
    cells += [_interval(e["probes"][k][c]).fmt(1, 100) + "%" for k in PROBE_KINDS for c in cs]
    cells += [f"{e['paper']['wiki']:.4f}", f"{e['paper']['flan_v2']:.4f}"]
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "Probe EM = exact match of the whole answer (every answer token right), mean over "
            f"seeds of {results['probe_examples_per_member']} examples each ± 95% t-interval; "
            "pooled Wilson intervals are in results.json.", ""]
  if not all(results["beats_bigram"].values()):
    behind = [e["label"] for e in results["rows"] if not results["beats_bigram"][e["key"]]]
    lines += [f"**Not below the bigram baseline ({results['baselines']['bigram']:.2f}) at this "
              f"budget:** {', '.join(behind)}. The language-modelling comparisons are between "
              "undertrained models; run longer with `--steps=N` (README).", ""]
  lines += ["## Band ablation at L (a quarter of each row's rotating pairs made identity)", "",
            "| row | band | Δ ppl | Δ copy EM | Δ recall EM |", "|---|---|---|---|---|"]
  for e in results["rows"]:
    for band in BANDS:
      a = e["ablation"][band]
      lines.append(f"| {e['label']} | {'fastest' if band == 'high' else 'slowest'} quarter | "
                   f"{_interval(a['ppl_change']).fmt(2)} | "
                   f"{_interval(a['copy_change']).fmt(1, 100)} | "
                   f"{_interval(a['recall_change']).fmt(1, 100)} |")
  lines += ["", "## Claims ledger", "", "| claim | our numbers | verdict |", "|---|---|---|"]
  lines += [f"| {x['claim']} | {x['evidence']} | **{x['verdict']}** |" for x in results["ledger"]]
  t = results.get("timings", {})
  if t:
    lines += ["", "Wall time: " + ", ".join(f"{k} {v:.0f}" for k, v in t.items())]
  return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], out_dir: str) -> list[str]:
  """The table with error bars, ppl vs context length, probe EM vs length: three PNGs."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  rows, cs = results["rows"], results["contexts"]
  paths = []
  fig, ax = plt.subplots(figsize=(9, 4))
  c1 = cs[0]
  means = [e["ppl"][c1]["mean"] for e in rows]
  errs = [e["ppl"][c1]["hi"] - e["ppl"][c1]["mean"] for e in rows]
  ax.bar(range(len(rows)), means, yerr=errs, capsize=4, color="tab:blue")
  ax.axhline(results["baselines"]["bigram"], color="k", ls="--", label="bigram")
  ax.set_xticks(range(len(rows)), [e["label"] for e in rows], rotation=30, ha="right",
                fontsize=8)
  ax.set_ylabel(f"held-out ppl at L={c1} (95% CI)")
  ax.legend()
  fig.tight_layout()
  paths.append(os.path.join(out_dir, "table2_ppl.png"))
  fig.savefig(paths[-1], dpi=120)
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for e in rows:
    m = [e["ppl"][c]["mean"] for c in cs]
    err = [e["ppl"][c]["hi"] - e["ppl"][c]["mean"] for c in cs]
    ax.errorbar([int(c) for c in cs], m, yerr=err, marker="o", capsize=3, label=e["label"])
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  ax.set_xlabel("context length (same target tokens)")
  ax.set_ylabel("held-out ppl")
  ax.legend(fontsize=7)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, "ppl_vs_length.png"))
  fig.savefig(paths[-1], dpi=120)
  plt.close(fig)
  fig, axes = plt.subplots(1, len(PROBE_KINDS), figsize=(11, 4.5), sharey=True)
  for ax, kind in zip(axes, PROBE_KINDS):
    for e in rows:
      m = [100 * e["probes"][kind][c]["mean"] for c in cs]
      err = [100 * (e["probes"][kind][c]["hi"] - e["probes"][kind][c]["mean"])
             if np.isfinite(e["probes"][kind][c]["hi"]) else 0 for c in cs]
      ax.errorbar([int(c) for c in cs], m, yerr=err, marker="o", capsize=3, label=e["label"])
    ax.set_xscale("log", base=2)
    ax.set_title(f"{kind}: exact match of the whole answer")
    ax.set_xlabel("context length")
  axes[0].set_ylabel("% examples")
  axes[-1].legend(fontsize=7)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, "probes_vs_length.png"))
  fig.savefig(paths[-1], dpi=120)
  plt.close(fig)
  return paths
