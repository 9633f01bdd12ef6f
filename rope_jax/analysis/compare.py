"""Several runs or prompt sets side by side: one figure, one table (reviewer T6HH; Fig. 19).

* :func:`plot_compare`: a grid of heatmaps, one column per run (or prompt set), one row per
  quantity (queries, keys, values; or head scores), one colour scale per row shared by the
  columns so they compare directly.
* :func:`band_fractions`: how a mean chunk-norm profile spreads over frequency bands (the share
  of the norm in each band; "how the norm distributions change").
* :func:`plot_profiles`: the per-chunk mean norm of several runs overlaid, one panel per
  quantity (high → low frequency).
* :func:`band_onset`: the fastest chunk where a profile reaches half its maximum (App. C).
* :func:`profile_similarity`: cosine similarity of two usage profiles (Fig. 19: "very similar
  patterns" across domains, as a number).

Figures use matplotlib's object-oriented API (no pyplot), as ``plots``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rope_jax.analysis import cauchy_schwarz as cs


def band_fractions(usage: np.ndarray, bands: Sequence[tuple[int, int]]) -> np.ndarray:
  """Share of a profile's total in each band: ``[..., H/2] -> [..., num_bands]`` (sums to 1)."""
  usage = np.asarray(usage, np.float64)
  sums = cs.band_sums(usage, bands)
  total = sums.sum(-1, keepdims=True)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(total > 0, sums / np.where(total > 0, total, 1.0), np.nan)


def band_onset(profile: np.ndarray, fraction: float = 0.5) -> int:
  """The fastest chunk at which a ``[H/2]`` usage profile reaches ``fraction`` of its maximum.

  Scans high → low frequency; App. C compares where the high-norm low-frequency bands start in
  Llama 3.1 (θ = 500k) and Gemma (θ = 10k). Raises ValueError for an all-zero profile.
  """
  profile = np.asarray(profile, np.float64)
  if profile.ndim != 1 or not np.any(profile > 0):
    raise ValueError(f"profile must be a nonzero [H/2] vector, got shape {profile.shape}.")
  if not 0 < fraction <= 1:
    raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
  return int(np.flatnonzero(profile >= fraction * profile.max())[0])


def profile_similarity(a: np.ndarray, b: np.ndarray) -> float:
  """Cosine similarity of two usage arrays of one shape (1 = the same pattern up to scale)."""
  a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
  if a.shape != b.shape:
    raise ValueError(f"profiles must have one shape, got {np.shape(a)} and {np.shape(b)}.")
  denom = np.linalg.norm(a) * np.linalg.norm(b)
  return float(a @ b / denom) if denom > 0 else float("nan")


def plot_profiles(profiles: Mapping[str, Mapping[str, np.ndarray]], *,
                  panels: Mapping[str, str], freqs: Sequence[np.ndarray | None] | None = None,
                  ylabel: str = "mean chunk 2-norm", title: str = "") -> Any:
  """Per-chunk profiles of several runs overlaid: ``{run: {panel key: [H/2]}}``."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(5.0 * len(panels), 3.8), layout="constrained")
  axes = fig.subplots(1, len(panels), squeeze=False)[0]
  for ax, (key, panel_title) in zip(axes, panels.items()):
    for idx, (run, values) in enumerate(profiles.items()):
      ax.plot(np.asarray(values[key]), color=f"C{idx % 10}", lw=1.2, label=run)
    ax.set(title=panel_title, xlabel="RoPE chunk k (high → low frequency)", ylabel=ylabel)
    if freqs is not None and freqs[0] is not None:
      _frequency_marks(ax, np.asarray(freqs[0]), top_axis=True)
  axes[0].legend(fontsize=7)
  if title:
    fig.suptitle(title)
  return fig


def _frequency_marks(ax: Any, freqs: np.ndarray, *, top_axis: bool) -> None:
  """Marks where the identity (g = 0) chunks start; optionally a top axis in rad/token."""
  identity = np.flatnonzero(freqs == 0)
  if identity.size and identity[0] > 0:
    x = identity[0] - 0.5
    ax.axvline(x, color="0.5", ls="--", lw=1.2)
    ax.annotate("g = 0 →", (x, 0.03), xycoords=("data", "axes fraction"), xytext=(3, 0),
                textcoords="offset points", color="0.5", ha="left", fontsize=7)
  if top_axis:
    ticks = np.unique(np.linspace(0, len(freqs) - 1, min(len(freqs), 4)).round().astype(int))
    top = ax.secondary_xaxis("top")
    top.set_ticks(ticks, labels=[f"{freqs[t]:.0e}" if freqs[t] else "0" for t in ticks])
    top.tick_params(labelsize=7)
    top.set_xlabel("frequency g_k (rad/token)", fontsize=8)


def plot_compare(columns: Sequence[str], panels: Sequence[dict[str, np.ndarray]], *,
                 rows: dict[str, str], xlabel: str, ylabel: str, units: str,
                 fixed_range: tuple[float, float] | None = None, cmap: str = "viridis",
                 freqs: Sequence[np.ndarray | None] | None = None, title: str = "") -> Any:
  """A grid of heatmaps: one column per run, one row per entry of ``rows``.

  Args:
    columns: column titles (one per run).
    panels: per run, ``{row key: [num_rows, num_cols]}``.
    rows: ``{row key: row title}``.
    xlabel, ylabel: axis labels of every panel.
    units: colour bar label; one colour bar (and scale) per row, shared by the runs.
    fixed_range: ``(vmin, vmax)`` for every row; default ``0 .. max over the row``.
    freqs: per run, the ``[H/2]`` chunk frequencies when the columns are RoPE chunks: adds the
      frequency (rad/token) axis on top and marks the identity (g = 0) chunks.
  """
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(3.6 * len(columns) + 1.2, 2.9 * len(rows) + 0.8), layout="constrained")
  axes = fig.subplots(len(rows), len(columns), squeeze=False)
  for r, (key, row_title) in enumerate(rows.items()):
    if fixed_range is None:
      vmax = max(float(np.max(p[key])) for p in panels) or 1.0
      vmin = 0.0
    else:
      vmin, vmax = fixed_range
    image = None
    for c, (column, panel) in enumerate(zip(columns, panels)):
      ax = axes[r, c]
      image = ax.imshow(np.asarray(panel[key]), aspect="auto", interpolation="nearest",
                        cmap=cmap, vmin=vmin, vmax=vmax)
      ax.set_title(f"{column}\n{row_title}" if r == 0 else row_title, fontsize=9)
      if freqs is not None and freqs[c] is not None:
        _frequency_marks(ax, np.asarray(freqs[c]), top_axis=r == 0)
      ax.set_xlabel(xlabel, fontsize=8)
      ax.set_ylabel(ylabel, fontsize=8)
      ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
      ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
      ax.tick_params(labelsize=7)
    fig.colorbar(image, ax=list(axes[r, :]), label=units, shrink=0.9)
  if title:
    fig.suptitle(title)
  return fig
