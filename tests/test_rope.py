"""rope_jax.rope against a float64 RoFormer reference, invariants and exact values."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rope_jax import rope
from rope_jax import rope_scaling
from tests import reference

VARIANTS = ("p_rope", "reversed", "partial")
LAYOUTS = ("split_half", "interleaved")


def _inputs(shape=(2, 9, 3, 16), seed=0, max_pos=50):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(shape).astype(np.float32)
  pos = rng.integers(0, max_pos, size=shape[:2]).astype(np.int32)
  return x, pos


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("theta", [10_000.0, 500_000.0, 100.0])
def test_matches_float64_roformer_reference(variant, layout, fraction, theta):
  x, pos = _inputs(shape=(2, 7, 3, 32))
  got = rope.apply_rope(jnp.asarray(x), jnp.asarray(pos), theta=theta, fraction=fraction,
                        variant=variant, layout=layout)
  want = reference.rope(x, pos, theta=theta, fraction=fraction, variant=variant, layout=layout)
  np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=2e-5)


@pytest.mark.parametrize("last", [8192, 2**20])
def test_large_positions_stay_accurate(last):
  """Angles are exact (fixed-point turns): at 8k and at 1M positions the rotation is as accurate
  as at position 0 (float32 angles were ~1e-3 rad off at 8k and ~5e-2 at 1M)."""
  x, _ = _inputs(shape=(1, 64, 2, 256))
  pos = np.arange(last - 64, last, dtype=np.int32)[None]
  got = rope.apply_rope(jnp.asarray(x), jnp.asarray(pos))
  want = reference.rope(x, pos)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_preserves_norm_of_every_pair(variant, layout):
  x, pos = _inputs(shape=(2, 11, 2, 64))
  y = np.asarray(rope.apply_rope(jnp.asarray(x), jnp.asarray(pos), fraction=0.5, variant=variant,
                                 layout=layout))
  _, r = reference.frequencies(64, 10_000.0, 0.5, variant)
  pairs = reference.pair_indices(r, layout) + [(i, i) for i in range(r, 64)]
  for i, j in pairs:  # (i, i) = a pass-through dim: |y_i| = |x_i|.
    np.testing.assert_allclose(np.hypot(y[..., i], y[..., j]), np.hypot(x[..., i], x[..., j]),
                               rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_scores_depend_only_on_relative_position(variant, layout):
  """<R(m)q, R(n)k> = <R(m+c)q, R(n+c)k> for every shift c."""
  rng = np.random.default_rng(1)
  q = jnp.asarray(rng.standard_normal((1, 1, 1, 64)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((1, 1, 1, 64)), jnp.float32)

  def score(m, n):
    kw = dict(fraction=0.75, variant=variant, layout=layout)
    qm = rope.apply_rope(q, jnp.full((1, 1), m), **kw)
    kn = rope.apply_rope(k, jnp.full((1, 1), n), **kw)
    return float(jnp.sum(qm * kn))

  for m, n in [(5, 2), (100, 3), (7, 7), (0, 40)]:
    base = score(m, n)
    for c in (1, 17, 1000):
      assert score(m + c, n + c) == pytest.approx(base, abs=2e-4 * (1 + abs(base)))


def _gemma_style_full_rope(x, positions, theta):
  """The straightforward Gemma formulation (SPEC.md §1.2) with p = 1, written out here."""
  h = x.shape[-1]
  timescale = theta ** (2 * jnp.arange(h // 2, dtype=jnp.float32) / h)
  inp = positions[..., None].astype(jnp.float32) / timescale
  sin, cos = jnp.sin(inp)[..., None, :], jnp.cos(inp)[..., None, :]
  a, b = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def test_p1_is_full_rope_and_p0_is_identity_bit_exact():
  x, pos = _inputs(shape=(2, 13, 4, 64))
  x, pos = jnp.asarray(x), jnp.asarray(pos)
  full = rope.apply_rope(x, pos, fraction=1.0)
  # Gemma computes θ^(2i/H) in float32; ours comes from float64, so angles differ by ~1 ulp.
  np.testing.assert_allclose(full, _gemma_style_full_rope(x, pos, 10_000.0), atol=1e-5)
  for variant in VARIANTS:
    np.testing.assert_array_equal(rope.apply_rope(x, pos, fraction=0.0, variant=variant), x)
  np.testing.assert_array_equal(rope.apply_rope(x, pos, fraction=1.0, variant="reversed"), full)
  np.testing.assert_allclose(rope.apply_rope(x, pos, fraction=1.0, variant="partial"), full,
                             atol=1e-6)


def test_p075_h256_passes_exactly_the_lowest_chunks_through():
  """H = 256, p = 0.75: dims {96..127} ∪ {224..255} untouched; the rest equal full RoPE."""
  x, pos = _inputs(shape=(2, 5, 2, 256), max_pos=5000)
  x, pos = jnp.asarray(x), jnp.asarray(pos)
  out = np.asarray(rope.apply_rope(x, pos, fraction=0.75))
  full = np.asarray(rope.apply_rope(x, pos, fraction=1.0))
  identity = np.r_[96:128, 224:256]
  rotated = np.setdiff1d(np.arange(256), identity)
  np.testing.assert_array_equal(out[..., identity], np.asarray(x)[..., identity])
  np.testing.assert_array_equal(out[..., rotated], full[..., rotated])
  assert not np.allclose(out[..., rotated], np.asarray(x)[..., rotated])


def test_reversed_keeps_only_the_lowest_frequencies():
  x, pos = _inputs(shape=(1, 6, 1, 256), max_pos=5000)
  out = np.asarray(rope.apply_rope(jnp.asarray(x), jnp.asarray(pos), fraction=0.75,
                                   variant="reversed"))
  full = np.asarray(rope.apply_rope(jnp.asarray(x), jnp.asarray(pos)))
  identity = np.r_[0:32, 128:160]  # The fastest 25% of the chunks.
  rotated = np.setdiff1d(np.arange(256), identity)
  np.testing.assert_array_equal(out[..., identity], x[..., identity])
  np.testing.assert_array_equal(out[..., rotated], full[..., rotated])


def test_partial_rotary_respreads_the_ladder_over_the_rotated_dims():
  """NeoX rotary_pct = 0.75 on H = 256: dims [0, 192) rotate with θ^(-2i/192), rest pass."""
  freqs, r = rope.rotary_frequencies(256, fraction=0.75, variant="partial")
  assert r == 192
  np.testing.assert_allclose(freqs, 10_000.0 ** (-np.arange(96) / 96.0), rtol=1e-12)
  assert freqs[-1] == pytest.approx(10_000.0 ** (-190 / 192))  # Keeps a ~1/θ slowest frequency.
  p_freqs, _ = rope.rotary_frequencies(256, fraction=0.75, variant="p_rope")
  assert p_freqs[95] == pytest.approx(10_000.0 ** (-190 / 256))  # p-RoPE's slowest kept (SPEC).
  x, pos = _inputs(shape=(1, 4, 1, 256))
  out = np.asarray(rope.apply_rope(jnp.asarray(x), jnp.asarray(pos), fraction=0.75,
                                   variant="partial"))
  np.testing.assert_array_equal(out[..., 192:], x[..., 192:])


def test_gemma_upstream_golden_value():
  """gemma's rope_proportion test: H=4, base 100, position 1, p=0.5 on ones."""
  x = jnp.ones((1, 1, 1, 4), jnp.float32)
  out = np.asarray(rope.apply_rope(x, jnp.ones((1, 1), jnp.int32), theta=100, fraction=0.5))
  c, s = np.cos(1.0), np.sin(1.0)
  np.testing.assert_allclose(out.ravel(), [c - s, 1.0, s + c, 1.0], rtol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_interleaved_equals_split_half_up_to_the_pair_permutation(variant):
  h = 32
  perm = np.ravel(np.stack([np.arange(h // 2), np.arange(h // 2) + h // 2], axis=1))
  x, pos = _inputs(shape=(2, 5, 3, h))
  if variant == "partial":  # The pairing permutation lives inside the rotated width.
    r = 2 * int(0.5 * h // 2)
    perm = np.r_[np.ravel(np.stack([np.arange(r // 2), np.arange(r // 2) + r // 2], axis=1)),
                 np.arange(r, h)]
  kw = dict(fraction=0.5, variant=variant)
  split = np.asarray(rope.apply_rope(jnp.asarray(x), jnp.asarray(pos), layout="split_half", **kw))
  inter = np.asarray(rope.apply_rope(jnp.asarray(x[..., perm]), jnp.asarray(pos),
                                     layout="interleaved", **kw))
  np.testing.assert_array_equal(inter, split[..., perm])


def test_bfloat16_computes_in_float32_and_keeps_dtype():
  x, pos = _inputs(shape=(2, 8, 2, 64), max_pos=4000)
  xb = jnp.asarray(x, jnp.bfloat16)
  out = rope.apply_rope(xb, jnp.asarray(pos), fraction=0.75)
  assert out.dtype == jnp.bfloat16
  want = rope.apply_rope(xb.astype(jnp.float32), jnp.asarray(pos), fraction=0.75)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(want.astype(jnp.bfloat16)))


def test_packed_positions_match_documents_run_alone():
  x, _ = _inputs(shape=(1, 10, 2, 16))
  packed_pos = np.array([[0, 1, 2, 3, 0, 1, 2, 0, 1, 2]], np.int32)
  packed = np.asarray(rope.apply_rope(jnp.asarray(x), jnp.asarray(packed_pos)))
  for start, end in [(0, 4), (4, 7), (7, 10)]:
    alone = rope.apply_rope(jnp.asarray(x[:, start:end]), jnp.arange(end - start)[None])
    np.testing.assert_array_equal(packed[:, start:end], np.asarray(alone))


def test_scale_factor_interpolates_positions():
  x, pos = _inputs(shape=(1, 6, 1, 16))
  got = rope.apply_rope(jnp.asarray(x), jnp.asarray(pos), scale_factor=4.0)
  np.testing.assert_allclose(got, reference.rope(x, pos, scale_factor=4.0), atol=2e-5)


def test_jit_grad_and_vmap():
  x, pos = _inputs(shape=(3, 5, 2, 16))
  x, pos = jnp.asarray(x), jnp.asarray(pos)
  f = lambda x, p: rope.apply_rope(x, p, fraction=0.75)
  np.testing.assert_allclose(jax.jit(f)(x, pos), f(x, pos), atol=1e-6)
  np.testing.assert_allclose(jax.vmap(f)(x, pos), f(x, pos), atol=1e-6)
  # Rotations are orthogonal, so d/dx ||R x||² = 2x.
  grad = jax.grad(lambda x: jnp.sum(jnp.square(f(x, pos))))(x)
  np.testing.assert_allclose(grad, 2 * x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(fraction=1.5), "fraction p must be in"),
    (dict(fraction=-0.1), "fraction p must be in"),
    (dict(theta=0.0), "theta"),
    (dict(theta=-5.0), "theta"),
    (dict(scale_factor=0.5), "scale_factor"),
    (dict(variant="yarn"), "variant must be one of"),
    (dict(layout="diagonal"), "layout must be one of"),
])
def test_bad_hyperparameters_raise_before_compile(kwargs, match):
  x, pos = _inputs()
  with pytest.raises(ValueError, match=match):
    jax.jit(lambda x, p: rope.apply_rope(x, p, **kwargs)).lower(x, pos)


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match="head_dim must be a positive even int, got 15"):
    rope.apply_rope(jnp.zeros((1, 2, 1, 15)), jnp.zeros((1, 2), jnp.int32))
  with pytest.raises(ValueError, match=r"positions must have shape \(1, 2\)"):
    rope.apply_rope(jnp.zeros((1, 2, 1, 16)), jnp.zeros((1, 3), jnp.int32))
  with pytest.raises(ValueError, match="at least 3 dims"):
    rope.apply_rope(jnp.zeros((2, 16)), jnp.zeros((2,), jnp.int32))


def test_chunk_frequencies_mark_identity_chunks():
  f = rope.chunk_frequencies(256, fraction=0.75)
  assert np.count_nonzero(f) == 96 and np.all(f[96:] == 0) and f[0] == 1.0
  f = rope.chunk_frequencies(256, fraction=0.75, variant="partial")
  assert np.count_nonzero(f) == 96 and np.all(f[96:] == 0)
  x = jnp.arange(8.0).reshape(1, 8)
  np.testing.assert_array_equal(rope.to_pairs(x, "split_half")[0], [[0, 4], [1, 5], [2, 6], [3, 7]])
  np.testing.assert_array_equal(rope.to_pairs(x, "interleaved")[0], [[0, 1], [2, 3], [4, 5], [6, 7]])


@pytest.mark.parametrize("offset", [0, 5000, -3])
def test_positions_outside_the_row_length_are_exact(offset):
  """Tables are evaluated at every position, whatever its value (decoding offsets, anything):
  positions outside [0, L) agree with the float64 reference just like those inside."""
  x, _ = _inputs(shape=(2, 16, 2, 32))
  pos = np.broadcast_to(np.arange(16) + offset, (2, 16)).astype(np.int32)
  got = jax.jit(lambda x, p: rope.apply_rope(x, p, fraction=0.75))(jnp.asarray(x), jnp.asarray(pos))
  np.testing.assert_allclose(np.asarray(got), reference.rope(x, pos, fraction=0.75), atol=2e-5)
  decode = rope.apply_rope(jnp.asarray(x[:, :1]), jnp.asarray(pos[:, 5:6]), fraction=0.75)
  np.testing.assert_allclose(np.asarray(decode), reference.rope(x[:, :1], pos[:, 5:6],
                                                                fraction=0.75), atol=2e-5)


# --- context extension (rope_type) -----------------------------------------------------------


def _rotate_reference(x, positions, freqs):
  """float64 split-half rotation of ``x [B, L, N, H]`` with the given per-pair frequencies."""
  x = np.asarray(x, np.float64)
  out = x.copy()
  for k, (i, j) in enumerate(reference.pair_indices(x.shape[-1], "split_half")):
    phi = np.asarray(positions, np.float64)[..., None] * freqs[k]
    out[..., i] = np.cos(phi) * x[..., i] - np.sin(phi) * x[..., j]
    out[..., j] = np.sin(phi) * x[..., i] + np.cos(phi) * x[..., j]
  return out


@pytest.mark.parametrize("rope_type, params", [
    ("linear", dict(factor=4.0)),
    ("ntk", dict(factor=4.0)),
    ("yarn", dict(factor=8.0, original_max_position_embeddings=64)),
    ("llama3", dict(factor=8.0, original_max_position_embeddings=64, low_freq_factor=1.0,
                    high_freq_factor=4.0)),
])
@pytest.mark.parametrize("fraction", [1.0, 0.75])
def test_scaled_ladder_is_applied_then_p_rope_removes_the_slowest(rope_type, params, fraction):
  x, pos = _inputs(shape=(2, 9, 3, 32), max_pos=5000)
  scaled = rope_scaling.scaled_frequencies(32, 10_000.0, rope_type, params)
  kept = int(fraction * 16)
  freqs = np.where(np.arange(16) < kept, scaled, 0.0)
  got = rope.apply_rope(jnp.asarray(x), jnp.asarray(pos), fraction=fraction, rope_type=rope_type,
                        rope_params=params)
  np.testing.assert_allclose(np.asarray(got), _rotate_reference(x, pos, freqs), atol=2e-5)
  chunks = rope.chunk_frequencies(32, fraction=fraction, rope_type=rope_type, rope_params=params)
  np.testing.assert_array_equal(chunks, freqs)


def test_linear_type_equals_scale_factor_and_dynamic_reads_the_length():
  x, pos = _inputs(shape=(1, 16, 2, 32), max_pos=16)
  a = rope.apply_rope(jnp.asarray(x), jnp.asarray(pos), scale_factor=4.0)
  b = rope.apply_rope(jnp.asarray(x), jnp.asarray(pos), rope_type="linear",
                      rope_params=dict(factor=4.0))
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  dyn = dict(factor=2.0, original_max_position_embeddings=8)
  short = rope.apply_rope(jnp.asarray(x), jnp.asarray(pos), rope_type="dynamic", rope_params=dyn,
                          seq_len=8)
  plain = rope.apply_rope(jnp.asarray(x), jnp.asarray(pos))
  np.testing.assert_array_equal(np.asarray(short), np.asarray(plain))  # Up to L0: no change.
  long = rope.apply_rope(jnp.asarray(x), jnp.asarray(pos), rope_type="dynamic", rope_params=dyn)
  assert np.abs(np.asarray(long) - np.asarray(plain)).max() > 1e-3  # L = 16 > L0: rescaled.


@pytest.mark.parametrize("kwargs, match", [
    (dict(rope_type="yarn", rope_params=dict(factor=0.5, original_max_position_embeddings=8)),
     r"rope\.factor must be a finite number >= 1.0 for rope type 'yarn', got 0\.5"),
    (dict(rope_type="rotary"), r"rope\.type must be one of"),
    (dict(rope_type="linear", rope_params=dict(factor=2.0), scale_factor=2.0),
     r"scale_factor=2\.0 .* cannot be combined with rope type 'linear'"),
])
def test_bad_scaling_is_rejected_before_tracing(kwargs, match):
  with pytest.raises(ValueError, match=match):
    rope.apply_rope(jnp.zeros((1, 4, 1, 16)), jnp.zeros((1, 4), jnp.int32), **kwargs)


def test_sincos_matches_float64_and_is_exact_at_zero():
  """The vectorised cos/sin of float32 angles against float64 numpy, every quadrant, both signs."""
  angles = np.concatenate([np.linspace(-40.0, 40.0, 20_001), np.arange(0, 8192) * 0.9,
                           -np.arange(0, 8192) * 1.1, np.linspace(-1e5, 1e5, 10_001),
                           np.arange(8) * np.pi / 4]).astype(np.float32)
  cos, sin = jax.jit(rope.sincos)(jnp.asarray(angles))
  np.testing.assert_allclose(np.asarray(cos), np.cos(angles.astype(np.float64)), rtol=0, atol=2e-7)
  np.testing.assert_allclose(np.asarray(sin), np.sin(angles.astype(np.float64)), rtol=0, atol=2e-7)
  cos0, sin0 = rope.sincos(jnp.zeros((3,), jnp.float32))
  np.testing.assert_array_equal(cos0, 1.0)
  np.testing.assert_array_equal(sin0, 0.0)


def test_tables_have_no_data_dependent_branch():
  """One direct evaluation for every position: the jaxpr has no cond and no gather."""
  jaxpr = str(jax.make_jaxpr(lambda p: rope.rope_tables(p, 64, fraction=0.5))(
      jnp.zeros((2, 8), jnp.int32)))
  assert "cond" not in jaxpr and "gather" not in jaxpr
