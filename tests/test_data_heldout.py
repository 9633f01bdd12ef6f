"""Same-token evaluation windows and the count baselines."""

from __future__ import annotations

import numpy as np
import pytest

from rope_jax.data import heldout


def test_every_context_scores_the_same_tokens():
  stream = np.arange(1, 1 + 4 * 8 * 3 + 1, dtype=np.int32)
  n = 4 * 8 * 3
  flat = {}
  for c in (8, 16, 32):
    w = heldout.windows(stream, n, c)
    assert w["inputs"].shape == (n // c, c)
    np.testing.assert_array_equal(w["positions"][1], np.arange(c))
    flat[c] = (w["inputs"].ravel(), w["targets"].ravel(), w["weights"].ravel())
  for c in (16, 32):  # Same (previous token, target) pairs in the same order, all weighted.
    for a, b in zip(flat[c], flat[8]):
      np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(flat[8][1], stream[1:n + 1])


def test_windows_reject_bad_sizes():
  with pytest.raises(ValueError, match="multiple"):
    heldout.windows(np.arange(100), 30, 8)
  with pytest.raises(ValueError, match="stream"):
    heldout.windows(np.arange(10), 16, 8)


def test_token_stream_puts_bos_before_each_document():
  s = heldout.token_stream([np.array([5, 6, 1]), np.array([7, 1])], bos_id=2)
  np.testing.assert_array_equal(s, [2, 5, 6, 1, 2, 7, 1])


def test_ngram_closed_form():
  v = 4
  train = np.array([0, 1, 0, 1, 0, 2])  # pairs: 01 10 01 10 02
  out = heldout.ngram_losses(train, prev=np.array([0, 3]), targets=np.array([1, 1]), vocab_size=v)
  p_uni = (np.bincount(train, minlength=v) + 1) / (6 + v)  # [4, 3, 2, 1] / 10
  # After 0: c(0)=3, followers {1, 2}: T=2; c(0,1)=2 -> (2 + 2 p_uni[1]) / 5.
  np.testing.assert_allclose(out["bigram"][0], -np.log((2 + 2 * p_uni[1]) / 5))
  # 3 is never a context: falls back to the unigram.
  np.testing.assert_allclose(out["bigram"][1], -np.log(p_uni[1]))
  np.testing.assert_allclose(out["unigram"], -np.log(p_uni[[1, 1]]))


def test_bigram_distribution_sums_to_one():
  rng = np.random.default_rng(0)
  v = 7
  train = rng.integers(0, v, 200)
  for a in range(v):
    p = np.exp(-heldout.ngram_losses(train, np.full(v, a), np.arange(v), v)["bigram"])
    assert p.sum() == pytest.approx(1.0)
