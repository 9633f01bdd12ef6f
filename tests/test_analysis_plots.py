"""Every figure of rope_jax.analysis.plots is written as a readable, non-trivial PNG."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import image as mpimg

from rope_jax import rope
from rope_jax.analysis import plots


def assert_png(fig, path) -> None:
  plots.save_figure(fig, str(path))
  pixels = mpimg.imread(str(path))
  assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 200, pixels.shape
  assert pixels[..., :3].std() > 0.05  # Not a blank canvas.
  panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
  assert fig.get_suptitle() or all(ax.get_title() for ax in panels)  # Every figure is titled.
  assert all(ax.get_xlabel() and ax.get_ylabel() for ax in panels)


def labelled(fig) -> list[str]:
  """Axis labels of every axes, colour bars included."""
  return [ax.get_xlabel() + "|" + ax.get_ylabel() for ax in fig.axes]


def test_decay_plot(tmp_path):
  distances = np.arange(0, 300)
  curve = np.cos(distances / 30.0) * 16
  rng = np.random.default_rng(0)
  fig = plots.plot_decay(distances, head_dim=16, all_ones=curve, bound=np.linspace(8, 2, 300),
                         iid_gaussian=rng.normal(size=(4, 300)),
                         repeated_gaussian=rng.normal(size=(2, 300)), title="decay")
  assert len(fig.axes) == 3 and all("distance" in ax.get_xlabel() for ax in fig.axes)
  assert_png(fig, tmp_path / "decay.png")
  with pytest.raises(ValueError, match="at least one"):
    plots.plot_decay(distances, head_dim=16)


def test_frequency_usage_heatmaps_have_colour_bars_with_units(tmp_path):
  rng = np.random.default_rng(0)
  usage = {name: rng.random((6, 16)) for name in ("queries", "keys", "values")}
  freqs = rope.chunk_frequencies(32, fraction=0.75)
  fig = plots.plot_frequency_usage(usage, row_label="layer", freqs=freqs, title="Fig. 3")
  colour_bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
  assert len(colour_bars) == 3 and all(ax.get_ylabel() == plots.NORM_UNITS for ax in colour_bars)
  assert any("high → low" in label for label in labelled(fig))
  assert_png(fig, tmp_path / "usage.png")
  with pytest.raises(ValueError, match="rows, H/2"):
    plots.plot_frequency_usage({"q": np.ones(4)})


def test_attention_plot_with_tokens(tmp_path):
  attn = np.tril(np.ones((5, 5)))
  attn /= attn.sum(-1, keepdims=True)
  tokens = ["<bos>", "The", "cat", "'", "s"]
  fig = plots.plot_attention(attn, tokens, title="layer 1 head 5")
  assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == tokens
  assert any("attention weight" in label for label in labelled(fig))
  assert_png(fig, tmp_path / "attention.png")
  assert_png(plots.plot_attention({"a": attn, "b": attn.T}), tmp_path / "two.png")
  with pytest.raises(ValueError, match="tokens"):
    plots.plot_attention(attn, tokens[:2])
  with pytest.raises(ValueError, match=r"\[L, L\]"):
    plots.plot_attention(np.ones((2, 3)))


def test_construction_and_channel_plots(tmp_path):
  norms = np.logspace(-1, 2, 50)
  curve = 1 - np.exp(-norms / 10)
  assert_png(plots.plot_target_attention_vs_norm(norms, {"g = 1": curve}, eps=0.05,
                                                 sufficient={"g = 1": 30.0}), tmp_path / "a.png")
  freqs = rope.frequency_ladder(16)
  assert_png(plots.plot_norm_vs_frequency(freqs, {"diagonal": 1 / freqs}, sufficient=2 / freqs),
             tmp_path / "b.png")
  rng = np.random.default_rng(0)
  assert_png(plots.plot_nope_counterexample(rng.random(100) / 2, rng.random(100)),
             tmp_path / "c.png")
  grid = np.logspace(-5, 0, 50)
  assert_png(plots.plot_breaking_distance(grid, {"m = 0.9": 0.45 / grid},
                                          simulated={"m = 0.9": (grid[::10], 0.45 / grid[::10])},
                                          markers={"RoPE lowest": 1e-4}), tmp_path / "d.png")
  distances = np.arange(1, 200)
  assert_png(plots.plot_channel_attention(distances, {"RoPE": np.exp(-distances / 50.0),
                                                      "p-RoPE": np.ones(199)},
                                          breaking={"RoPE": 100.0, "p-RoPE": np.inf}),
             tmp_path / "e.png")
