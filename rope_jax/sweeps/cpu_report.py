"""The CPU Table 2's statistics, claims ledger, markdown and figures (from plain per-member data).

Input (``experiments/table2_cpu.py``): per member ``{"row", "seed", "loss": {context: nats},
"probes": {kind: {context: [0/1 per example]}}, "ablation": {band: {"loss": nats, kind: [0/1]}}}``;
a member trained only in the language-modelling grid has empty ``probes``, one trained only in
the probe grid empty ``loss`` (the job's two grids share rows, seeds and init keys).
Every member of every row was scored on the same tokens and the same probe examples, and seed i
of every row shares its init key, so differences against the reference row ``"rope"`` (RoPE at
the scaled θ) are paired by seed. Intervals are 95% Student-t over seeds
(``rope_jax.sweeps.stats``); a difference is called better / worse only when its interval
excludes 0. A row's probe exact match is reported pooled over its seeds' examples with a
Wilson interval.
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
              baselines: dict[str, float], *, seq_len: int, head_dim: int,
              steps: dict[str, int], eval_tokens: int, probe_examples: int) -> dict[str, Any]:
  """Intervals per row, paired differences against RoPE, ablations and the ledger (JSON-able).

  A row has language-modelling entries (``ppl``, ``ppl_diff_vs_rope``, ablation ``ppl_change``)
  if its members carry losses, and probe entries if they carry probe results (the job's two
  grids); a missing half is absent from the entry.
  """
  by_row = _by_row(members, rows, seeds)
  ref = by_row[REFERENCE]
  contexts = sorted({c for m in members.values() for c in m["loss"]} |
                    {c for m in members.values() for k in m["probes"].values() for c in k},
                    key=int)
  table = []
  for r in rows:
    ms = by_row[r.key]
    entry = {"key": r.key, "label": r.label, "arg": r.arg, "theta": r.rope.theta,
             "control": r.control, "paper": dict(_paper_row(r.paper_key).paper),
             "rotations": regime.rotations(r.rope, head_dim, seq_len), "ablation": {}}
    has_lm, has_probes = bool(ms[0]["loss"]), bool(ms[0]["probes"])
    if has_lm:
      entry["ppl"], entry["ppl_diff_vs_rope"] = {}, {}
      for c in contexts:
        ppl = [float(np.exp(m["loss"][c])) for m in ms]
        ref_ppl = [float(np.exp(m["loss"][c])) for m in ref]
        entry["ppl"][c] = {"seeds": ppl, **_iv(ppl)}
        d = stats.paired_difference(ppl, ref_ppl)
        entry["ppl_diff_vs_rope"][c] = {**d.to_json(), "verdict": stats.verdict(d)}
    if has_probes:
      entry["probes"] = {}
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
      entry["ablation"][band] = {}
      if has_lm:
        dl = [float(np.exp(m["ablation"][band]["loss"]) - np.exp(m["loss"][base_c]))
              for m in ms]
        entry["ablation"][band]["ppl_change"] = {"seeds": dl, **_iv(dl)}
      if has_probes:
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
                             for e in table if "ppl" in e}
  return results


def _paper_row(key: str) -> grid_lib.Row:
  return next(r for r in grid_lib.TABLE2_ROWS if r.key == key)


def _interval(d: dict[str, float]) -> stats.Interval:
  return stats.Interval(d["mean"], d["lo"], d["hi"], int(d["n"]))


def _fmt_diff(d: dict[str, float], scale: float = 1.0, digits: int = 2) -> str:
  return (f"{d['mean'] * scale:+.{digits}f} [{d['lo'] * scale:+.{digits}f}, "
          f"{d['hi'] * scale:+.{digits}f}]")


LEARNED = 0.9  # A probe claim is tested only where RoPE learned the probe to this at L.


def _verdict(v: str, *, good: str = "better") -> str:
  bad = "worse" if good == "better" else "better"
  return REPRODUCED if v == good else CONTRADICTED if v == bad else INCONCLUSIVE


def ledger(results: dict[str, Any]) -> list[dict[str, str]]:
  """The paper's claims that this scale can test, each with our numbers and a verdict.

  Language-modelling claims need both rows in the LM grid, probe claims both in the probe grid;
  a probe claim whose reference (RoPE) did not learn the probe to ``LEARNED`` at L is
  inconclusive whatever the numbers (a probe every row fails tells nothing).
  """
  rows = {e["key"]: e for e in results["rows"]}
  lm = {k: e for k, e in rows.items() if "ppl" in e}
  pr = {k: e for k, e in rows.items() if "probes" in e}
  c1 = results["contexts"][0]
  far = results["contexts"][1:]
  out = []

  def add(claim, evidence, verdict):
    out.append({"claim": claim, "evidence": evidence, "verdict": verdict})

  def learned(kind):
    em = pr[REFERENCE]["probes"][kind][c1]["mean"] if REFERENCE in pr else 0.0
    note = (f" (RoPE learned {kind} to {100 * em:.1f}% at L, below the {100 * LEARNED:.0f}% "
            "a test needs)") if em < LEARNED else ""
    return em >= LEARNED, note

  if "nope" in lm and REFERENCE in lm:
    d = lm["nope"]["ppl_diff_vs_rope"][c1]
    worst = max(lm.values(), key=lambda e: e["ppl"][c1]["mean"])["key"]
    v = stats.verdict(_interval(d))
    verdict = (REPRODUCED if v == "worse" and worst == "nope" else
               CONTRADICTED if v == "better" else INCONCLUSIVE)
    add("NoPE is worst at language modelling (Table 2)",
        f"NoPE − RoPE ppl at L: {_fmt_diff(d)}; highest mean ppl: {lm[worst]['label']}", verdict)
  if REFERENCE in pr:
    ok, note = learned("copy")
    hi = pr[REFERENCE]["ablation"]["high"]["copy_change"]
    lo = pr[REFERENCE]["ablation"]["low"]["copy_change"]
    diff = stats.paired_difference(hi["seeds"], lo["seeds"])
    add("The highest frequencies carry the positional (copy) mechanism: ablating them costs "
        "more than ablating the lowest (§5, Thm 5.3; by intervention)",
        f"in RoPE, ablating the fastest quarter changes copy exact match by "
        f"{_fmt_diff(hi, 100, 1)} points, the slowest quarter by {_fmt_diff(lo, 100, 1)} "
        f"(paired high − low: {_fmt_diff(diff.to_json(), 100, 1)}){note}",
        _verdict(stats.verdict(diff)) if ok else INCONCLUSIVE)
  if "p075-reversed" in pr and REFERENCE in pr:
    ok, note = learned("copy")
    d = pr["p075-reversed"]["probes"]["copy"][c1]["diff_vs_rope"]
    add("Removing the highest frequencies (0.75-RoPE_reversed) loses the positional probe "
        "(§5, Table 2's control)",
        f"reversed − RoPE copy exact match at L: {_fmt_diff(d, 100, 1)} points{note}",
        _verdict(stats.verdict(_interval(d), lower_is_better=False), good="worse")
        if ok else INCONCLUSIVE)
  if REFERENCE in pr:
    ok, note = learned("recall")
    hi = pr[REFERENCE]["ablation"]["high"]["recall_change"]
    lo = pr[REFERENCE]["ablation"]["low"]["recall_change"]
    diff = stats.paired_difference(lo["seeds"], hi["seeds"])
    # The claim: the slowest band matters more to recall, i.e. ablating it costs more (low − high
    # is negative, "better" under lower_is_better).
    add("The lowest frequencies carry the semantic (recall) channel (§6)",
        f"in RoPE, ablating the slowest quarter changes recall by {_fmt_diff(lo, 100, 1)} points, "
        f"the fastest quarter by {_fmt_diff(hi, 100, 1)} (paired low − high: "
        f"{_fmt_diff(diff.to_json(), 100, 1)}){note}",
        _verdict(stats.verdict(diff)) if ok else INCONCLUSIVE)
  for key, ref_key, regime_name in (
      ("p075-rope", REFERENCE, "the paper's regime (θ scaled)"),
      ("p075-theta10k", "rope-theta10k", "the unscaled control (θ = 10k)")):
    if key not in lm or ref_key not in lm:
      continue
    d = stats.paired_difference(lm[key]["ppl"][c1]["seeds"],
                                lm[ref_key]["ppl"][c1]["seeds"]).to_json()
    add(f"0.75-RoPE has lower perplexity than RoPE in {regime_name} (Table 2)",
        f"0.75-RoPE − RoPE ppl at L: {_fmt_diff(d)}", _verdict(stats.verdict(_interval(d))))
  if "p075-rope" in pr and REFERENCE in pr:
    ok, note = learned("recall")
    parts, vs = [], []
    for c in far:
      d = pr["p075-rope"]["probes"]["recall"][c]["diff_vs_rope"]
      vs.append(stats.verdict(_interval(d), lower_is_better=False))
      parts.append(f"{c} tokens: {_fmt_diff(d, 100, 1)} points")
    if "p075-theta10k" in pr and "rope-theta10k" in pr:
      ctrl = [stats.paired_difference(pr["p075-theta10k"]["probes"]["recall"][c]["seeds"],
                                      pr["rope-theta10k"]["probes"]["recall"][c]["seeds"])
              for c in far]
      parts.append("control at θ = 10k (the removed frequencies barely turn): "
                   + "; ".join(f"{c} tokens: {_fmt_diff(d.to_json(), 100, 1)} points"
                               for c, d in zip(far, ctrl)))
    add("Removing the lowest frequencies helps semantic retrieval beyond the training length "
        "(§6.1, expected by the authors)",
        "0.75-RoPE − RoPE recall exact match at " + "; ".join(parts) + note,
        INCONCLUSIVE if not ok else
        REPRODUCED if "better" in vs and "worse" not in vs else
        CONTRADICTED if "worse" in vs and "better" not in vs else INCONCLUSIVE)
  if "rope-500k" in lm and REFERENCE in lm:
    d = lm["rope-500k"]["ppl_diff_vs_rope"][c1]
    add("θ = 500k beats θ = 10k (Table 2: on Wiki; on FlanV2 it is worse)",
        f"RoPE 500k − RoPE 10k (both scaled) ppl at L: {_fmt_diff(d)}",
        _verdict(stats.verdict(_interval(d))))
  return out


def _fmt_pooled(d: dict[str, float]) -> str:
  w = d["pooled"]
  return f"{100 * w['mean']:.1f}% [{100 * w['lo']:.1f}, {100 * w['hi']:.1f}]"


def markdown(results: dict[str, Any]) -> str:
  """``results.md``: both tables with intervals, baselines, ablations, the ledger, timings."""
  cs = results["contexts"]
  c1 = cs[0]
  steps = results["steps"]
  lm = [e for e in results["rows"] if "ppl" in e]
  pr = [e for e in results["rows"] if "probes" in e]
  lines = [f"# Table 2 at CPU scale: {results['seeds']} seeds per row, L = {results['seq_len']}; "
           f"language modelling {steps['lm']} steps, probes {steps['probe']} steps", ""]
  lines.append("## Language modelling\n\nPerplexity per SentencePiece token on the same "
               f"{results['eval_tokens']:,} held-out targets at every context length "
               "(mean ± 95% t-interval over seeds); Δ = paired difference against RoPE at the "
               "scaled θ [95% CI] and its verdict. Count baselines on the same targets: unigram "
               f"{results['baselines']['unigram']:.2f}, bigram {results['baselines']['bigram']:.2f}.")
  lines.append("")
  head = (["row", "θ"] + [f"ppl {c}" for c in cs] + [f"Δ ppl {c1} vs RoPE", "verdict",
                                                      "paper Wiki", "paper FlanV2"])
  lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for e in lm:
    d = e["ppl_diff_vs_rope"][c1]
    cells = [e["label"], f"{e['theta']:.4g}"]
    cells += [_interval(e["ppl"][c]).fmt(2) for c in cs]
    cells += ["—" if e["key"] == REFERENCE else _fmt_diff(d),
              "reference" if e["key"] == REFERENCE else d["verdict"]]
    cells += [f"{e['paper']['wiki']:.4f}", f"{e['paper']['flan_v2']:.4f}"]
    lines.append("| " + " | ".join(cells) + " |")
  lines.append("")
  behind = [e["label"] for e in lm if not results["beats_bigram"][e["key"]]]
  if behind:
    lines += [f"**Not below the bigram baseline ({results['baselines']['bigram']:.2f}) at this "
              f"budget:** {', '.join(behind)}. These language-modelling comparisons are between "
              "undertrained models; `--full` trains longer (README).", ""]
  else:
    lines += [f"Every row is below the bigram baseline ({results['baselines']['bigram']:.2f}).",
              ""]
  lines += ["## Probes\n\nExact match of the whole answer (every answer token right) on the same "
            f"{results['probe_examples_per_member']} validation examples per member and length; "
            "pooled over seeds with its 95% Wilson interval; Δ = paired difference against RoPE "
            "(per-seed means, 95% t-interval).", ""]
  head = ["row"] + [f"{k} EM {c}" for k in PROBE_KINDS for c in cs] + [
      f"Δ {k} {c1} vs RoPE" for k in PROBE_KINDS]
  lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for e in pr:
    cells = [e["label"]] + [_fmt_pooled(e["probes"][k][c]) for k in PROBE_KINDS for c in cs]
    cells += ["—" if e["key"] == REFERENCE else
              _fmt_diff(e["probes"][k][c1]["diff_vs_rope"], 100, 1) for k in PROBE_KINDS]
    lines.append("| " + " | ".join(cells) + " |")
  if pr and REFERENCE in {e["key"] for e in pr}:
    ref = next(e for e in pr if e["key"] == REFERENCE)
    short = [f"{k} {100 * ref['probes'][k][c1]['mean']:.1f}%" for k in PROBE_KINDS
             if ref["probes"][k][c1]["mean"] < LEARNED]
    if short:
      lines += ["", f"**RoPE has not learned every probe to {100 * LEARNED:.0f}% at L at this "
                f"budget** ({', '.join(short)}): the claims that rest on it are inconclusive; "
                "`--full` trains longer (README)."]
  lines += ["", "## Band ablation at L (a quarter of each row's rotating pairs made identity)", "",
            "Change against the same member unablated: mean over seeds ± 95% t-interval "
            "(ppl from the LM grid, exact match in points from the probe grid).", "",
            "| row | band | Δ ppl | Δ copy EM | Δ recall EM |", "|---|---|---|---|---|"]
  for e in results["rows"]:
    for band in BANDS:
      a = e["ablation"][band]
      fmt = lambda k, *args: _interval(a[k]).fmt(*args) if k in a else "—"  # pylint: disable=cell-var-from-loop
      lines.append(f"| {e['label']} | {'fastest' if band == 'high' else 'slowest'} quarter | "
                   f"{fmt('ppl_change', 2)} | {fmt('copy_change', 1, 100)} | "
                   f"{fmt('recall_change', 1, 100)} |")
  lines += ["", "## Claims ledger", "", "| claim | our numbers | verdict |", "|---|---|---|"]
  lines += [f"| {x['claim']} | {x['evidence']} | **{x['verdict']}** |" for x in results["ledger"]]
  t = results.get("timings", {})
  if t:
    lines += ["", "Wall time (s): " + ", ".join(f"{k[:-2]} {v:.0f}" for k, v in t.items() if k.endswith("_s"))]
  return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], out_dir: str) -> list[str]:
  """The table with error bars, ppl vs context length, probe EM vs length: three PNGs."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  cs = results["contexts"]
  rows = [e for e in results["rows"] if "ppl" in e]
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
    for e in (e for e in results["rows"] if "probes" in e):
      w = [e["probes"][kind][c]["pooled"] for c in cs]
      m = [100 * x["mean"] for x in w]
      err = [[100 * (x["mean"] - x["lo"]) for x in w], [100 * (x["hi"] - x["mean"]) for x in w]]
      ax.errorbar([int(c) for c in cs], m, yerr=err, marker="o", capsize=3, label=e["label"])
    ax.set_xscale("log", base=2)
    ax.set_title(f"{kind}: whole-answer exact match (Wilson 95%)")
    ax.set_xlabel("context length")
  axes[0].set_ylabel("% examples")
  axes[-1].legend(fontsize=7)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, "probes_vs_length.png"))
  fig.savefig(paths[-1], dpi=120)
  plt.close(fig)
  return paths
