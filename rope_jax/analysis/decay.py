"""Does RoPE decay activations with distance? (§3 of the paper; Fig. 2 and Fig. 9; SPEC §2a).

The RoPE activation between a query at position i and a key at position j = i + r is

    a(r) = ⟨R(i) q_i, R(j) k_j⟩ = Σ_k Re( conj(q^{(k)}) k^{(k)} e^{i r g_k} ),

with chunks read as complex numbers. RoFormer bounds it for *constant* queries and keys by the
"relative upper bound" (1/(H/2)) Σ_j |S_j|, S_j = Σ_{k<j} e^{i r g_k}, which decays with r. The
paper's point is that the decay is a property of that setting, not of RoPE:

* (a) all-ones q and k at every position: a(0) = H and a(r) decays (Fig. 2a).
* (b) q_i, k_j i.i.d. N(0, I), a fresh pair at every position: E[a(r)] = 0 for every r
  (Prop. 3.2), so there is no decay, only noise of standard deviation √H (Fig. 2b).
* (c) one Gaussian q and one Gaussian k, each repeated at every position: no clear decay either;
  decay needs q and k repeated *and* aligned (Fig. 9, App. B.4).

All activations are computed by the kernel (``rope.apply_rope``), so they hold for any head_dim
and any encoding (``RopeConfig``: θ, fraction p, variant, layout) the kernel supports. Distances
are in tokens.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rope_jax.analysis.chunks import DEFAULT_ROPE
from rope_jax.analysis.chunks import check_rope
from rope_jax.analysis.chunks import chunk_frequencies
from rope_jax.config.schema import RopeConfig


def _as_distances(distances) -> np.ndarray:
  distances = np.asarray(distances)
  if distances.ndim != 1 or not np.issubdtype(distances.dtype, np.integer):
    raise ValueError(
        f"distances must be a 1-D integer array of relative distances r (tokens), got "
        f"dtype {distances.dtype} and shape {distances.shape}.")
  return distances


def rope_activation(
    q: jax.Array,
    k: jax.Array,
    distances,
    *,
    query_position: int = 0,
    rope: RopeConfig = DEFAULT_ROPE,
) -> jax.Array:
  """The RoPE activation ``⟨R(i) q_r, R(i + r) k_r⟩`` at each relative distance r.

  Args:
    q: ``[..., R, H]`` one query per distance (use a size-1 R axis to repeat one query).
    k: ``[..., R, H]`` one key per distance, broadcastable against ``q``.
    distances: int ``[R]``, relative distances r = j - i in tokens.
    query_position: i, the query's absolute position (the result does not depend on it up to
      float32 rounding: RoPE is relative).
    rope: the encoding (see ``rope.apply_rope``).

  Returns:
    float32 ``[..., R]``.
  """
  distances = _as_distances(distances)
  shape = _activation_shape(np.shape(q), np.shape(k), len(distances))
  return _rotated_dot(q, k, distances, query_position, shape=shape,
                      rope=check_rope(rope, shape[-1]))


def _activation_shape(q_shape, k_shape, num_distances: int) -> tuple[int, ...]:
  """The common ``[..., R, H]`` shape of q and k, or ValueError."""
  if len(q_shape) < 2 or len(k_shape) < 2 or q_shape[-1] != k_shape[-1]:
    raise ValueError(
        f"q and k must be [..., R, H] with the same H, got shapes {q_shape} and {k_shape}.")
  try:
    return np.broadcast_shapes(q_shape[:-1], k_shape[:-1], (num_distances,)) + (q_shape[-1],)
  except ValueError as e:
    raise ValueError(
        f"q {q_shape} and k {k_shape} must broadcast to [..., R = {num_distances}, H].") from e


@functools.partial(jax.jit, static_argnames=("shape", "rope"))
def _rotated_dot(q, k, distances, query_position, *, shape, rope) -> jax.Array:
  """``⟨R(i) q, R(i + r) k⟩`` for q, k broadcast to ``shape = [..., R, H]``."""
  q = jnp.broadcast_to(jnp.asarray(q, jnp.float32), shape)
  k = jnp.broadcast_to(jnp.asarray(k, jnp.float32), shape)
  q_pos = jnp.full(shape[:-1], query_position, jnp.int32)
  k_pos = jnp.broadcast_to(query_position + distances.astype(jnp.int32), shape[:-1])
  # apply_rope wants [..., L, N, H]: the distances play the role of L, with one head.
  q_rot = rope.apply(q[..., None, :], q_pos)[..., 0, :]
  k_rot = rope.apply(k[..., None, :], k_pos)[..., 0, :]
  return jnp.sum(q_rot.astype(jnp.float32) * k_rot.astype(jnp.float32), axis=-1)


@functools.partial(jax.jit, static_argnames=("shape", "rope"))
def _gaussian_dot(rng, distances, *, shape, rope) -> jax.Array:
  """``_rotated_dot`` of q, k ~ N(0, I) drawn with ``shape`` ([S, R, H] or [S, 1, H])."""
  q_rng, k_rng = jax.random.split(rng)
  q, k = jax.random.normal(q_rng, shape), jax.random.normal(k_rng, shape)
  full = shape[:1] + (distances.shape[0],) + shape[2:]
  return _rotated_dot(q, k, distances, 0, shape=full, rope=rope)


def all_ones_activation(
    distances,
    *,
    head_dim: int,
    rope: RopeConfig = DEFAULT_ROPE,
) -> jax.Array:
  """Fig. 2a: q = k = 1 (all ones) at every position. ``a(0) = H``.

  Returns:
    float32 ``[R]``, the activation at each distance (divide by H for the normalised curve).
  """
  ones = np.ones((1, head_dim), np.float32)
  return rope_activation(ones, ones, distances, rope=rope)


def iid_gaussian_activation(
    rng: jax.Array,
    distances,
    *,
    head_dim: int,
    num_samples: int = 1,
    rope: RopeConfig = DEFAULT_ROPE,
) -> jax.Array:
  """Fig. 2b / Prop. 3.2: independent q, k ~ N(0, I_H) for every sample and every distance.

  Returns:
    float32 ``[num_samples, R]``; each entry has mean 0 and standard deviation √H.
  """
  distances = _as_distances(distances)
  return _gaussian_dot(rng, distances, shape=(num_samples, len(distances), head_dim),
                       rope=check_rope(rope, head_dim))


def repeated_gaussian_activation(
    rng: jax.Array,
    distances,
    *,
    head_dim: int,
    num_samples: int = 1,
    rope: RopeConfig = DEFAULT_ROPE,
) -> jax.Array:
  """Fig. 9 (App. B.4): one q and one k ~ N(0, I_H) per sample, repeated at every position.

  Returns:
    float32 ``[num_samples, R]``: row s is the activation curve of the s-th (q, k) pair.
  """
  distances = _as_distances(distances)
  return _gaussian_dot(rng, distances, shape=(num_samples, 1, head_dim),
                       rope=check_rope(rope, head_dim))


def mean_and_stderr(samples: jax.Array) -> tuple[np.ndarray, np.ndarray]:
  """Mean over axis 0 of ``[S, ...]`` samples and its standard error ``std / √S`` (float64)."""
  samples = np.asarray(samples, np.float64)
  if samples.ndim < 1 or samples.shape[0] < 2:
    raise ValueError(f"need [S, ...] samples with S >= 2, got shape {samples.shape}.")
  return samples.mean(0), samples.std(0, ddof=1) / np.sqrt(samples.shape[0])


def roformer_relative_upper_bound(
    distances,
    *,
    head_dim: int,
    rope: RopeConfig = DEFAULT_ROPE,
) -> np.ndarray:
  """RoFormer's relative upper bound ``(1/(H/2)) Σ_{j=1}^{H/2} |S_j|``, ``S_j = Σ_{k<j} e^{irg_k}``.

  RoFormer (Su et al., §3.4.3) bounds the activation of constant queries and keys by
  ``max_k |h_{k+1} - h_k| · Σ_j |S_j|``; this is the data-free factor, divided by H/2. At r = 0
  it is ``(H/2 + 1) / 2``. The ladder is the kernel's (``rope.chunk_frequencies`` of ``rope``;
  its layout does not matter), so for
  p-RoPE the identity chunks add 1 to every ``|S_j|`` they enter and the bound no longer
  decays to 0.

  Returns:
    float64 ``[R]`` (dimensionless).
  """
  distances = _as_distances(distances).astype(np.float64)
  freqs = chunk_frequencies(rope, head_dim)
  partial_sums = np.cumsum(np.exp(1j * np.outer(distances, freqs)), axis=-1)  # S_1 .. S_{H/2}
  return np.abs(partial_sums).mean(axis=-1)
