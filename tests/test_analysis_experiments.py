"""The closed-form figure scripts under experiments/ run end to end and write their PNGs."""

from __future__ import annotations

import importlib
import os

import pytest
from matplotlib import image as mpimg

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPTS = {
    "fig2_decay": (["--head_dim", "32", "--max_distance", "500", "--num_points", "201",
                    "--num_samples", "4"], ["fig2_decay.png"]),
    "fig_constructions": (["--head_dim", "16", "--seq_len", "8", "--num_heads", "64"],
                          ["thm53_alpha_vs_norm_diagonal.png",
                           "thm53_alpha_vs_norm_previous_token.png",
                           "thm53_norm_vs_frequency.png", "thm53_attention_patterns.png",
                           "prop52_nope_counterexample.png"]),
    "fig_long_context_channel": (["--head_dim", "32", "--num_positions", "600",
                                  "--sim_positions", "300"],
                                 ["thm61_breaking_distance.png", "thm61_channel_attention.png"]),
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_script_writes_its_figures(script, tmp_path, monkeypatch):
  monkeypatch.syspath_prepend(REPO_ROOT)  # `python -m experiments.<script>` runs from the root.
  flags, pngs = SCRIPTS[script]
  written = importlib.import_module(f"experiments.{script}").main(["--out", str(tmp_path), *flags])
  assert sorted(os.path.basename(p) for p in written) == sorted(pngs)
  for png in pngs:
    pixels = mpimg.imread(str(tmp_path / png))
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200 and pixels[..., :3].std() > 0.05
