"""rope_jax.angles: the angle position × frequency against float64 and exact rational values."""

from __future__ import annotations

import decimal
import math

import jax.numpy as jnp
import numpy as np
import pytest

from rope_jax import angles

TWO_PI = decimal.Decimal("6.283185307179586476925286766559005768394338798750211641949889")


def wrapped(diff):
  """A float64 angle difference reduced to [-π, π]."""
  return np.angle(np.exp(1j * np.asarray(diff, np.float64)))


def exact_reference(p: int, g: float) -> float:
  """p·g reduced to [-π, π), in 50-digit decimal arithmetic (g is the float64 frequency)."""
  with decimal.localcontext() as ctx:
    ctx.prec = 50
    x = decimal.Decimal(p) * decimal.Decimal(g)
    turns = (x / TWO_PI + decimal.Decimal("0.5")).to_integral_value(rounding=decimal.ROUND_FLOOR)
    return float(x - turns * TWO_PI)


@pytest.mark.parametrize("theta", [1e4, 5e5, 1e6])
def test_error_below_1e6_rad_up_to_2_pow_20(theta):
  freqs = theta ** (-2.0 * np.arange(128) / 256)  # H = 256, fastest g = 1 rad/token.
  pos = np.unique(np.concatenate([np.arange(0, 2**20 + 1, 331), np.arange(2**20 - 64, 2**20 + 1),
                                  [8191, 131_071, 131_072]])).astype(np.int32)
  got = np.asarray(angles.exact_angles(jnp.asarray(pos), freqs), np.float64)
  want = pos[:, None].astype(np.float64) * freqs  # float64: ~1e-10 rad off at 2^20, far below.
  err = np.abs(wrapped(got - want)).max()
  assert err <= 1e-6, err
  assert np.all(got >= -np.pi) and np.all(got < np.pi)
  # The float32 product this replaces is four orders of magnitude worse at 1M positions.
  f32 = np.asarray(angles.float32_angles(jnp.asarray(pos), freqs), np.float64)
  assert np.abs(wrapped(f32 - want)).max() > 1e-2


def test_exact_against_50_digit_arithmetic_over_int32():
  freqs = np.array([1.0, 0.7368062997280773, 1e-4, 2.5e-6, 3.0, 7.5, 0.0])
  pos = np.array([0, 1, -1, 7, 8191, -8191, 2**20, 2**24 + 1, 2**31 - 1, -(2**31 - 1), -(2**31)],
                 np.int32)
  got = np.asarray(angles.exact_angles(jnp.asarray(pos), freqs), np.float64)
  for a, p in enumerate(pos):
    for b, g in enumerate(freqs):
      assert abs(wrapped(got[a, b] - exact_reference(int(p), float(g)))) <= 6e-7, (p, g)
  assert np.all(got[:, -1] == 0.0) and np.all(got[0] == 0.0)  # Zero frequency / position: 0.


def test_small_angles_keep_their_relative_precision_where_float32_does():
  """Below one turn the fixed point is no worse than the float32 product (both ~1e-7 rad)."""
  freqs = 10_000.0 ** (-2.0 * np.arange(32) / 64)
  pos = np.arange(0, 64, dtype=np.int32)
  got = np.asarray(angles.exact_angles(jnp.asarray(pos), freqs), np.float64)
  want = pos[:, None] * freqs
  assert np.abs(wrapped(got - want)).max() <= 3e-7


def test_turn_constants_are_the_64_bit_fraction():
  """hi·2^-32 + lo·2^-64 is g/2π modulo one turn, to the last bit (checked in 50 digits)."""
  freqs = np.array([math.pi, 2 * math.pi, -math.pi / 2, 0.0, 1.0, 1e-6, 123.456])
  hi, lo = angles.turn_constants(freqs)
  with decimal.localcontext() as ctx:
    ctx.prec = 50
    for g, h, l in zip(freqs, hi, lo):
      frac = (decimal.Decimal(int(h)) * 2**32 + decimal.Decimal(int(l))) / decimal.Decimal(2**64)
      turns = decimal.Decimal(float(g)) / TWO_PI
      off = (frac - turns) % 1
      assert min(off, 1 - off) <= decimal.Decimal(2) ** -65, (g, off)
  assert hi[3] == lo[3] == 0 and np.all(np.abs(lo) <= 2**31)  # Signed low word.
  assert abs(int(hi[0]) - 2**31) <= 1  # π ≈ half a turn.
  with pytest.raises(ValueError, match="finite"):
    angles.turn_constants(np.array([1.0, np.inf]))


def test_batched_positions_and_dtype():
  pos = jnp.asarray(np.arange(24, dtype=np.int32).reshape(2, 3, 4) * 100_003)
  freqs = np.array([1.0, 0.01])
  got = angles.exact_angles(pos, freqs)
  assert got.shape == (2, 3, 4, 2) and got.dtype == jnp.float32
  want = np.asarray(pos, np.float64)[..., None] * freqs
  assert np.abs(wrapped(np.asarray(got, np.float64) - want)).max() <= 1e-6
  with pytest.raises(ValueError, match="integer positions"):
    angles.exact_angles(jnp.zeros((3,), jnp.float32), freqs)


def test_quarter_turns_reduce_exactly_around_multiples_of_half_pi():
  freqs = np.array([1.0, 0.3, 1e-3, 0.0])
  pos = np.array([0, 1, 2, 3, 5, 100, 8191, -7, 2**20, 2**31 - 1], np.int32)
  quadrant, r = angles.quarter_turns(angles.exact_turns(jnp.asarray(pos), freqs))
  quadrant, r = np.asarray(quadrant), np.asarray(r, np.float64)
  assert np.all((quadrant >= 0) & (quadrant <= 3))
  assert np.all(np.abs(r) <= np.pi / 4 + 1e-7)
  for a, p in enumerate(pos):
    for b, g in enumerate(freqs):
      got = quadrant[a, b] * np.pi / 2 + r[a, b]
      assert abs(wrapped(got - exact_reference(int(p), float(g)))) <= 4e-7, (p, g)
  assert np.all(r[0] == 0) and np.all(quadrant[0] == 0)
