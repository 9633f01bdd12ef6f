"""Figures for the analyses (math lives in the sibling modules; this file only draws).

Uses matplotlib's object-oriented API (``matplotlib.figure.Figure``), never ``pyplot``: no global
figure state, no interactive backend, so it runs headless (PNG through Agg) and in tests. Every
function returns a ``Figure``; :func:`save_figure` writes it. Frequency axes are ordered high →
low frequency (chunk 0 = the fastest, as in ``rope.chunk_frequencies``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from rope_jax.analysis.decay import mean_and_stderr

NORM_UNITS = "mean chunk 2-norm ‖x⁽ᵏ⁾‖ (activation units)"


def save_figure(fig: Figure, path: str, *, dpi: int = 120) -> str:
  """Writes ``fig`` to ``path`` (format from the extension), creating folders. Returns ``path``."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=dpi, bbox_inches="tight")  # Long titles never get clipped.
  return path


def _figure(ncols: int, *, width: float = 5.0, height: float = 4.0, nrows: int = 1):
  fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
  axes = fig.subplots(nrows, ncols, squeeze=False)
  return fig, axes.ravel()


def _frequency_axis(ax, freqs: np.ndarray | None, num_chunks: int) -> None:
  """Bottom axis: chunk index; top axis (if ``freqs``): the chunk's frequency in rad/token."""
  ax.set_xlabel("RoPE chunk k (high → low frequency)")
  if freqs is None:
    return
  freqs = np.asarray(freqs)
  ticks = np.unique(np.linspace(0, num_chunks - 1, min(num_chunks, 5)).round().astype(int))
  top = ax.secondary_xaxis("top")
  top.set_ticks(ticks, labels=[f"{freqs[t]:.1e}" if freqs[t] else "0" for t in ticks])
  top.set_xlabel("frequency g_k (rad/token)")
  identity = np.flatnonzero(freqs == 0)
  if identity.size:
    ax.axvline(identity[0] - 0.5, color="w", ls="--", lw=1.5)
    ax.annotate("identity (g = 0) →", (identity[0] - 0.5, 0.02), xycoords=("data", "axes fraction"),
                color="w", ha="right", fontsize=8)


# ----------------------------------------------------------------------------------------------
# §3: decay.


def plot_decay(
    distances: np.ndarray,
    *,
    head_dim: int,
    all_ones: np.ndarray | None = None,
    bound: np.ndarray | None = None,
    iid_gaussian: np.ndarray | None = None,
    repeated_gaussian: np.ndarray | None = None,
    title: str = "",
) -> Figure:
  """Fig. 2 (a, b) and Fig. 9: activation / H against relative distance, one panel per setting.

  Args:
    distances: int ``[R]`` tokens.
    head_dim: H, the normaliser (the all-ones activation at r = 0).
    all_ones: ``[R]`` activations for q = k = 1; ``bound`` ``[R]`` RoFormer's relative bound
      (drawn on a second y axis).
    iid_gaussian: ``[S, R]`` activations, fresh q, k per position; row 0 is drawn, the mean ±2
      standard errors is shaded.
    repeated_gaussian: ``[S, R]`` activations, one (q, k) per row repeated over positions.
  """
  panels = [p for p in (all_ones, iid_gaussian, repeated_gaussian) if p is not None]
  if not panels:
    raise ValueError("give at least one of all_ones, iid_gaussian, repeated_gaussian.")
  fig, axes = _figure(len(panels), width=5.2)
  axes = iter(axes)
  ylabel = f"activation ⟨R(i)q, R(i+r)k⟩ / H  (H = {head_dim})"
  if all_ones is not None:
    ax = next(axes)
    ax.plot(distances, np.asarray(all_ones) / head_dim, lw=0.8, color="C0", label="all-ones q, k")
    ax.set(title="(a) all-ones queries and keys", xlabel="relative distance r (tokens)",
           ylabel=ylabel)
    if bound is not None:
      bound = np.asarray(bound, np.float64)
      ax.plot(distances, bound / bound[0], color="C3", lw=1.5,
              label="RoFormer relative upper bound\n"
                    "(1/(H/2)) Σ_j |S_j|, divided by its r = 0 value")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(loc="upper right", fontsize=8)
  if iid_gaussian is not None:
    ax = next(axes)
    samples = np.asarray(iid_gaussian, np.float64) / head_dim
    ax.plot(distances, samples[0], lw=0.5, color="C1", alpha=0.6, label="one draw")
    if samples.shape[0] > 1:
      mean, se = mean_and_stderr(samples)
      ax.fill_between(distances, mean - 2 * se, mean + 2 * se, color="C0", alpha=0.5, lw=0,
                      label=f"mean ± 2 s.e. over {samples.shape[0]} draws")
      ax.plot(distances, mean, color="C0", lw=0.6)
    ax.axhline(0, color="k", lw=0.5)
    ax.set(title="(b) i.i.d. Gaussian q, k at every position",
           xlabel="relative distance r (tokens)",
           ylabel=ylabel)
    ax.legend(loc="upper right", fontsize=8)
  if repeated_gaussian is not None:
    ax = next(axes)
    samples = np.asarray(repeated_gaussian, np.float64) / head_dim
    for s, curve in enumerate(samples):
      ax.plot(distances, curve, lw=0.6, label=f"pair {s}")
    ax.axhline(0, color="k", lw=0.5)
    ax.set(title="(c) one Gaussian q, k repeated (Fig. 9)", xlabel="relative distance r (tokens)",
           ylabel=ylabel)
    ax.legend(loc="upper right", fontsize=8)
  if title:
    fig.suptitle(title)
  return fig


# ----------------------------------------------------------------------------------------------
# §4: frequency usage.


def plot_frequency_usage(
    usage: Mapping[str, np.ndarray],
    *,
    row_label: str = "layer",
    freqs: np.ndarray | None = None,
    title: str = "",
    units: str = NORM_UNITS,
) -> Figure:
  """Figs 3–4: heatmaps rows × chunks, one panel per entry (e.g. queries, keys, values).

  Args:
    usage: ``{panel title: [rows, H/2]}`` mean chunk norms, chunk 0 = highest frequency.
    row_label: what a row is ("layer" for Fig. 3, "head" for Fig. 4).
    freqs: optional ``[H/2]`` chunk frequencies (rad/token) for the top axis; identity chunks
      (g = 0) are marked.
    units: colour bar label.
  """
  if not usage:
    raise ValueError("usage must hold at least one {name: [rows, H/2]} entry.")
  fig, axes = _figure(len(usage), width=5.5)
  for ax, (name, values) in zip(axes, usage.items()):
    values = np.asarray(values)
    if values.ndim != 2:
      raise ValueError(f"usage[{name!r}] must be [rows, H/2], got shape {values.shape}.")
    image = ax.imshow(values, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0)
    fig.colorbar(image, ax=ax, label=units)
    ax.set_title(name)
    ax.set_ylabel(row_label)
    _frequency_axis(ax, freqs, values.shape[1])
  if title:
    fig.suptitle(title)
  return fig


# ----------------------------------------------------------------------------------------------
# §4–5 on a model: layer × head panels.

SCORE_UNITS = "mean attention weight α (probability)"


def label_rows(fig: Figure, labels: Mapping[str, tuple[str, Sequence[str] | None]]) -> None:
  """Sets the y label (and tick labels) of the panels of ``fig`` titled as in ``labels``."""
  for ax in fig.axes:
    if ax.get_title() in labels:
      ylabel, ticks = labels[ax.get_title()]
      ax.set_ylabel(ylabel)
      if ticks is not None:
        ax.set_yticks(range(len(ticks)), labels=ticks, fontsize=8)


def integer_rows(fig: Figure) -> None:
  """Integer y ticks (layers, heads) on every heatmap panel of ``fig``."""
  from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
  for ax in fig.axes:
    if ax.images:
      ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def plot_head_scores(scores: Mapping[str, np.ndarray], *, title: str = "",
                     statistic: str = "mean") -> Figure:
  """Diagonal / previous-token scores as layer × head heatmaps (0..1), one panel per kind.

  ``statistic`` names how the scores reduce over queries ("mean", or "min" for the paper's
  strict definition).
  """
  panels = {}
  for kind, values in scores.items():
    offset = "α_{i,i}" if kind == "diagonal" else "α_{i,i-1}"
    panels[f"{kind.replace('_', '-')} score ({statistic} {offset})"] = values
  return plot_score_panels(panels, title=title)


def plot_score_panels(panels: Mapping[str, np.ndarray], *, units: str = SCORE_UNITS,
                      title: str = "") -> Figure:
  """Layer × head heatmaps of scores in 0..1, one panel per ``{panel title: [layers, N]}``."""
  fig = Figure(figsize=(5.0 * len(panels), 4.2), layout="constrained")
  axes = fig.subplots(1, len(panels), squeeze=False)[0]
  for ax, (name, values) in zip(axes, panels.items()):
    values = np.asarray(values)
    image = ax.imshow(values, aspect="auto", interpolation="nearest", cmap="magma", vmin=0,
                      vmax=1)
    fig.colorbar(image, ax=ax, label=units)
    ax.set(title=name, xlabel="head", ylabel="layer")
    ax.set_xticks(range(values.shape[1]))
    if values.shape[0] <= 32:
      ax.set_yticks(range(values.shape[0]))
    if values.size <= 256:
      for (l, h), v in np.ndenumerate(values):
        ax.text(h, l, f"{v:.2f}", ha="center", va="center", fontsize=7,
                color="black" if v > 0.6 else "white")
  if title:
    fig.suptitle(title)
  return fig


# ----------------------------------------------------------------------------------------------
# Attention patterns.


def plot_attention(
    attn: np.ndarray | Mapping[str, np.ndarray],
    tokens: Sequence[str] | None = None,
    *,
    title: str = "",
) -> Figure:
  """Attention weights ``[L, L]`` (query rows, key columns), one panel per entry of a mapping.

  Args:
    attn: ``[L, L]`` softmax weights, or ``{panel title: [L, L]}``.
    tokens: optional ``L`` token strings for the tick labels.
  """
  panels = dict(attn) if isinstance(attn, Mapping) else {"": attn}
  fig, axes = _figure(len(panels), width=5.0, height=4.4)
  for ax, (name, weights) in zip(axes, panels.items()):
    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
      raise ValueError(f"attention weights must be [L, L], got shape {weights.shape}.")
    if tokens is not None and len(tokens) != weights.shape[0]:
      raise ValueError(f"tokens must have L = {weights.shape[0]} entries, got {len(tokens)}.")
    image = ax.imshow(weights, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, label="attention weight α_ij (probability)")
    ax.set(title=name, xlabel="key position j", ylabel="query position i")
    if tokens is not None:
      ax.set_xticks(range(len(tokens)), labels=tokens, rotation=90, fontsize=7)
      ax.set_yticks(range(len(tokens)), labels=tokens, fontsize=7)
  if title:
    fig.suptitle(title)
  return fig


# ----------------------------------------------------------------------------------------------
# §5: constructions and Prop. 5.2.


def plot_target_attention_vs_norm(
    norms: np.ndarray,
    curves: Mapping[str, np.ndarray],
    *,
    eps: float,
    sufficient: Mapping[str, float] | None = None,
    title: str = "",
) -> Figure:
  """Thm 5.3: ``min_i α_target`` against ‖ψ‖, one curve per frequency (log x).

  Args:
    norms: ``[S]`` values of ‖ψ‖.
    curves: ``{label: [S]}`` min over queries of α on the target.
    eps: ε; the line ``1 - ε`` is drawn.
    sufficient: optional ``{label: norm}`` closed-form sufficient norms, drawn as dotted lines.
  """
  fig, (ax,) = _figure(1, width=6.5, height=4.5)
  for idx, (label, curve) in enumerate(curves.items()):
    ax.plot(norms, curve, color=f"C{idx}", label=label)
    if sufficient and label in sufficient and np.isfinite(sufficient[label]):
      ax.axvline(sufficient[label], color=f"C{idx}", ls=":", lw=1)
  ax.axhline(1 - eps, color="k", ls="--", lw=0.8, label=f"1 − ε (ε = {eps})")
  ax.set_xscale("log")
  ax.set(xlabel="‖ψ‖ (norm of the query/key chunk)", ylabel="min over queries of α on the target",
         ylim=(0, 1.02), title=title or "attention on the target vs ‖ψ‖ (dotted: sufficient norm)")
  ax.legend(fontsize=8, loc="upper left")
  return fig


def plot_norm_vs_frequency(
    freqs: np.ndarray,
    required: Mapping[str, np.ndarray],
    *,
    sufficient: np.ndarray | None = None,
    title: str = "",
) -> Figure:
  """Thm 5.3: the ‖ψ‖ needed for ``α_target > 1 - ε`` against the chunk frequency (log–log).

  Args:
    freqs: ``[F]`` frequencies in rad/token (> 0).
    required: ``{label: [F]}`` measured needed norms (NaN where not reached).
    sufficient: optional ``[F]`` closed-form sufficient norms.
  """
  fig, (ax,) = _figure(1, width=6.5, height=4.5)
  for label, values in required.items():
    ax.plot(freqs, values, "o-", ms=3, label=label)
  if sufficient is not None:
    ax.plot(freqs, sufficient, "k--", lw=1, label="closed-form sufficient norm")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.invert_xaxis()
  ax.set(xlabel="frequency g (rad/token), high → low", ylabel="‖ψ‖ needed",
         title=title or "norm needed for a positional head vs frequency")
  ax.legend(fontsize=8)
  return fig


def plot_nope_counterexample(
    alpha_nope: np.ndarray, alpha_rope: np.ndarray, *, title: str = "") -> Figure:
  """Prop. 5.2: histograms of α_{3,3} on [bos, x, x] over random heads, NoPE vs RoPE."""
  fig, (ax,) = _figure(1, width=6.5, height=4.5)
  bins = np.linspace(0, 1, 41)
  bins[1:-1] += 1e-6  # Bins are [a, b): keep α = 1/2 (float32-rounded) left of the 1/2 line.
  ax.hist(np.asarray(alpha_nope), bins=bins, alpha=0.7, label="NoPE")
  ax.hist(np.asarray(alpha_rope), bins=bins, alpha=0.7, label="RoPE")
  ax.axvline(0.5, color="k", ls="--", lw=1, label="1/2 (Prop. 5.2 bound)")
  ax.set(xlabel="α₃,₃ on [bos, x, x] (attention of the last token on itself)",
         ylabel="number of random heads",
         title=title or "Prop. 5.2: NoPE never exceeds 1/2")
  ax.legend(fontsize=8)
  return fig


# ----------------------------------------------------------------------------------------------
# §6: semantic channels over long context.


def plot_breaking_distance(
    freq_grid: np.ndarray,
    closed_form: Mapping[str, np.ndarray],
    *,
    simulated: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    markers: Mapping[str, float] | None = None,
    title: str = "",
) -> Figure:
  """Thm 6.1: first distance where a distractor overtakes the target, against frequency (log–log).

  Args:
    freq_grid: ``[G]`` frequencies (rad/token, > 0).
    closed_form: ``{label: [G]}`` breaking distances (tokens).
    simulated: optional ``{label: (freqs, distances)}`` from the kernel simulation (markers).
    markers: optional ``{label: frequency}`` vertical lines (e.g. RoPE's lowest frequency).
  """
  fig, (ax,) = _figure(1, width=7.0, height=4.8)
  for idx, (label, values) in enumerate(closed_form.items()):
    ax.plot(freq_grid, values, color=f"C{idx}", label=f"closed form, {label}")
    if simulated and label in simulated:
      f, r = simulated[label]
      ax.plot(f, r, "o", color=f"C{idx}", mfc="none", ms=6, label=f"simulated, {label}")
  for idx, (label, freq) in enumerate((markers or {}).items()):
    ax.axvline(freq, color="0.35", ls="--", lw=1)
    ax.annotate(label, (freq, 0.98), xycoords=("data", "axes fraction"), fontsize=8, ha="right",
                va="top", rotation=90, color="0.2")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.invert_xaxis()
  ax.text(0.98, 0.03, "p-RoPE identity channel (g = 0):\nnever breaks, r* = ∞",
          transform=ax.transAxes, ha="right", va="bottom", fontsize=9, color="C2",
          bbox=dict(facecolor="white", edgecolor="C2", alpha=0.9))
  ax.set(xlabel="channel frequency g (rad/token), high → low",
         ylabel="breaking distance r* (tokens)",
         title=title or "Thm 6.1: distance at which a distractor overtakes the target")
  ax.legend(fontsize=8, loc="upper left")
  return fig


def plot_channel_attention(
    distances: np.ndarray,
    curves: Mapping[str, np.ndarray],
    *,
    breaking: Mapping[str, float] | None = None,
    title: str = "",
) -> Figure:
  """Thm 6.1: attention on the target against its distance from the query, one curve per channel.

  Args:
    distances: ``[R]`` tokens.
    curves: ``{label: [R]}`` α on the target.
    breaking: optional ``{label: r*}``; finite ones are drawn as thin vertical lines.
  """
  fig, (ax,) = _figure(1, width=7.0, height=4.5)
  for idx, (label, curve) in enumerate(curves.items()):
    ax.plot(distances, curve, color=f"C{idx}", lw=2.5 - 0.7 * (idx % 3),
            ls=("-", "--", ":")[idx % 3], label=label)
    if breaking and np.isfinite(breaking.get(label, np.inf)):
      ax.axvline(breaking[label], color=f"C{idx}", lw=0.8)
  ax.set(xlabel="distance from the query to the target r (tokens)",
         ylabel="attention weight on the target α", ylim=(0, 1.02),
         title=title or "Thm 6.1: a low-frequency channel breaks, an identity one does not")
  ax.legend(fontsize=8, loc="center right")
  return fig
