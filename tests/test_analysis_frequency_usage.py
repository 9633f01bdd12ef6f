"""Tests for rope_jax.analysis.frequency_usage and .chunks (§4: Figs 3–4)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from rope_jax import rope
from rope_jax.analysis import chunks
from rope_jax.analysis import frequency_usage as fu
from rope_jax.config.schema import RopeConfig

H = 8
# One compilation per kernel configuration (eager apply_rope compiles each of its ops).
apply_rope = jax.jit(rope.apply_rope, static_argnames=("fraction", "variant", "layout"))


def pair_dims(k: int, layout: str) -> tuple[int, int]:
  """Chunk k's dims, written out from the pairing definitions (SPEC §1.3), not from rope.py."""
  return (k, k + H // 2) if layout == "split_half" else (2 * k, 2 * k + 1)


def hand_built(layout: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """x [B=2, L=3, N=2, H] with known chunk norms, a mask, and the expected [N, H/2] means."""
  x = np.zeros((2, 3, 2, H), np.float32)
  mask = np.array([[1, 1, 0], [1, 0, 0]], np.float32)  # 3 valid tokens; padding is garbage.
  x[:, :, :, :] = 1e3 * (1 - mask)[:, :, None, None]
  # Head 0: chunk 0 = (3, 4) (norm 5) on every valid token; chunk 3 = (5, 12) (norm 13) on one.
  # Head 1: chunk 1 has norms 1, 2, 6 on the three valid tokens (mean 3); chunk 2 stays 0.
  valid = [(0, 0), (0, 1), (1, 0)]
  for t, (b, l) in enumerate(valid):
    x[b, l] = 0.0
    a, c = pair_dims(0, layout)
    x[b, l, 0, a], x[b, l, 0, c] = 3.0, 4.0
    a, c = pair_dims(1, layout)
    x[b, l, 1, a] = [1.0, 2.0, 6.0][t]
  a, c = pair_dims(3, layout)
  x[0, 1, 0, a], x[0, 1, 0, c] = 5.0, 12.0
  want = np.array([[5.0, 0.0, 0.0, 13.0 / 3], [0.0, 3.0, 0.0, 0.0]])
  return x, mask, want


@pytest.mark.parametrize("layout", rope.LAYOUTS)
def test_hand_built_chunk_norms_in_order(layout):
  x, mask, want = hand_built(layout)
  encoding = RopeConfig(layout=layout)
  np.testing.assert_allclose(fu.mean_chunk_norms(x, mask, rope=encoding), want, rtol=1e-6)
  # Without the mask the 1e3 padding dominates: the mask is what keeps it out.
  assert float(fu.mean_chunk_norms(x, rope=encoding).max()) > 100
  # The other pairing reads different dims as chunks, so it would report other numbers.
  other = [l for l in rope.LAYOUTS if l != layout][0]
  assert not np.allclose(fu.mean_chunk_norms(x, mask, rope=RopeConfig(layout=other)), want)


@pytest.mark.parametrize("layout", rope.LAYOUTS)
def test_chunks_match_the_kernel_pairs(layout):
  x = np.arange(2 * H, dtype=np.float32).reshape(2, H)
  encoding = RopeConfig(layout=layout)
  np.testing.assert_array_equal(chunks.rope_chunks(x, rope=encoding), rope.to_pairs(x, layout))
  np.testing.assert_array_equal(chunks.chunk_dims(H, rope=encoding),
                                [pair_dims(k, layout) for k in range(H // 2)])


def test_layer_and_intermediates_views():
  x, mask, want = hand_built("split_half")
  layers = [x, 2 * x]  # Norms scale with x; the padding is masked out.
  per_layer = fu.layer_frequency_usage(layers, mask)
  np.testing.assert_allclose(per_layer, np.stack([want.mean(0), 2 * want.mean(0)]), rtol=1e-6)
  inter = [{"q": l, "k": l[:, :, :1], "v": 3 * l} for l in layers]
  usage = fu.frequency_usage_from_intermediates(inter, mask)
  assert usage["q"].shape == (2, 2, H // 2) and usage["k"].shape == (2, 1, H // 2)
  np.testing.assert_allclose(usage["q"].mean(axis=1), per_layer, rtol=1e-6)
  np.testing.assert_allclose(usage["v"][0], 3 * want, rtol=1e-6)


@pytest.mark.parametrize("variant,fraction,layout", [
    ("p_rope", 0.75, "split_half"), ("p_rope", 0.25, "interleaved"), ("p_rope", 1.0, "split_half"),
    ("reversed", 0.5, "interleaved"), ("partial", 0.5, "split_half"),
    ("partial", 0.5, "interleaved")])
def test_identity_chunks_are_where_the_kernel_frequency_is_zero(variant, fraction, layout):
  head_dim = 16
  freqs = rope.chunk_frequencies(head_dim, fraction=fraction, variant=variant)
  kw = dict(fraction=fraction, variant=variant, layout=layout)
  encoding = RopeConfig(**kw)
  x = np.random.default_rng(0).normal(size=(2, 5, 3, head_dim)).astype(np.float32)
  positions = np.tile(np.arange(5), (2, 1))
  x_rot = apply_rope(x, positions, **kw)
  found = fu.stationary_chunks(x, x_rot, rope=encoding)
  np.testing.assert_array_equal(found, freqs == 0)
  # Energy put only in the identity chunks (via the analysis layout) is left alone by the kernel,
  # and frequency usage reports it exactly there.
  dims = chunks.chunk_dims(head_dim, rope=encoding)[freqs == 0].ravel()
  only_identity = np.zeros_like(x)
  only_identity[..., dims] = np.asarray(x)[..., dims]
  np.testing.assert_array_equal(apply_rope(only_identity, positions, **kw), only_identity)
  usage = np.asarray(fu.mean_chunk_norms(only_identity, rope=encoding))
  np.testing.assert_array_equal(usage.max(0) > 0, freqs == 0)


def test_bad_inputs_raise():
  x = np.ones((2, 3, 4, H), np.float32)
  with pytest.raises(ValueError, match=r"\[B, L, N, H\]"):
    fu.mean_chunk_norms(x[0])
  with pytest.raises(ValueError, match="mask"):
    fu.mean_chunk_norms(x, np.ones((3, 2)))
  with pytest.raises(ValueError, match="no valid token"):
    fu.mean_chunk_norms(x, np.zeros((2, 3)))
  with pytest.raises(ValueError, match="layout"):
    fu.mean_chunk_norms(x, rope=RopeConfig(layout="pairs"))
  with pytest.raises(ValueError, match="fraction"):
    fu.mean_chunk_norms(x, rope=RopeConfig(variant="partial", fraction=1.5))
  with pytest.raises(ValueError, match="head_dim"):
    fu.mean_chunk_norms(x[..., :H - 1])
  with pytest.raises(ValueError, match="RopeConfig"):
    fu.mean_chunk_norms(x, rope={"layout": "split_half"})
  with pytest.raises(ValueError, match="names"):
    fu.frequency_usage_from_intermediates([{"q": x}], names=("queries",))
  with pytest.raises(ValueError, match="has no 'k'"):
    fu.frequency_usage_from_intermediates([{"q": x}], names=("q", "k"))
  with pytest.raises(ValueError, match="at least one"):
    fu.layer_frequency_usage([])
  with pytest.raises(ValueError, match="same shape"):
    fu.stationary_chunks(x, x[:1])
  with pytest.raises(ValueError, match="psi"):
    chunks.embed_in_chunk(np.ones(3), 0, H)
  with pytest.raises(ValueError, match="chunk"):
    chunks.embed_in_chunk(np.ones(2), H // 2, H)
