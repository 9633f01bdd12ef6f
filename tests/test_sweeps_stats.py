"""CI code against closed forms: t-interval, paired differences, Wilson, verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rope_jax.sweeps import stats


def test_t_interval_closed_form():
  # x = (1, 2, 3): mean 2, s = 1, n = 3, t_{0.975, 2} = 4.302652729749464 (tables).
  iv = stats.t_interval([1.0, 2.0, 3.0])
  half = 4.302652729749464 / math.sqrt(3)
  assert iv.mean == pytest.approx(2.0)
  assert iv.lo == pytest.approx(2.0 - half, rel=1e-9)
  assert iv.hi == pytest.approx(2.0 + half, rel=1e-9)
  assert iv.n == 3


def test_t_interval_large_n_tends_to_normal():
  x = np.tile([-1.0, 1.0], 5000)  # s ~= 1, n = 10000: half ~= 1.96 / 100.
  assert stats.t_interval(x).half_width == pytest.approx(1.96 * x.std(ddof=1) / 100, rel=1e-3)


def test_single_value_cannot_be_called():
  iv = stats.t_interval([0.5])
  assert not iv.excludes_zero()
  assert stats.verdict(iv) == stats.NO_DIFFERENCE


def test_paired_difference_and_verdict():
  ref = [10.0, 20.0, 30.0]
  better = [9.0, 19.1, 28.9]  # differences -1, -0.9, -1.1: far below 0 relative to spread.
  d = stats.paired_difference(better, ref)
  assert d.mean == pytest.approx(-1.0)
  assert stats.verdict(d) == "better"
  assert stats.verdict(stats.paired_difference(ref, better)) == "worse"
  noisy = [11.0, 19.0, 30.5]
  assert stats.verdict(stats.paired_difference(noisy, ref)) == stats.NO_DIFFERENCE
  # Higher is better (accuracy): a positive difference is "better".
  assert stats.verdict(stats.paired_difference(ref, better), lower_is_better=False) == "better"


def test_wilson_closed_form():
  # 8 / 10 at 95%: Wilson interval (0.4902, 0.9433) (standard worked example).
  iv = stats.wilson_interval(8, 10)
  assert iv.lo == pytest.approx(0.4902, abs=1e-4)
  assert iv.hi == pytest.approx(0.9433, abs=1e-4)
  assert stats.wilson_interval(0, 1000).hi == pytest.approx(0.00383, abs=1e-4)


def test_bad_input():
  with pytest.raises(ValueError):
    stats.t_interval([])
  with pytest.raises(ValueError):
    stats.wilson_interval(3, 2)
  with pytest.raises(ValueError):
    stats.paired_difference([1, 2], [1])
