"""Whole-answer exact match and its confidence intervals against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rope_jax.data import scoring

Z = 1.959963984540054  # the 97.5% normal quantile


@pytest.mark.parametrize("n", [1, 10, 250])
def test_wilson_at_zero_and_all_successes_is_the_closed_form(n):
  # k = 0: (0, z²/(n + z²)); k = n: (n/(n + z²), 1).
  assert scoring.wilson_interval(0, n) == pytest.approx((0.0, Z * Z / (n + Z * Z)), abs=1e-12)
  assert scoring.wilson_interval(n, n) == pytest.approx((n / (n + Z * Z), 1.0), abs=1e-12)


def test_wilson_half_is_symmetric_and_matches_the_formula():
  lo, hi = scoring.wilson_interval(50, 100)
  assert lo + hi == pytest.approx(1.0)
  # At p = 1/2: half-width = z sqrt(n/4 + z²/4) / (n + z²).
  half = Z * math.sqrt(25 + Z * Z / 4) / (100 + Z * Z)
  assert hi - 0.5 == pytest.approx(half, rel=1e-12)
  # Wider at 99% than at 95%; it always contains the point estimate.
  lo99, hi99 = scoring.wilson_interval(50, 100, 0.99)
  assert lo99 < lo and hi99 > hi
  for k in range(0, 21):
    lo, hi = scoring.wilson_interval(k, 20)
    assert lo <= k / 20 <= hi


def test_newcombe_reproduces_the_published_example():
  # Newcombe (1998), Stat. Med. 17:873, Table II example (a): 56/70 - 48/80, method 10.
  lo, hi = scoring.newcombe_interval(56, 70, 48, 80)
  assert (lo, hi) == pytest.approx((0.0524, 0.3339), abs=5e-5)


def test_t_interval_for_two_samples_is_mean_plus_minus_12_706_se():
  mean, lo, hi = scoring.t_interval([1.0, 3.0])
  assert mean == 2.0
  assert hi - mean == pytest.approx(12.7062047 * math.sqrt(2) / math.sqrt(2), rel=1e-6)
  assert scoring.t_interval([4.0]) == (4.0, -math.inf, math.inf)


def test_exact_match_needs_every_answer_token_and_skips_rows_without_answers():
  targets = np.array([[5, 6, 7, 8], [5, 6, 7, 8], [5, 6, 7, 8], [1, 1, 1, 1]])
  weights = np.array([[0, 1, 1, 0], [0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]], np.float32)
  predictions = np.array([[0, 6, 7, 0], [5, 6, 0, 8], [5, 6, 7, 8], [0, 0, 0, 0]])
  batch = {"targets": targets, "weights": weights}
  np.testing.assert_array_equal(scoring.exact_match(predictions, batch), [True, False, True])
  logits = np.eye(9)[predictions]  # [B, L, V]: argmax gives the predictions back
  np.testing.assert_array_equal(scoring.exact_match(logits, batch), [True, False, True])
  score = scoring.Score.of(scoring.exact_match(predictions, batch))
  assert (score.correct, score.total) == (2, 3) and score.lo < 2 / 3 < score.hi


def test_score_difference_is_called_only_when_the_interval_excludes_zero():
  a = scoring.Score.of([True] * 56 + [False] * 14)
  b = scoring.Score.of([True] * 48 + [False] * 32)
  assert a.differs_from(b) and b.differs_from(a)
  c = scoring.Score.of([True] * 52 + [False] * 18)
  assert not a.differs_from(c)


@pytest.mark.parametrize("args", [(3, 2), (-1, 5), (0, 0)])
def test_bad_counts_are_rejected(args):
  with pytest.raises(ValueError, match="successes"):
    scoring.wilson_interval(*args)
