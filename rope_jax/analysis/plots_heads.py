"""Figures of one head's anatomy and of head types (math: ``cauchy_schwarz``, ``head_types``).

Object-oriented matplotlib only (no pyplot), as ``plots``; every function returns a ``Figure``
(``plots.save_figure`` writes it). Chunk axes run high → low frequency.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

KIND_COLOURS = {"bos": "C3", "diagonal": "C0", "previous_token": "C1", "marker": "C2",
                "other": "0.45"}


def plot_cauchy_schwarz(summary: Mapping[str, Mapping[str, np.ndarray | int]],
                        band_by_kind: Mapping[str, np.ndarray], band_labels: Sequence[str], *,
                        title: str = "") -> Figure:
  """Tables 3–5 as a figure: three panels.

  (a) mean per-chunk activation ``q^{(k)}·k^{(k)}`` (solid) and its Cauchy–Schwarz bound
  ``‖q^{(k)}‖‖k^{(k)}‖`` (dashed) per pair kind; (b) their ratio (alignment, ±1 = at the bound);
  (c) mean contribution of each frequency band to the attention logit, per pair kind.
  """
  fig = Figure(figsize=(16.5, 4.3), layout="constrained")
  ax_a, ax_b, ax_c = fig.subplots(1, 3)
  for kind, s in summary.items():
    if not s["count"]:
      continue
    colour = KIND_COLOURS.get(kind, None)
    label = f"{kind} ({s['count']} pairs)"
    ax_a.plot(s["activation"], color=colour, lw=1.3, label=f"{label}: activation")
    ax_a.plot(s["bound"], color=colour, lw=1.0, ls="--")
    ax_b.plot(s["alignment"], color=colour, lw=1.3, label=label)
  ax_a.axhline(0, color="k", lw=0.5)
  ax_a.set(title="(a) mean q⁽ᵏ⁾·k⁽ᵏ⁾ (solid) vs bound ‖q⁽ᵏ⁾‖‖k⁽ᵏ⁾‖ (dashed)",
           xlabel="RoPE chunk k (high → low frequency)", ylabel="activation (raw dot product)")
  ax_a.legend(fontsize=7)
  ax_b.axhline(0, color="k", lw=0.5)
  ax_b.set(title="(b) alignment: mean activation / mean bound", ylim=(-1.05, 1.05),
           xlabel="RoPE chunk k (high → low frequency)", ylabel="ratio (1 = at the bound)")
  kinds = [k for k in band_by_kind if np.all(np.isfinite(band_by_kind[k]))]
  width = 0.8 / max(len(kinds), 1)
  x = np.arange(len(band_labels))
  for idx, kind in enumerate(kinds):
    ax_c.bar(x + (idx - (len(kinds) - 1) / 2) * width, band_by_kind[kind], width,
             color=KIND_COLOURS.get(kind, None), label=kind)
  ax_c.axhline(0, color="k", lw=0.5)
  ax_c.set_xticks(x, labels=band_labels, rotation=20, fontsize=7)
  ax_c.set(title="(c) mean contribution of each band to the logit",
           ylabel="logit contribution (scaled)")
  ax_c.legend(fontsize=7)
  if title:
    fig.suptitle(title)
  return fig


def plot_band_contributions(entries: Sequence[tuple[str, Mapping[str, np.ndarray]]],
                            band_labels: Sequence[str], *, title: str = "") -> Figure:
  """Which bands carry what: one panel per head (``(label, {kind: [num_bands]})``)."""
  if not entries:
    raise ValueError("entries must hold at least one (label, {kind: [bands]}) head.")
  fig = Figure(figsize=(4.6 * len(entries), 3.9), layout="constrained")
  axes = fig.subplots(1, len(entries), squeeze=False)[0]
  x = np.arange(len(band_labels))
  for ax, (label, by_kind) in zip(axes, entries):
    kinds = [k for k in by_kind if np.all(np.isfinite(by_kind[k]))]
    width = 0.8 / max(len(kinds), 1)
    for idx, kind in enumerate(kinds):
      ax.bar(x + (idx - (len(kinds) - 1) / 2) * width, by_kind[kind], width,
             color=KIND_COLOURS.get(kind, None), label=f"key: {kind}")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(x, labels=band_labels, rotation=20, fontsize=7)
    ax.set(title=label, ylabel="mean logit contribution")
    ax.legend(fontsize=7)
  if title:
    fig.suptitle(title)
  return fig
