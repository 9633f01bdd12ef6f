"""Whole-answer exact match of probe rows, and the confidence intervals reported with it.

A probe row is solved when every answer target (``weights > 0``) is predicted exactly: all five
passkey digits, every MQAR value, every flip-flop read. The fraction of solved rows is a binomial
proportion; its 95% interval is Wilson's score interval (good at 0 and 1, where a probe often
is, unlike the normal approximation). Two encodings differ when Newcombe's interval for the
difference of their proportions (method 10, from the two Wilson intervals) excludes zero. Means
over seeds (perplexity) get Student's t interval.

Pure numpy (and scipy for the t quantile); no JAX needed.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence

import numpy as np


def _z(confidence: float) -> float:
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence {confidence!r} must be in (0, 1).")
  return statistics.NormalDist().inv_cdf(0.5 + confidence / 2)


def exact_match(predictions: np.ndarray, batch: Mapping[str, np.ndarray]) -> np.ndarray:
  """Per-row whole-answer exact match.

  Args:
    predictions: ``[B, L]`` predicted token ids, or ``[B, L, V]`` logits (argmax is taken).
    batch: with ``targets`` and ``weights``, ``[B, L]``.

  Returns:
    ``[B']`` bool, one entry per row that has an answer (rows without weight are left out):
    True when every weighted target is predicted exactly.
  """
  predictions = np.asarray(predictions)
  if predictions.ndim == 3:
    predictions = predictions.argmax(-1)
  answer = np.asarray(batch["weights"]) > 0
  wrong = (predictions != np.asarray(batch["targets"])) & answer
  has_answer = answer.any(-1)
  return ~wrong.any(-1)[has_answer]


def wilson_interval(successes: int, trials: int, confidence: float = 0.95
                    ) -> tuple[float, float]:
  """Wilson's score interval ``(lo, hi)`` for a binomial proportion ``successes / trials``."""
  if trials < 1 or not 0 <= successes <= trials:
    raise ValueError(f"Need 0 <= successes <= trials and trials >= 1, got {successes}/{trials}.")
  z = _z(confidence)
  p = successes / trials
  denom = 1 + z * z / trials
  centre = (p + z * z / (2 * trials)) / denom
  half = z / denom * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
  return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(k1: int, n1: int, k2: int, n2: int, confidence: float = 0.95
                      ) -> tuple[float, float]:
  """Newcombe's (1998, method 10) interval for ``k1/n1 - k2/n2`` from the two Wilson intervals."""
  p1, p2 = k1 / n1, k2 / n2
  l1, u1 = wilson_interval(k1, n1, confidence)
  l2, u2 = wilson_interval(k2, n2, confidence)
  d = p1 - p2
  return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
          d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def t_interval(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
  """``(mean, lo, hi)``: Student's t interval of the mean; ``(-inf, inf)`` for one sample (one
  seed says nothing about the spread, so nothing can be called)."""
  x = np.asarray(samples, np.float64)
  if x.ndim != 1 or x.size < 1:
    raise ValueError(f"t_interval needs a non-empty 1-D sequence, got shape {x.shape}.")
  _z(confidence)
  mean = float(x.mean())
  if x.size == 1:
    return mean, -math.inf, math.inf
  from scipy import stats  # pylint: disable=g-import-not-at-top
  half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
  return mean, mean - half, mean + half


@dataclasses.dataclass(frozen=True)
class Score:
  """Exact-match accuracy of ``total`` rows with its Wilson interval."""

  correct: int
  total: int
  accuracy: float
  lo: float
  hi: float

  @classmethod
  def of(cls, solved: np.ndarray | Sequence[bool], confidence: float = 0.95) -> Score:
    solved = np.asarray(solved, bool).reshape(-1)
    k, n = int(solved.sum()), int(solved.size)
    lo, hi = wilson_interval(k, n, confidence)
    return cls(k, n, k / n, lo, hi)

  def differs_from(self, other: Score, confidence: float = 0.95) -> bool:
    """Whether Newcombe's interval for ``self - other`` excludes zero."""
    lo, hi = newcombe_interval(self.correct, self.total, other.correct, other.total, confidence)
    return lo > 0 or hi < 0

  def to_dict(self) -> dict[str, float]:
    return dataclasses.asdict(self)

  def __str__(self) -> str:
    return f"{100 * self.accuracy:.1f}% [{100 * self.lo:.1f}, {100 * self.hi:.1f}] (n={self.total})"
