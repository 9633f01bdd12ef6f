"""rope_jax.rope_scaling against float64 values computed here, from the papers and HF's semantics.

The references below are written pair by pair with ``math`` (no numpy vector code shared with
the module), from the definitions: position interpolation (Chen et al. 2023), NTK-aware and
dynamic NTK (bloc97 / emozilla; HF "dynamic"), YaRN (Peng et al. 2023, HF's ramp over the pair
index between floor/ceil of the β boundaries) and Llama 3.1's piecewise rule.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rope_jax import rope_scaling as rs

LLAMA31 = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
               original_max_position_embeddings=8192)


def ladder(dim, theta):
  return [theta ** (-(2.0 * i) / dim) for i in range(dim // 2)]


def ref_llama3(dim, theta, factor, low_freq_factor, high_freq_factor,
               original_max_position_embeddings):
  out = []
  for g in ladder(dim, theta):
    wavelength = 2 * math.pi / g
    if wavelength < original_max_position_embeddings / high_freq_factor:
      out.append(g)
    elif wavelength > original_max_position_embeddings / low_freq_factor:
      out.append(g / factor)
    else:
      a = (original_max_position_embeddings / wavelength - low_freq_factor) / (
          high_freq_factor - low_freq_factor)
      out.append(a * g + (1 - a) * g / factor)
  return np.array(out)


def ref_yarn(dim, theta, factor, original_max_position_embeddings, beta_fast=32.0,
             beta_slow=1.0, truncate=True):
  l0 = original_max_position_embeddings
  # Pair index where a pair makes exactly `turns` full turns over L0: L0·θ^(-2i/dim) = 2π·turns.
  bound = lambda turns: math.log(l0 / (2 * math.pi * turns)) / math.log(theta) * dim / 2
  lo, hi = bound(beta_fast), bound(beta_slow)
  if truncate:
    lo, hi = math.floor(lo), math.ceil(hi)
  lo, hi = max(lo, 0), min(hi, dim - 1)
  if hi == lo:
    hi = hi + 0.001
  out = []
  for i, g in enumerate(ladder(dim, theta)):
    ramp = min(max((i - lo) / (hi - lo), 0.0), 1.0)  # 0: extrapolate (keep), 1: interpolate.
    out.append((1 - ramp) * g + ramp * g / factor)
  return np.array(out)


def ref_ntk_base(theta, dim, stretch):
  return theta * stretch ** (dim / (dim - 2))


@pytest.mark.parametrize("dim,theta", [(128, 500_000.0), (64, 10_000.0), (256, 1_000_000.0)])
def test_default_and_linear(dim, theta):
  np.testing.assert_allclose(rs.scaled_frequencies(dim, theta), ladder(dim, theta), rtol=1e-15)
  got = rs.scaled_frequencies(dim, theta, "linear", {"factor": 4.0})
  np.testing.assert_allclose(got, np.array(ladder(dim, theta)) / 4.0, rtol=1e-15)


@pytest.mark.parametrize("params", [
    LLAMA31,
    dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
         original_max_position_embeddings=8192),  # Llama 3.2 1B/3B.
    dict(factor=4.0, low_freq_factor=2.0, high_freq_factor=8.0,
         original_max_position_embeddings=1024),
])
@pytest.mark.parametrize("dim,theta", [(128, 500_000.0), (64, 10_000.0)])
def test_llama3_matches_reference(params, dim, theta):
  got = rs.scaled_frequencies(dim, theta, "llama3", params)
  np.testing.assert_allclose(got, ref_llama3(dim, theta, **params), rtol=1e-13, atol=0)


def test_llama31_published_defaults_by_hand():
  """H = 128, θ = 500k: λ_i = 2π·500000^(i/64) crosses 2048 at i ≈ 28.2 and 8192 at i ≈ 35.0."""
  g = np.array(ladder(128, 500_000.0))
  got = rs.scaled_frequencies(128, 500_000.0, "llama3", LLAMA31)
  np.testing.assert_allclose(got[:29], g[:29], rtol=1e-15)  # Fast pairs: untouched.
  np.testing.assert_allclose(got[35:], g[35:] / 8.0, rtol=1e-15)  # Slow pairs: ÷ 8.
  i = 30  # A medium pair, by hand: a = (8192/λ - 1)/3, g' = (a + (1 - a)/8)·g.
  a = (8192 / (2 * math.pi * 500_000.0 ** (i / 64)) - 1) / 3
  assert 0 < a < 1
  assert got[i] == pytest.approx((a + (1 - a) / 8) * g[i], rel=1e-13)
  assert np.all(np.diff(got) < 0)  # Still a strictly decreasing ladder.
  assert rs.attention_factor("llama3", LLAMA31) == 1.0


@pytest.mark.parametrize("params", [
    dict(factor=4.0, original_max_position_embeddings=32_768),  # Qwen2.5 style.
    dict(factor=16.0, original_max_position_embeddings=4096, beta_fast=32.0, beta_slow=1.0),
    dict(factor=8.0, original_max_position_embeddings=2048, beta_fast=16.0, beta_slow=2.0,
         truncate=False),
    dict(factor=40.0, original_max_position_embeddings=4096, mscale=1.0, mscale_all_dim=1.0),
])
@pytest.mark.parametrize("dim,theta", [(128, 1_000_000.0), (64, 10_000.0), (128, 500_000.0)])
def test_yarn_matches_reference(params, dim, theta):
  got = rs.scaled_frequencies(dim, theta, "yarn", params)
  keys = ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "truncate")
  want = ref_yarn(dim, theta, **{k: v for k, v in params.items() if k in keys})
  np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
  g = np.array(ladder(dim, theta))
  ratio = g / got  # 1 (kept) .. factor (interpolated), never outside, monotone in the pair index.
  assert ratio[0] == pytest.approx(1.0) and ratio[-1] == pytest.approx(params["factor"])
  assert np.all(np.diff(ratio) >= -1e-12)


def test_yarn_attention_factor():
  assert rs.attention_factor("yarn", dict(factor=4.0, original_max_position_embeddings=8)) == (
      pytest.approx(0.1 * math.log(4.0) + 1.0))
  assert rs.attention_factor("yarn", dict(factor=1.0, original_max_position_embeddings=8)) == 1.0
  p = dict(factor=40.0, original_max_position_embeddings=4096, mscale=0.707, mscale_all_dim=1.0)
  want = (0.1 * 0.707 * math.log(40) + 1) / (0.1 * math.log(40) + 1)
  assert rs.attention_factor("yarn", p) == pytest.approx(want)
  p = dict(factor=40.0, original_max_position_embeddings=4096, mscale=1.0, mscale_all_dim=1.0)
  assert rs.attention_factor("yarn", p) == pytest.approx(1.0)  # DeepSeek-V3.
  p = dict(factor=4.0, original_max_position_embeddings=4096, attention_factor=1.25)
  assert rs.attention_factor("yarn", p) == 1.25
  assert rs.attention_factor("default") == 1.0


@pytest.mark.parametrize("dim,theta,factor", [(128, 10_000.0, 4.0), (64, 500_000.0, 8.0)])
def test_ntk_aware(dim, theta, factor):
  got = rs.scaled_frequencies(dim, theta, "ntk", {"factor": factor})
  np.testing.assert_allclose(got, ladder(dim, ref_ntk_base(theta, dim, factor)), rtol=1e-13)
  g = ladder(dim, theta)
  assert got[0] == g[0] == 1.0  # The fastest pair is untouched...
  assert got[-1] == pytest.approx(g[-1] / factor, rel=1e-12)  # ...the slowest interpolated by s.


@pytest.mark.parametrize("dim,theta", [(128, 10_000.0), (32, 1_000_000.0)])
def test_dynamic_ntk(dim, theta):
  p = dict(factor=2.0, original_max_position_embeddings=1024)
  g = ladder(dim, theta)
  for n in (None, 1, 512, 1024):  # Up to L0: no change at all.
    np.testing.assert_allclose(rs.scaled_frequencies(dim, theta, "dynamic", p, seq_len=n), g,
                               rtol=1e-14)
  for n in (1025, 2048, 8192):  # Beyond: θ' = θ·(s·n/L0 - (s - 1))^(dim/(dim-2)).
    want = ladder(dim, ref_ntk_base(theta, dim, 2.0 * n / 1024 - 1.0))
    np.testing.assert_allclose(rs.scaled_frequencies(dim, theta, "dynamic", p, seq_len=n), want,
                               rtol=1e-13)
  # At n = s·L0 the dynamic base is larger than the static NTK base (s² - s + 1 > s for s > 1).
  dyn = rs.scaled_frequencies(dim, theta, "dynamic", p, seq_len=2048)
  assert dyn[-1] < rs.scaled_frequencies(dim, theta, "ntk", {"factor": 2.0})[-1]


@pytest.mark.parametrize("rope_type,params,match", [
    ("yarn", dict(factor=0.5, original_max_position_embeddings=8), r"rope\.factor.*>= 1.*0\.5"),
    ("linear", dict(factor=float("nan")), r"rope\.factor"),
    ("sliding", {}, r"rope\.type must be one of .*'sliding'"),
    ("yarn", dict(factor=4.0), r"needs rope\.original_max_position_embeddings"),
    ("llama3", dict(factor=8.0, original_max_position_embeddings=8192, low_freq_factor=1.0),
     r"needs rope\.high_freq_factor"),
    ("linear", dict(factor=2.0, beta_fast=32.0), r"does not take rope\.beta_fast"),
    ("default", dict(factor=2.0), r"does not take rope\.factor"),
    ("llama3", dict(LLAMA31, high_freq_factor=1.0), r"high_freq_factor \(1\.0\) must be >"),
    ("yarn", dict(factor=4.0, original_max_position_embeddings=8, beta_fast=1.0, beta_slow=2.0),
     r"beta_fast \(1\.0\) must be > rope\.beta_slow"),
    ("yarn", dict(factor=4.0, original_max_position_embeddings=8, mscale=1.0),
     r"mscale and rope\.mscale_all_dim go together"),
    ("yarn", dict(factor=4.0, original_max_position_embeddings=8.5),
     r"original_max_position_embeddings must be a positive int.*8\.5"),
    ("yarn", dict(factor=4.0, original_max_position_embeddings=8, attention_factor=-1.0),
     r"rope\.attention_factor must be a finite number > 0"),
    ("dynamic", dict(factor=2.0, original_max_position_embeddings=8, rope_type="x"),
     r"Unknown rope parameter\(s\) \['rope_type'\]"),
])
def test_bad_values_are_named(rope_type, params, match):
  with pytest.raises(ValueError, match=match):
    rs.validate_rope_scaling(rope_type, params)
  with pytest.raises(ValueError, match=match):
    rs.scaled_frequencies(64, 10_000.0, rope_type, params)


def test_none_means_unset_and_ntk_needs_width_above_two():
  rs.validate_rope_scaling("linear", dict(factor=2.0, beta_fast=None, low_freq_factor=None))
  with pytest.raises(ValueError, match="width > 2"):
    rs.scaled_frequencies(2, 10_000.0, "ntk", {"factor": 2.0})
