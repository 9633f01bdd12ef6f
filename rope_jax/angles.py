"""Rotation angles ``position × frequency`` that stay exact at any int32 position.

Forming ``p · g`` in float32 loses ``ulp(p·g)/2``: 4.9e-4 rad at p = 8,191 and 0.052 rad at
p = 2^20 for g = 1 rad/token, enough to blur the fast pairs exactly where context extension
matters. Here the angle is formed in fixed point, in *turns*:

* On the host, each frequency becomes ``u = g / 2π`` turns per token, rounded to a 64-bit binary
  fraction ``U = round(u · 2^64) mod 2^64`` (computed with 50 significant digits, so U is
  exact to its last bit) and stored as two uint32 words ``U = U_hi · 2^32 + U_lo``.
* On the device, ``p · U mod 2^64`` only needs its high word (the whole turns fall off the top
  for free: uint32 arithmetic wraps modulo 2^32, i.e. modulo one turn):
  ``T = p·U_hi + p·U_lo·2^-32 mod 2^32`` in units of 2^-32 turn, with a signed low word
  ``|U_lo| <= 2^31``. The first product is exact in uint32 (a negative p wraps to p + 2^32,
  which adds whole turns); the second is at most |p|/2 units and float32 gets it to within a
  unit for |p| <= 2^24 (a few hundred units at 2^31).
* ``T`` read as a signed int32 is the angle in ``[-1/2, 1/2)`` turn; one float32 multiply by
  ``2π / 2^32`` gives radians in ``[-π, π)``.

Error budget against the float64 angle reduced modulo 2π: U's rounding (<= 2^-65 turn/token)
and the low word (~1 unit up to 2^24 positions; ~2^8 units = 3.7e-7 rad near 2^31) plus
int32 -> float32 (<= 2^6 units, 9.4e-8 rad) and the float32 constant and product (<= 1.9e-7 +
1.2e-7 rad): measured 3.0e-7 rad over every position up to 2^20 (BENCHMARKS.md), independent of
the position there. Cost: one uint32 and two float32 multiplies and three conversions per
(position, pair), on the ``[..., L, F]`` table, not on ``[B, L, N, H]``.

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


def turn_constants(freqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Frequencies as 64-bit fixed-point turns per token.

  Args:
    freqs: ``[F]`` rad/token (float64; any finite values, negative ones included).

  Returns:
    ``(hi, lo)``: uint32 ``[F]`` and int64 ``[F]`` in ``[-2^31, 2^31)`` with
    ``hi·2^-32 + lo·2^-64`` = the frequency in turns/token, modulo 1 (the low word is signed so
    that ``|p·lo·2^-32| <= |p|/2`` fits an int32 for any int32 p).
  """
  freqs = np.asarray(freqs, np.float64)
  if not np.all(np.isfinite(freqs)):
    raise ValueError(f"frequencies must be finite, got {freqs[~np.isfinite(freqs)][:4]}.")
  hi = np.empty(freqs.shape, np.uint32)
  lo = np.empty(freqs.shape, np.int64)
  with decimal.localcontext() as ctx:
    ctx.prec = 50
    for idx, g in np.ndenumerate(freqs):
      units = int((decimal.Decimal(float(g)) * (1 << 64) / _TWO_PI).to_integral_value(
          rounding=decimal.ROUND_HALF_EVEN)) % (1 << 64)
      high, low = units >> 32, units & 0xFFFFFFFF
      if low >= 1 << 31:  # Borrow from the high word: the low word becomes negative.
        high, low = (high + 1) % (1 << 32), low - (1 << 32)
      hi[idx], lo[idx] = high, low
  return hi, lo


def exact_turns(positions: jax.Array, freqs: np.ndarray) -> jax.Array:
  """``positions[..., None] · freqs`` in units of 2^-32 turn, modulo one turn.

  Args:
    positions: integer ``[...]`` (int32 range).
    freqs: static ``[F]`` rad/token (numpy float64).

  Returns:
    uint32 ``[..., F]``: the angle is ``turns · 2π / 2^32`` (modulo 2π).
  """
  if not jnp.issubdtype(positions.dtype, jnp.integer):
    raise ValueError(f"exact angles need integer positions, got dtype {positions.dtype}.")
  hi, lo = turn_constants(freqs)
  p = positions.astype(jnp.int32)[..., None]
  # High word: p·U_hi modulo 2^32 units, exact (uint32 wraps; a negative p is p + 2^32, and
  # 2^32·U_hi is whole turns).
  turns = jax.lax.bitcast_convert_type(p, jnp.uint32) * jnp.asarray(hi)
  # Low word: p·U_lo·2^-32 units, at most |p|/2 units, so float32 is enough (relative 2^-23);
  # the conversion truncates (< 1 unit = 2^-32 turn).
  low = (p.astype(jnp.float32) * jnp.asarray(lo * 2.0**-32, jnp.float32)).astype(jnp.int32)
  return turns + jax.lax.bitcast_convert_type(low, jnp.uint32)


def exact_angles(positions: jax.Array, freqs: np.ndarray) -> jax.Array:
  """``positions[..., None] · freqs`` reduced to ``[-π, π)``, within ~3e-7 rad of float64.

  Args:
    positions: integer ``[...]`` (int32 range; e.g. ``[B, L]`` or ``[L]``).
    freqs: static ``[F]`` rad/token (numpy float64; zeros give exactly 0).

  Returns:
    float32 ``[..., F]`` in radians, congruent to the exact angle modulo 2π.
  """
  signed = jax.lax.bitcast_convert_type(exact_turns(positions, freqs), jnp.int32)
  return signed.astype(jnp.float32) * _RAD_PER_UNIT  # [-2^31, 2^31) units = [-π, π).


def quarter_turns(turns: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Splits angles given in turns (:func:`exact_turns`) around the nearest multiple of π/2.

  Returns:
    ``(quadrant, r)``: int32 ``k mod 4`` and float32 ``r`` in ``[-π/4, π/4)`` with
    angle = ``k·π/2 + r`` exactly up to the float32 rounding of r (< 5e-8 rad): the range
    reduction of sin/cos done in integers, for free.
  """
  shifted = turns + np.uint32(1 << 29)  # + 1/8 turn: quadrant k = floor(shifted / 2^30).
  quadrant = jax.lax.bitcast_convert_type(shifted >> 30, jnp.int32)
  rest = jax.lax.bitcast_convert_type(shifted & np.uint32((1 << 30) - 1), jnp.int32)
  return quadrant, (rest - (1 << 29)).astype(jnp.float32) * _RAD_PER_UNIT


def float32_angles(positions: jax.Array, freqs: np.ndarray) -> jax.Array:
  """The plain float32 product ``positions · freqs`` (the baseline ``exact_angles`` replaces)."""
  return positions.astype(jnp.float32)[..., None] * jnp.asarray(freqs, jnp.float32)
