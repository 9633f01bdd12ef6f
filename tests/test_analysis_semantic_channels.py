"""Tests for rope_jax.analysis.semantic_channels (§6: Thm 6.1)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rope_jax import rope
from rope_jax.analysis import semantic_channels as sc
from rope_jax.config.schema import RopeConfig

MARGINS = (0.5, 0.9, 0.99)


def first_break_float64(freq: float, margin: float, max_distance: int) -> float:
  """Brute force: the first r >= 1 with cos(r g) < m (the distractor at Δ = 0 wins)."""
  r = np.arange(1, max_distance + 1)
  hit = np.flatnonzero(np.cos(r * freq) < margin)
  return float(r[hit[0]]) if hit.size else math.inf


@pytest.mark.parametrize("margin", MARGINS)
def test_closed_form_matches_brute_force(margin):
  freqs = np.concatenate([rope.frequency_ladder(64), [math.pi, 2.5, 0.3, 1e-3]])
  got = sc.breaking_distance(freqs, margin)
  want = [first_break_float64(g, margin, 20_000) for g in freqs]
  np.testing.assert_array_equal(got, want)


def test_closed_form_matches_the_kernel_simulation():
  num_positions = 600
  tested = 0
  for margin in MARGINS:
    for freq in rope.frequency_ladder(64)[::3]:
      r_star = sc.breaking_distance(freq, margin)
      ratio = math.acos(margin) / freq
      if r_star > num_positions or min(ratio % 1, 1 - ratio % 1) < 1e-3:
        continue  # Out of range, or a near-tie float32 cannot call.
      sim = sc.simulate_channel(freq, num_positions, margin=margin, norm=3.0)
      assert sim.breaking_distance == r_star, (margin, freq)
      tested += 1
  assert tested >= 10


def test_rope_lowest_frequency_breaks_and_p_rope_identity_never_does():
  head_dim, num_positions = 64, 3500
  lowest = sc.channel_frequency(head_dim, head_dim // 2 - 1)
  identity = sc.channel_frequency(head_dim, head_dim // 2 - 1, rope=RopeConfig(fraction=0.75))
  assert lowest == pytest.approx(10_000.0 ** (-62 / 64)) and identity == 0.0
  margin, norm = 0.9, math.sqrt(20 / (1 - 0.9))
  rope_sim = sc.simulate_channel(lowest, num_positions, margin=margin, norm=norm)
  p_rope_sim = sc.simulate_channel(identity, num_positions, margin=margin, norm=norm)
  assert rope_sim.breaking_distance == sc.breaking_distance(lowest, margin) < num_positions
  assert p_rope_sim.breaking_distance == sc.breaking_distance(identity, margin) == math.inf
  # Thm 6.1: the RoPE channel loses the target, the identity channel keeps it at every distance.
  assert rope_sim.target_attention[0] > 0.99 and rope_sim.target_attention[-1] < 1e-3
  assert np.all(p_rope_sim.target_attention > 0.99)
  assert np.all(p_rope_sim.target_logit > p_rope_sim.max_distractor_logit)


def test_larger_theta_breaks_later():
  r_10k = sc.breaking_distance(sc.channel_frequency(256, 127, rope=RopeConfig(theta=1e4)), 0.9)
  r_500k = sc.breaking_distance(sc.channel_frequency(256, 127, rope=RopeConfig(theta=5e5)), 0.9)
  assert r_500k > 40 * r_10k


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="margin"):
    sc.breaking_distance(0.1, 1.0)
  with pytest.raises(ValueError, match="freq"):
    sc.breaking_distance(4.0, 0.5)
  with pytest.raises(ValueError, match="freq"):
    sc.simulate_channel(-0.1, 10, margin=0.5)
  with pytest.raises(ValueError, match="num_positions"):
    sc.simulate_channel(0.1, 0, margin=0.5)
  with pytest.raises(ValueError, match="chunk"):
    sc.channel_frequency(8, 4)
