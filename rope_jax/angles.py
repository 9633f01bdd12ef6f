"""Rotation angles ``position × frequency`` that stay exact at any int32 position.

Forming ``p · g`` in float32 loses ``ulp(p·g)/2``: 4.9e-4 rad at p = 8,191 and 0.052 rad at
p = 2^20 for g = 1 rad/token, enough to blur the fast pairs exactly where context extension
matters. Here the angle is formed in fixed point, in *turns*:

* On the host, each frequency becomes ``u = g / 2π`` turns per token, rounded to a 64-bit binary
  fraction ``U = round(u · 2^64) mod 2^64`` (computed with 50 significant digits, so U is
  exact to its last bit) and stored as two uint32 words ``U = U_hi · 2^32 + U_lo``.
* On the device, ``|p| · U mod 2^64`` only needs its high word (the whole turns fall off the top
  for free: uint32 arithmetic wraps modulo 2^32, i.e. modulo one turn):
  ``T = |p|·U_hi + mulhi(|p|, U_lo) mod 2^32`` in units of 2^-32 turn; negated for p < 0.
* ``T`` read as a signed int32 is the angle in ``[-1/2, 1/2)`` turn; one float32 multiply by
  ``2π / 2^32`` gives radians in ``[-π, π)``.

Error budget against the float64 angle reduced modulo 2π (any p with |p| < 2^31): U's rounding
(≤ 2^-65 turn/token, ≤ 2^-34 turn) + mulhi's truncation (< 2^-32 turn) ≈ 2e-9 rad; int32 → float32
(≤ 2^6 units of 2^-32 turn) ≈ 9.4e-8 rad; the float32 constant and product ≤ 1.9e-7 + 1.2e-7 rad.
About 4e-7 rad in all, independent of the position. Cost: ~15 integer ops per (position, pair),
paid on the ``[L, F]`` table (once per forward pass), not on ``[B, L, N, H]``.

Pure functions: numpy constants in, ``jax.Array`` out; no Flax, no configs (layer 0).
"""

from __future__ import annotations

import decimal

import jax
import jax.numpy as jnp
import numpy as np

# 2π to 60 significant digits (the host constants need ~20; the rest is margin).
_TWO_PI = decimal.Decimal("6.28318530717958647692528676655900576839433879875021164194989")
_RAD_PER_UNIT = np.float32(2.0 * np.pi / 2.0**32)  # One 2^-32 turn, in radians.
_MASK16 = np.uint32(0xFFFF)


def turn_constants(freqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Frequencies as 64-bit fixed-point turns per token.

  Args:
    freqs: ``[F]`` rad/token (float64; any finite values, negative ones included).

  Returns:
    ``(hi, lo)``, uint32 ``[F]`` each: ``hi·2^-32 + lo·2^-64`` turns/token, reduced modulo 1.
  """
  freqs = np.asarray(freqs, np.float64)
  if not np.all(np.isfinite(freqs)):
    raise ValueError(f"frequencies must be finite, got {freqs[~np.isfinite(freqs)][:4]}.")
  hi = np.empty(freqs.shape, np.uint32)
  lo = np.empty(freqs.shape, np.uint32)
  with decimal.localcontext() as ctx:
    ctx.prec = 50
    for idx, g in np.ndenumerate(freqs):
      units = int((decimal.Decimal(float(g)) * (1 << 64) / _TWO_PI).to_integral_value(
          rounding=decimal.ROUND_HALF_EVEN)) % (1 << 64)
      hi[idx], lo[idx] = units >> 32, units & 0xFFFFFFFF
  return hi, lo


def _mulhi(a: jax.Array, b_lo16: np.ndarray, b_hi16: np.ndarray) -> jax.Array:
  """High 32 bits of the 64-bit product of uint32 ``a`` and ``b = b_hi16·2^16 + b_lo16``."""
  a0, a1 = a & _MASK16, a >> 16
  p00, p01, p10, p11 = a0 * b_lo16, a0 * b_hi16, a1 * b_lo16, a1 * b_hi16  # Each < 2^32.
  mid = (p00 >> 16) + (p01 & _MASK16) + (p10 & _MASK16)  # < 3·2^16: no wrap.
  return p11 + (p01 >> 16) + (p10 >> 16) + (mid >> 16)


def exact_angles(positions: jax.Array, freqs: np.ndarray) -> jax.Array:
  """``positions[..., None] · freqs`` reduced to ``[-π, π)``, within ~4e-7 rad of float64.

  Args:
    positions: integer ``[...]`` (int32 range; e.g. ``[B, L]`` or ``[L]``).
    freqs: static ``[F]`` rad/token (numpy float64; zeros give exactly 0).

  Returns:
    float32 ``[..., F]`` in radians, congruent to the exact angle modulo 2π.
  """
  if not jnp.issubdtype(positions.dtype, jnp.integer):
    raise ValueError(f"exact_angles needs integer positions, got dtype {positions.dtype}.")
  hi, lo = turn_constants(freqs)
  p = positions.astype(jnp.int32)
  # |p| as uint32 (|-2^31| = 2^31 fits); the sign is applied to the turns afterwards.
  mag = jax.lax.bitcast_convert_type(jnp.abs(p), jnp.uint32)[..., None]
  turns = mag * jnp.asarray(hi) + _mulhi(mag, jnp.asarray(lo & _MASK16),
                                         jnp.asarray(lo >> 16))
  turns = jnp.where((p < 0)[..., None], jnp.uint32(0) - turns, turns)
  signed = jax.lax.bitcast_convert_type(turns, jnp.int32)  # [-2^31, 2^31) = [-1/2, 1/2) turn.
  return signed.astype(jnp.float32) * _RAD_PER_UNIT


def float32_angles(positions: jax.Array, freqs: np.ndarray) -> jax.Array:
  """The plain float32 product ``positions · freqs`` (the baseline ``exact_angles`` replaces)."""
  return positions.astype(jnp.float32)[..., None] * jnp.asarray(freqs, jnp.float32)
