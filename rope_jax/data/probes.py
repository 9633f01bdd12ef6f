"""Synthetic probes of the paper's two mechanisms, deterministic by (seed, split, example index).

Each example fills one row of length ``L`` (no packing; ``segment_ids`` 1 on the example, 0 on
padding) and is the sequence ``s`` read as ``inputs = s[:-1]``, ``targets = s[1:]``. Loss and
accuracy count only the answer tokens: ``weights`` is 1 exactly on the targets that are answers.

Token ids (any vocabulary with Gemma's specials works, e.g. the offline one): 2 = bos,
``SEP_ID`` = 4, symbols ``5 .. 5+S-1`` (``S = num_symbols``), keys ``5+S .. 5+S+K-1``
(``K = num_keys``).

* ``copy`` (positional): ``[bos] x_1..x_n [sep] x_1..x_n`` with ``n = (L-1)//2`` symbols drawn
  with replacement. Repeats make content lookup ambiguous; the answer for the i-th copied token
  is at a fixed offset ``n+1`` back, so it is solved by position.
* ``reverse`` (positional): ``[bos] x_1..x_n [sep] x_n..x_1``; the source of each answer sits at a
  different offset, so only absolute/relative position solves it.
* ``recall`` (semantic, associative recall): ``[bos] k_1 v_1 .. k_m v_m [sep] k_q v_q ...`` with
  ``m = min(K, S)`` distinct keys and random values placed in m random slots of the
  ``S = (L-2-2Q)//2`` pair slots of the context (the others hold filler pairs ``FILLER_ID``),
  then ``Q = num_queries`` queried pairs: the answer is the value bound to the key wherever it
  is, at any distance; longer rows spread the pairs over longer distances.

Longer evaluation lengths give longer probes (more symbols / more pairs), so the same probe at 2x
and 4x the training length tests length generalisation. Validation examples use a fixed seed,
independent of the run's seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rope_jax.data import config
from rope_jax.data import packing

KINDS = config.PROBE_KINDS
BOS_ID = packing.BOS_ID
FILLER_ID = 3  # recall's empty context slots (Gemma's <unk>; no probe answer is ever 3)
SEP_ID = 4
FIRST_SYMBOL_ID = 5
VALIDATION_SEED = 20_241_008  # arXiv v1 date of the paper; fixed so eval sets match across runs
_SPLIT_CODES = {"train": 0, "validation": 1}


def min_vocab_size(num_symbols: int, num_keys: int) -> int:
  """The smallest vocabulary size that holds every probe token id."""
  return FIRST_SYMBOL_ID + num_symbols + num_keys


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
  if split not in _SPLIT_CODES:
    raise ValueError(f"Unknown split {split!r}; probes have {tuple(_SPLIT_CODES)}.")
  base = VALIDATION_SEED if split == "validation" else seed
  return np.random.default_rng([int(base), _SPLIT_CODES[split], int(index)])


def _sequence(kind: str, rng: np.random.Generator, seq_len: int, num_symbols: int,
              num_keys: int, num_queries: int) -> tuple[np.ndarray, np.ndarray]:
  """One probe sequence ``s`` ([<= L+1]) and its answer mask over ``s[1:]``."""
  symbols = lambda n: FIRST_SYMBOL_ID + rng.integers(0, num_symbols, size=n)
  if kind in ("copy", "reverse"):
    n = (seq_len - 1) // 2
    if n < 1:
      raise ValueError(f"seq_len {seq_len} is too short for the {kind} probe (needs >= 3).")
    x = symbols(n)
    answer = x if kind == "copy" else x[::-1]
    s = np.concatenate([[BOS_ID], x, [SEP_ID], answer])
    mask = np.zeros(len(s) - 1, bool)
    mask[n + 1:] = True  # targets s[n+2:] are the answer tokens
    return s, mask
  if kind == "recall":
    slots = (seq_len - 2 - 2 * num_queries) // 2  # (key, value) slots before [sep]
    m = min(num_keys, slots)
    if m < max(num_queries, 1):
      raise ValueError(f"seq_len {seq_len} is too short for {num_queries} recall queries.")
    keys = FIRST_SYMBOL_ID + num_symbols + rng.choice(num_keys, size=m, replace=False)
    values = symbols(m)
    q = rng.choice(m, size=num_queries, replace=False)
    # The m pairs sit in m random slots of the whole context (filler pairs elsewhere), so a
    # longer row puts the same number of pairs further apart: 2x / 4x test longer distances.
    context = np.full((slots, 2), FILLER_ID)
    context[np.sort(rng.choice(slots, size=m, replace=False))] = np.stack([keys, values], 1)
    queries = np.stack([keys[q], values[q]], 1).reshape(-1)
    s = np.concatenate([[BOS_ID], context.reshape(-1), [SEP_ID], queries])
    mask = np.zeros(len(s) - 1, bool)
    mask[2 * slots + 2::2] = True  # targets that follow each query key
    return s, mask
  raise ValueError(f"Unknown probe kind {kind!r}; known: {KINDS}.")


def make_example(kind: str, index: int, *, seed: int, split: str, seq_len: int,
                 num_symbols: int, num_keys: int, num_queries: int) -> packing.Batch:
  """Example ``index`` of a probe: a dict of ``[L]`` arrays (packing.BATCH_KEYS)."""
  s, mask = _sequence(kind, _rng(seed, split, index), seq_len, num_symbols, num_keys, num_queries)
  n = len(s) - 1
  row = {
      "inputs": np.zeros(seq_len, np.int32),
      "targets": np.zeros(seq_len, np.int32),
      "weights": np.zeros(seq_len, np.float32),
      "segment_ids": np.zeros(seq_len, np.int32),
      "positions": np.zeros(seq_len, np.int32),
  }
  row["inputs"][:n] = s[:-1]
  row["targets"][:n] = s[1:]
  row["weights"][:n] = mask
  row["segment_ids"][:n] = 1
  row["positions"][:n] = np.arange(n)
  return row


def make_batch(kind: str, indices: Sequence[int], **kwargs) -> packing.Batch:
  """Examples ``indices`` stacked: a dict of ``[len(indices), L]`` arrays."""
  rows = [make_example(kind, int(i), **kwargs) for i in indices]
  return {k: np.stack([r[k] for r in rows]) for k in packing.BATCH_KEYS}


def accuracy(predictions: jax.Array | np.ndarray, batch: dict[str, jax.Array | np.ndarray]
             ) -> jax.Array:
  """Exact-match accuracy on the weighted (answer) tokens, a float32 scalar in [0, 1].

  Args:
    predictions: ``[B, L]`` predicted token ids, or ``[B, L, V]`` logits (argmax is taken).
    batch: with ``targets`` ``[B, L]`` and ``weights`` ``[B, L]``.

  Returns:
    ``sum(weights * (prediction == target)) / sum(weights)``: the fraction of answer tokens
    predicted exactly (0 when nothing is weighted). Pure; works under ``jax.jit``.
  """
  predictions = jnp.asarray(predictions)
  if predictions.ndim == 3:
    predictions = jnp.argmax(predictions, axis=-1)
  weights = jnp.asarray(batch["weights"], jnp.float32)
  correct = (predictions == jnp.asarray(batch["targets"])).astype(jnp.float32) * weights
  return correct.sum() / jnp.maximum(weights.sum(), 1.0)


def example_accuracy(predictions: jax.Array | np.ndarray,
                     batch: dict[str, jax.Array | np.ndarray]) -> jax.Array:
  """Fraction of rows (with any weight) whose answer tokens are all predicted exactly."""
  predictions = jnp.asarray(predictions)
  if predictions.ndim == 3:
    predictions = jnp.argmax(predictions, axis=-1)
  weights = jnp.asarray(batch["weights"]) > 0
  wrong = (predictions != jnp.asarray(batch["targets"])) & weights
  has_answer = weights.any(axis=-1)
  solved = has_answer & ~wrong.any(axis=-1)
  return solved.sum() / jnp.maximum(has_answer.sum(), 1)
