"""Tests for rope_jax.analysis.decay (§3: Fig. 2, Fig. 9, Props 3.1 and 3.2)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from rope_jax import rope
from rope_jax.analysis import decay
from rope_jax.config.schema import RopeConfig

THETA = 10_000.0


def independent_ladder(head_dim: int, fraction: float, variant: str) -> np.ndarray:
  """Per-pair frequencies written out from SPEC §1 (not from rope.py), identity pairs = 0."""
  half = head_dim // 2
  kept = int(fraction * head_dim // 2)
  if variant == "partial":
    rotated = THETA ** (-2.0 * np.arange(kept) / (2 * kept)) if kept else np.zeros(0)
    return np.concatenate([rotated, np.zeros(half - kept)])
  ladder = THETA ** (-2.0 * np.arange(half) / head_dim)
  if variant == "p_rope":
    return np.where(np.arange(half) < kept, ladder, 0.0)
  return np.where(np.arange(half) >= half - kept, ladder, 0.0)  # reversed


@pytest.mark.parametrize("head_dim,fraction,variant,layout", [
    (64, 1.0, "p_rope", "split_half"), (64, 1.0, "p_rope", "interleaved"),
    (256, 1.0, "p_rope", "split_half"), (64, 0.75, "p_rope", "interleaved"),
    (64, 0.5, "reversed", "split_half"), (64, 0.5, "partial", "split_half"),
    (64, 0.5, "partial", "interleaved"), (64, 0.0, "p_rope", "split_half")])
def test_all_ones_matches_float64_closed_form(head_dim, fraction, variant, layout):
  # All-ones: every pair is (1, 1); rotating it by φ and dotting with (1, 1) gives
  # (1·cos φ − 1·sin φ) + (1·cos φ + 1·sin φ) = 2 cos φ, so a(r) = Σ_k 2 cos(r g_k).
  distances = np.array([0, 1, 2, 3, 7, 10, 50, 100, 999, 2500, 5000])
  got = np.asarray(decay.all_ones_activation(
      distances, head_dim=head_dim,
      rope=RopeConfig(theta=THETA, fraction=fraction, variant=variant, layout=layout)))
  want = 2.0 * np.cos(np.outer(distances, independent_ladder(head_dim, fraction, variant))).sum(1)
  assert got[0] == pytest.approx(head_dim, rel=1e-6)  # a(0) = ⟨1, 1⟩ = H.
  np.testing.assert_allclose(got, want, atol=2e-3 * head_dim)  # float32 angles up to 5000 rad.


def test_all_ones_decays_as_the_roformer_bound_says():
  head_dim = 128
  distances = np.arange(0, 5001)
  ones = np.asarray(decay.all_ones_activation(distances, head_dim=head_dim)) / head_dim
  bound = decay.roformer_relative_upper_bound(distances, head_dim=head_dim)
  assert bound[0] == pytest.approx((head_dim // 2 + 1) / 2)  # Σ_{j=1}^{H/2} j / (H/2).
  # Both fall over log-spaced windows of distance, from 1 at r = 0 towards 0.
  windows = [(1, 10), (10, 100), (100, 1000), (1000, 5001)]
  ones_trend = [np.abs(ones[a:b]).mean() for a, b in windows]
  bound_trend = [bound[a:b].mean() / bound[0] for a, b in windows]
  assert np.all(np.diff(ones_trend) < 0), ones_trend
  assert np.all(np.diff(bound_trend) < 0), bound_trend
  assert ones_trend[-1] < 0.2 and bound_trend[-1] < 0.2
  # For constant q = k the activation is 2·Re S_{H/2}(r), the last partial sum of the bound.
  s_last = np.exp(1j * np.outer(distances, rope.frequency_ladder(head_dim))).sum(1)
  np.testing.assert_allclose(ones * head_dim, 2 * s_last.real, atol=0.1)


def test_iid_gaussian_has_zero_mean_at_every_distance():
  """Prop. 3.2: E[⟨R(i)q, R(j)k⟩] = 0 for independent Gaussian q, k, at every distance."""
  head_dim, num_samples = 32, 2000
  distances = np.array([0, 1, 2, 3, 10, 100, 1000, 5000, 12345])
  samples = decay.iid_gaussian_activation(jax.random.key(0), distances, head_dim=head_dim,
                                          num_samples=num_samples)
  assert samples.shape == (num_samples, len(distances))
  mean, stderr = decay.mean_and_stderr(samples)
  assert np.all(np.abs(mean) < 4 * stderr), mean / stderr
  # The noise has variance H (a sum of H products of independent unit Gaussians): no decay.
  np.testing.assert_allclose(stderr * np.sqrt(num_samples), np.sqrt(head_dim), rtol=0.1)


def test_repeated_gaussian_pair_is_a_fixed_curve_and_aligned_peaks_at_zero():
  """Fig. 9: one pair repeated. Aligned (q = k) it peaks at r = 0; misaligned it need not."""
  distances = np.arange(0, 200)
  curves = decay.repeated_gaussian_activation(jax.random.key(1), distances, head_dim=32,
                                              num_samples=3)
  assert curves.shape == (3, 200)
  assert not np.allclose(curves[0], curves[1])
  q = np.random.default_rng(2).normal(size=(1, 32)).astype(np.float32)
  aligned = np.asarray(decay.rope_activation(q, q, distances))
  assert np.argmax(aligned) == 0
  assert aligned[0] == pytest.approx(float(np.sum(q * q)), rel=1e-5)


@pytest.mark.parametrize("r0", [0, 5, 37])
def test_prop_3_1_any_distance_can_be_the_maximum(r0):
  """Prop. 3.1: the key k = ρ(g)^{-r0} q makes the activation maximal at distance r0."""
  q = np.random.default_rng(3).normal(size=(1, 1, 32)).astype(np.float32)
  k = jax.jit(rope.apply_rope)(q, np.full((1,), -r0))  # R(-r0) q, by the kernel.
  activation = np.asarray(decay.rope_activation(q[0], k[0], np.arange(0, 200)))
  assert np.argmax(activation) == r0
  assert activation[r0] == pytest.approx(float(np.sum(q * q)), rel=1e-4)


def test_activation_is_relative():
  rng = np.random.default_rng(4)
  q, k = rng.normal(size=(5, 32)), rng.normal(size=(5, 32))
  distances = np.array([0, 1, 10, 100, 1000])
  at_0 = decay.rope_activation(q, k, distances)
  at_777 = decay.rope_activation(q, k, distances, query_position=777)
  np.testing.assert_allclose(at_0, at_777, atol=1e-3)


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="distances"):
    decay.all_ones_activation(np.array([0.5, 1.0]), head_dim=8)
  with pytest.raises(ValueError, match="same H"):
    decay.rope_activation(np.ones((2, 8)), np.ones((2, 6)), np.arange(2))
  with pytest.raises(ValueError, match="broadcast"):
    decay.rope_activation(np.ones((3, 8)), np.ones((3, 8)), np.arange(2))
  with pytest.raises(ValueError, match="variant"):
    decay.all_ones_activation(np.arange(3), head_dim=8, rope=RopeConfig(variant="yarn"))
  with pytest.raises(ValueError, match="S >= 2"):
    decay.mean_and_stderr(np.ones((1, 3)))
