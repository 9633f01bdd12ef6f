"""Positional encodings other than RoPE, as pure functions (layer 0): ALiBi, sinusoidal, FIRE's map.

* ALiBi (Press et al. 2022, "Train Short, Test Long"): head n adds ``-m_n · (i - j)`` to the
  logit of query position i and key position j (j <= i under the causal mask). For N heads with
  N a power of two the slopes are the geometric sequence ``m_n = 2^(-8n/N)``, n = 1..N; otherwise
  with ``P = 2^floor(log2 N)`` the P slopes of P heads followed by every other slope of 2P heads
  (``2^(-4n/P)`` for n = 1, 3, 5, ...), the first N - P of them (the authors' reference code).
* Sinusoidal absolute encoding (Vaswani et al. 2017): ``PE[pos, 2k] = sin(pos · ω_k)``,
  ``PE[pos, 2k+1] = cos(pos · ω_k)`` with ``ω_k = base^(-2k/D)``, added to the embeddings.
* FIRE (Li et al. 2024, arXiv 2310.04418): the bias is a learned MLP of the "progressively
  interpolated" distance ``ψ(i - j) / ψ(max(|L|, i))`` with ``ψ(x) = log(|c|·x + 1)``; this module
  holds that input map, ``rope_jax.model.fire`` the MLP and its parameters.

Positions are the model's ``positions`` (restart at 0 per packed document; a KV cache stores the
keys' positions), so every bias here depends on positions, never on slots. Angles go through
``rope_jax.angles.exact_angles`` (exact at any int32 position).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from rope_jax import angles as angles_lib

# The names a config may use (the model's hooks are in rope_jax.model.position_bias).
LOGIT_BIASES: tuple[str, ...] = ("none", "alibi", "fire")  # Per layer: RopeConfig.bias.
ABSOLUTE_ENCODINGS: tuple[str, ...] = ("none", "sinusoidal")  # model.absolute_encoding.
SINUSOIDAL_BASE = 10_000.0
FIRE_EPS = 1e-6  # Keeps the normaliser positive when |c|·max(|L|, i) rounds to 0.


def alibi_slopes(num_heads: int) -> np.ndarray:
  """The standard per-head ALiBi slopes, float64 ``[N]``, largest first.

  >>> alibi_slopes(8)  # 1/2, 1/4, ..., 1/256
  """
  if isinstance(num_heads, bool) or not isinstance(num_heads, (int, np.integer)) or num_heads < 1:
    raise ValueError(f"ALiBi needs num_heads to be a positive int, got {num_heads!r}.")

  def power_of_two(n: int) -> list[float]:
    return [2.0 ** (-8.0 * k / n) for k in range(1, n + 1)]

  p = 2 ** int(math.floor(math.log2(num_heads)))
  slopes = power_of_two(p)
  if p < num_heads:
    slopes += power_of_two(2 * p)[0::2][: num_heads - p]
  return np.asarray(slopes, np.float64)


def validate_slopes(slopes: np.ndarray, num_heads: int) -> np.ndarray:
  """Checks explicit slopes: finite, >= 0, one per head. Returns float64 ``[N]``."""
  s = np.asarray(slopes, np.float64)
  if s.shape != (num_heads,):
    raise ValueError(f"ALiBi slopes must have shape ({num_heads},) (one per query head), "
                     f"got {s.shape}.")
  if not np.all(np.isfinite(s)) or np.any(s < 0):
    raise ValueError(f"ALiBi slopes must be finite and >= 0 (a negative slope rewards distance),"
                     f" got {s.tolist()}.")
  return s


def relative_distance(q_positions: jax.Array, k_positions: jax.Array) -> jax.Array:
  """``i - j`` for query positions ``[B, L]`` and key positions ``[B, S]``: int32 ``[B, L, S]``."""
  return q_positions.astype(jnp.int32)[:, :, None] - k_positions.astype(jnp.int32)[:, None, :]


def alibi_bias(q_positions: jax.Array, k_positions: jax.Array, slopes: np.ndarray) -> jax.Array:
  """ALiBi logit bias ``-m_n · (i - j)``.

  Args:
    q_positions: ``[B, L]`` int query positions.
    k_positions: ``[B, S]`` int key positions.
    slopes: ``[N]`` non-negative per-head slopes (static numpy).

  Returns:
    float32 ``[B, N, L, S]``; 0 at j = i and ``-m·d`` at distance d into the past. Entries with
    j > i (the future) are positive and must be masked by the caller's causal mask.
  """
  s = validate_slopes(slopes, np.asarray(slopes).shape[0])
  dist = relative_distance(q_positions, k_positions).astype(jnp.float32)
  return -jnp.asarray(s, jnp.float32)[None, :, None, None] * dist[:, None]


def sinusoidal_embedding(positions: jax.Array, dim: int, base: float = SINUSOIDAL_BASE
                         ) -> jax.Array:
  """Vaswani et al.'s absolute encoding, sin/cos interleaved.

  Args:
    positions: ``[...]`` int positions.
    dim: D, the embedding width (even).
    base: the wavelength base (10,000 in the paper).

  Returns:
    float32 ``[..., D]``: ``[..., 2k] = sin(pos·ω_k)``, ``[..., 2k+1] = cos(pos·ω_k)``.
  """
  if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0 or dim % 2:
    raise ValueError(f"The sinusoidal encoding needs an even width > 0, got {dim!r}.")
  if not (math.isfinite(base) and base > 0):
    raise ValueError(f"The sinusoidal base must be a finite number > 0, got {base!r}.")
  omega = float(base) ** (-2.0 * np.arange(dim // 2, dtype=np.float64) / dim)
  phi = angles_lib.exact_angles(positions, omega)  # [..., D/2]
  return jnp.stack([jnp.sin(phi), jnp.cos(phi)], axis=-1).reshape(*phi.shape[:-1], dim)


def fire_log_transform(x: jax.Array, c: jax.Array) -> jax.Array:
  """FIRE's monotone transform ``ψ(x) = log(|c|·x + 1)`` for ``x >= 0`` (float32)."""
  return jnp.log1p(jnp.abs(c) * x)


def fire_normalized_distance(q_positions: jax.Array, k_positions: jax.Array, c: jax.Array,
                             threshold: jax.Array) -> jax.Array:
  """FIRE's MLP input ``ψ(i - j) / (ψ(max(|L|, i)) + ε)``.

  Args:
    q_positions: ``[B, L]`` int query positions i.
    k_positions: ``[B, S]`` int key positions j.
    c: scalar, the log transform's scale (learned; its magnitude is used).
    threshold: scalar L (learned; its magnitude is used): queries at i < |L| are normalised by
      ψ(|L|), so short contexts are not stretched to [0, 1].

  Returns:
    float32 ``[B, L, S]``; in [0, 1] for 0 <= j <= i (exactly 0 at j = i). The future (j > i)
    is clipped to distance 0 and must be masked by the caller.
  """
  dist = jnp.maximum(relative_distance(q_positions, k_positions), 0).astype(jnp.float32)
  q = q_positions.astype(jnp.float32)[:, :, None]
  norm = fire_log_transform(jnp.maximum(q, jnp.abs(threshold)), c) + FIRE_EPS
  return fire_log_transform(dist, c) / norm
