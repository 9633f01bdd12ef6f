"""One held-out token stream scored at several context lengths, and count-based baselines.

Length generalisation must change only the context: :func:`windows` cuts the *same* first
``num_tokens`` targets of a stream into rows of ``context`` tokens, so every context length
scores exactly the same target tokens (each once), each row starting at position 0. Only how
much context precedes a target (and how far positions go) differs between lengths.

The baselines are count models fitted on the train stream and scored on the same targets:
add-one unigram, and a Witten–Bell bigram interpolated with that unigram (no tuning on held-out
data). A bigram's prediction depends only on the previous token, so it scores the same at every
context length.

Shapes: N tokens, R = N / c rows of c tokens, V vocabulary.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rope_jax.data.packing import BOS_ID


def token_stream(documents: Sequence[np.ndarray], bos_id: int = BOS_ID) -> np.ndarray:
  """``[bos] + doc`` for every document, concatenated: an int32 ``[Σ (n_i + 1)]`` stream."""
  parts = [np.concatenate([[bos_id], np.asarray(d, np.int64)]) for d in documents]
  return np.concatenate(parts).astype(np.int32) if parts else np.zeros((0,), np.int32)


def windows(stream: np.ndarray, num_tokens: int, context: int) -> dict[str, np.ndarray]:
  """The first ``num_tokens`` targets of ``stream`` as rows of ``context`` tokens.

  Row r holds ``inputs = stream[r·c : (r+1)·c]`` and ``targets = stream[r·c+1 : (r+1)·c+1]``,
  positions ``0..c-1``, one segment, weight 1 everywhere.

  Raises:
    ValueError: ``num_tokens`` not a multiple of ``context``, or the stream is too short.
  """
  if context < 1 or num_tokens < context or num_tokens % context:
    raise ValueError(f"num_tokens={num_tokens} must be a positive multiple of context={context}.")
  if stream.shape[0] < num_tokens + 1:
    raise ValueError(f"The stream has {stream.shape[0]} tokens; {num_tokens + 1} are needed.")
  rows = num_tokens // context
  inputs = np.asarray(stream[:num_tokens], np.int32).reshape(rows, context)
  targets = np.asarray(stream[1:num_tokens + 1], np.int32).reshape(rows, context)
  return {"inputs": inputs, "targets": targets, "weights": np.ones((rows, context), np.float32),
          "segment_ids": np.ones((rows, context), np.int32),
          "positions": np.broadcast_to(np.arange(context, dtype=np.int32), (rows, context)).copy()}


def ngram_losses(train: np.ndarray, prev: np.ndarray, targets: np.ndarray,
                 vocab_size: int) -> dict[str, np.ndarray]:
  """Per-target negative log-likelihoods (nats) of the count baselines.

  Args:
    train: int ``[T]`` training stream (counts come from its adjacent pairs).
    prev: int ``[N]`` the token before each target (``inputs`` of :func:`windows`, flattened).
    targets: int ``[N]``.
    vocab_size: V.

  Returns:
    ``{"unigram": [N], "bigram": [N]}``: add-one unigram; Witten–Bell bigram
    ``p(b|a) = (c(a,b) + T(a)·p_uni(b)) / (c(a) + T(a))`` with ``T(a)`` the number of distinct
    followers of ``a`` (the unigram alone where ``a`` was never seen).
  """
  train = np.asarray(train, np.int64)
  uni_counts = np.bincount(train, minlength=vocab_size).astype(np.float64)
  p_uni = (uni_counts + 1) / (uni_counts.sum() + vocab_size)
  a, b = train[:-1], train[1:]
  pair = a * vocab_size + b
  keys, counts = np.unique(pair, return_counts=True)
  ctx = np.bincount(a, minlength=vocab_size).astype(np.float64)
  types = np.bincount(keys // vocab_size, minlength=vocab_size).astype(np.float64)
  prev, targets = np.asarray(prev, np.int64), np.asarray(targets, np.int64)
  q = prev * vocab_size + targets
  idx = np.searchsorted(keys, q)
  found = (idx < keys.size) & (keys[np.minimum(idx, keys.size - 1)] == q)
  c_ab = np.where(found, counts[np.minimum(idx, keys.size - 1)], 0).astype(np.float64)
  c_a, t_a = ctx[prev], types[prev]
  pu = p_uni[targets]
  p_bi = np.where(c_a > 0, (c_ab + t_a * pu) / np.maximum(c_a + t_a, 1.0), pu)
  return {"unigram": -np.log(pu), "bigram": -np.log(p_bi)}
