"""Confidence intervals and verdicts for seeded grids (no JAX); the formulas are those of
``rope_jax.data.scoring``, wrapped as :class:`Interval`.

* :func:`t_interval`: mean ± the 95% Student-t half-width over independent replicates (seeds).
* :func:`paired_difference`: per-seed differences of a row against a reference row evaluated
  on the *same* tokens (same seed index = same data order and same init key), then
  :func:`t_interval` of those differences.
* :func:`wilson_interval`: a binomial proportion (probe exact match pooled over examples).
* :func:`verdict`: "better" / "worse" only when the interval excludes 0, else
  ``NO_DIFFERENCE``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from rope_jax.data import scoring

NO_DIFFERENCE = "no difference at this scale"


@dataclasses.dataclass(frozen=True)
class Interval:
  """``mean`` with a two-sided ``level`` interval ``[lo, hi]`` from ``n`` replicates."""

  mean: float
  lo: float
  hi: float
  n: int
  level: float = 0.95

  @property
  def half_width(self) -> float:
    return (self.hi - self.lo) / 2

  def excludes_zero(self) -> bool:
    return self.lo > 0 or self.hi < 0

  def fmt(self, digits: int = 2, scale: float = 1.0) -> str:
    """``"12.34 ± 0.56"`` (``scale`` multiplies, e.g. 100 for percent)."""
    if not math.isfinite(self.half_width):
      return f"{self.mean * scale:.{digits}f} ± n/a"
    return f"{self.mean * scale:.{digits}f} ± {self.half_width * scale:.{digits}f}"

  def to_json(self) -> dict[str, float]:
    return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n, "level": self.level}


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
  """Mean and the Student-t interval ``mean ± t_{n-1} · s / √n`` (s: sample std, ddof 1).

  With one value the interval is ``(-inf, inf)`` around it (nothing can be called).

  Raises:
    ValueError: no values, or ``level`` not in (0, 1).
  """
  x = np.asarray(values, np.float64)
  if x.size == 0:
    raise ValueError("t_interval needs at least one value.")
  if not 0 < level < 1:
    raise ValueError(f"level must be in (0, 1), got {level}.")
  mean, lo, hi = scoring.t_interval(x, level)
  return Interval(mean, lo, hi, int(x.size), level)


def paired_difference(values: Sequence[float], reference: Sequence[float],
                      level: float = 0.95) -> Interval:
  """:func:`t_interval` of ``values[i] - reference[i]`` (pairs share seed and eval tokens)."""
  a, b = np.asarray(values, np.float64), np.asarray(reference, np.float64)
  if a.shape != b.shape:
    raise ValueError(f"Paired values need equal shapes, got {a.shape} and {b.shape}.")
  return t_interval(a - b, level)


def wilson_interval(successes: int, n: int, level: float = 0.95) -> Interval:
  """The Wilson score interval of a binomial proportion ``successes / n``
  (``rope_jax.data.scoring.wilson_interval``)."""
  lo, hi = scoring.wilson_interval(successes, n, level)
  return Interval(successes / n, lo, hi, n, level)


def verdict(diff: Interval, *, lower_is_better: bool = True) -> str:
  """``"better"`` / ``"worse"`` when ``diff`` (row minus reference) excludes 0, else
  :data:`NO_DIFFERENCE`."""
  if not diff.excludes_zero():
    return NO_DIFFERENCE
  improved = diff.hi < 0 if lower_is_better else diff.lo > 0
  return "better" if improved else "worse"
