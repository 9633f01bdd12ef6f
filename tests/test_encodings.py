"""ALiBi, sinusoidal and FIRE (rope_jax.encodings, rope_jax.model.fire) against float64 references
written here from the papers, and their defining properties."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rope_jax import encodings
from rope_jax.model import fire as fire_lib
from tests import reference


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 8, 12, 16, 20, 24, 32, 40, 64])
def test_alibi_slopes_match_reference(n):
  np.testing.assert_allclose(encodings.alibi_slopes(n), reference.alibi_slopes(n), rtol=1e-14)


def test_alibi_slopes_by_hand():
  np.testing.assert_allclose(encodings.alibi_slopes(8), [2.0**-k for k in range(1, 9)])
  want12 = [2.0**-k for k in range(1, 9)] + [2.0**-0.5, 2.0**-1.5, 2.0**-2.5, 2.0**-3.5]
  np.testing.assert_allclose(encodings.alibi_slopes(12), want12, rtol=1e-15)
  with pytest.raises(ValueError, match="num_heads"):
    encodings.alibi_slopes(0)


def test_alibi_bias_matches_float64_and_depends_only_on_distance():
  rng = np.random.default_rng(0)
  q = rng.integers(0, 5000, size=(2, 7)).astype(np.int32)
  k = rng.integers(0, 5000, size=(2, 9)).astype(np.int32)
  slopes = encodings.alibi_slopes(6)
  got = np.asarray(encodings.alibi_bias(jnp.asarray(q), jnp.asarray(k), slopes))
  want = np.empty((2, 6, 7, 9))
  for b in range(2):
    for n in range(6):
      for i in range(7):
        for j in range(9):
          want[b, n, i, j] = -slopes[n] * (float(q[b, i]) - float(k[b, j]))
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  shifted = np.asarray(encodings.alibi_bias(jnp.asarray(q + 1234), jnp.asarray(k + 1234), slopes))
  np.testing.assert_array_equal(shifted, got)  # Translation invariant: distance only.


def test_alibi_causal_attention_is_translation_invariant_and_decays():
  """Under a causal mask, softmax(bias) of query i over keys j <= i depends on i - j only."""
  slopes = encodings.alibi_slopes(4)
  pos = jnp.arange(16, dtype=jnp.int32)[None]
  bias = np.asarray(encodings.alibi_bias(pos, pos, slopes))[0]  # [N, L, L]
  causal = np.tril(np.ones((16, 16), bool))
  logits = np.where(causal, bias, -np.inf)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  assert np.all(probs[:, np.triu_indices(16, 1)[0], np.triu_indices(16, 1)[1]] == 0)
  # Row i's weight on distance d relative to distance 0 is exp(-m·d), whatever i.
  for i in (5, 15):
    np.testing.assert_allclose(probs[:, i, i - 3] / probs[:, i, i], np.exp(-3 * slopes), rtol=1e-5)
  assert np.all(np.diff(probs[:, 15, :], axis=-1) > 0)  # Monotone: nearer keys weigh more.


def test_alibi_rejects_negative_or_misshaped_slopes():
  pos = jnp.arange(4, dtype=jnp.int32)[None]
  with pytest.raises(ValueError, match=r"slopes must be finite and >= 0.*-0\.5"):
    encodings.alibi_bias(pos, pos, np.array([0.5, -0.5]))
  with pytest.raises(ValueError, match=r"shape \(3,\)"):
    encodings.validate_slopes(np.array([0.5, 0.25]), 3)


@pytest.mark.parametrize("dim", [2, 8, 64])
def test_sinusoidal_closed_form(dim):
  pos = np.array([[0, 1, 2, 17, 511], [8191, 65_535, 131_071, 2**20 - 1, 2**20]], np.int32)
  got = np.asarray(encodings.sinusoidal_embedding(jnp.asarray(pos), dim), np.float64)
  want = reference.sinusoidal(pos, dim)
  np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)  # Exact angles: even at 2^20.
  assert got.dtype == np.float64 and got.shape == pos.shape + (dim,)
  np.testing.assert_allclose(got[0, 0], np.tile([0.0, 1.0], dim // 2))


def test_sinusoidal_rejects_odd_width():
  with pytest.raises(ValueError, match="even width"):
    encodings.sinusoidal_embedding(jnp.zeros((1, 3), jnp.int32), 7)


def ref_fire_input(q, k, c, threshold, eps=1e-6):
  out = np.zeros((q.shape[0], q.shape[1], k.shape[1]))
  for b in range(q.shape[0]):
    for i in range(q.shape[1]):
      for j in range(k.shape[1]):
        d = max(int(q[b, i]) - int(k[b, j]), 0)
        out[b, i, j] = math.log(abs(c) * d + 1) / (
            math.log(abs(c) * max(abs(threshold), float(q[b, i])) + 1) + eps)
  return out


def test_fire_normalization_matches_float64():
  rng = np.random.default_rng(1)
  q = np.sort(rng.integers(0, 3000, size=(2, 6)), axis=1).astype(np.int32)
  k = rng.integers(0, 3000, size=(2, 8)).astype(np.int32)
  for c, thr in ((0.1, 512.0), (-0.5, 100.0), (2.0, -1000.0)):
    got = encodings.fire_normalized_distance(jnp.asarray(q), jnp.asarray(k), jnp.float32(c),
                                             jnp.float32(thr))
    np.testing.assert_allclose(np.asarray(got), ref_fire_input(q, k, c, thr), rtol=2e-6,
                               atol=1e-7)


def test_fire_input_is_a_monotone_map_into_unit_interval():
  pos = jnp.arange(2000, dtype=jnp.int32)[None]
  x = np.asarray(encodings.fire_normalized_distance(pos, pos, jnp.float32(0.1),
                                                    jnp.float32(512.0)))[0]
  causal = np.tril(np.ones(x.shape, bool))
  assert np.all(x[causal] >= 0) and np.all(x[causal] <= 1)
  assert np.all(np.diag(x) == 0)
  # For a fixed query: strictly increasing in the distance i - j (ψ is monotone).
  row = x[1500, :1501][::-1]
  assert np.all(np.diff(row) > 0)
  # Queries at i >= L see the whole prefix mapped onto [0, 1]: distance i maps to ~1.
  np.testing.assert_allclose(x[np.arange(512, 2000), 0], 1.0, rtol=1e-5)
  # Below the threshold the normaliser is ψ(L): a function of the distance alone.
  np.testing.assert_allclose(x[300, 300 - np.arange(200)], x[400, 400 - np.arange(200)],
                             rtol=1e-6)
  assert x[300, 0] < 1.0


def ref_fire_bias(params, q, k):
  x = ref_fire_input(q, k, float(params["c"]), abs(float(params["threshold_multiplier"])) * 512.0)
  hidden = np.maximum(x[..., None] * params["w_in"].astype(np.float64) + params["b_in"], 0.0)
  out = hidden @ params["w_out"].astype(np.float64) + params["b_out"]  # [B, L, S, N]
  return np.moveaxis(out, -1, 1)


def test_fire_module_matches_float64_mlp():
  model = fire_lib.Fire(4, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(2)
  # Non-trivial biases and parameters, so every term of the formula matters.
  model.b_in[...] = jnp.asarray(rng.standard_normal(32) * 0.3, jnp.float32)
  model.b_out[...] = jnp.asarray(rng.standard_normal(4), jnp.float32)
  model.c[...] = jnp.float32(0.3)
  model.threshold_multiplier[...] = jnp.float32(0.1)  # |L| = 51.2.
  q = np.array([[0, 3, 40, 100, 700]], np.int32)
  k = np.array([[0, 1, 3, 50, 100, 699, 700]], np.int32)
  got = np.asarray(model(jnp.asarray(q), jnp.asarray(k)))
  params = {key: np.asarray(v[...]) for key, v in nnx.state(model, nnx.Param).items()}
  np.testing.assert_allclose(got, ref_fire_bias(params, q, k), rtol=1e-5, atol=1e-5)
  assert got.shape == (1, 4, 5, 7)


def test_fire_gradients_reach_every_parameter():
  model = fire_lib.Fire(2, rngs=nnx.Rngs(0))
  pos = jnp.arange(64, dtype=jnp.int32)[None] * 3

  def loss(m):
    return jnp.sum(jnp.tril(m(pos, pos)[0, 0]) ** 2)

  grads = nnx.grad(loss)(model)
  for name, g in nnx.state(grads, nnx.Param).items():
    assert np.any(np.asarray(g[...]) != 0), name
