"""A deterministic synthetic token source: the FALLBACK / TEST input pipeline.

Real training reads ``rope_jax.data`` (``train.data_source="data"``). This source
(``train.data_source="synthetic"``) needs no files or tokenizer and is used by the tests and
the benchmarks. It yields exactly the batch format of ``rope_jax.data.make_iterator``::

    {"inputs", "targets": int32 [B_local, L], "weights": float32 [B_local, L],
     "segment_ids": int32 [B_local, L] (0 = padding), "positions": int32 [B_local, L]}

with the same ``get_state()`` / ``set_state()`` interface.

The tokens are learnable: documents of random length are packed into rows; inside a document
the next token is ``perm[token]`` with probability ``follow_prob`` and uniform otherwise (a fixed
random permutation per seed), so the loss falls from ln V towards the chain's entropy
(≈ 0.56 + 0.25 ln V nats at ``follow_prob=0.75``). Batch ``i`` is a pure function of
``(seed, split, i)``; each process takes its rows of the global batch, so any process count
sees the same global batch.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

SPLITS = {"train": 0, "validation": 1}


class SyntheticSource(Iterator[dict[str, np.ndarray]]):
  """Iterator of packed Markov-chain batches (see module docstring).

  Args:
    vocab_size: V; token 0 is padding, documents use ids 1..V-1.
    split: "train" or "validation" (a different stream).
    global_batch_size: B over all processes; ``B % process_count == 0``.
    seq_len: L.
    seed: stream seed; the permutation depends on it only (shared by the splits).
    process_index, process_count: this process takes rows
      ``[i * B / P, (i + 1) * B / P)``.
    follow_prob: probability that the next token is ``perm[token]``.
    min_doc_len: documents are ``min_doc_len .. L`` tokens; a row's final piece shorter than
      this is padding (so padding and packing are both exercised).
  """

  def __init__(self, *, vocab_size: int, split: str, global_batch_size: int, seq_len: int,
               seed: int, process_index: int = 0, process_count: int = 1,
               follow_prob: float = 0.75, min_doc_len: int = 8):
    if split not in SPLITS:
      raise ValueError(f"Unknown split {split!r}; allowed: {tuple(SPLITS)}.")
    if global_batch_size % process_count:
      raise ValueError(f"global_batch_size {global_batch_size} not divisible by "
                       f"process_count {process_count}.")
    if vocab_size < 3:
      raise ValueError(f"vocab_size must be >= 3, got {vocab_size}.")
    self.vocab_size, self.split, self.seq_len, self.seed = vocab_size, split, seq_len, seed
    self.global_batch_size = global_batch_size
    local = global_batch_size // process_count
    self.rows = slice(process_index * local, (process_index + 1) * local)
    self.follow_prob, self.min_doc_len = follow_prob, max(1, min(min_doc_len, seq_len))
    self.perm = np.random.default_rng([seed, 7]).permutation(np.arange(1, vocab_size))
    self.index = 0

  def get_state(self) -> dict[str, Any]:
    return {"index": int(self.index)}

  def set_state(self, state: dict[str, Any]) -> None:
    self.index = int(state["index"])

  def __iter__(self) -> "SyntheticSource":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = self.make_batch(self.index)
    self.index += 1
    return batch

  def make_batch(self, index: int) -> dict[str, np.ndarray]:
    """The local rows of global batch ``index``."""
    rng = np.random.default_rng([self.seed, SPLITS[self.split], index])
    b, l, v = self.global_batch_size, self.seq_len, self.vocab_size
    rand = rng.integers(1, v, size=(b, l + 1))
    follow = rng.random((b, l + 1)) < self.follow_prob
    seg = np.zeros((b, l + 1), np.int64)
    pos = np.zeros((b, l + 1), np.int64)
    for r in range(b):
      start, doc = 0, 1
      while start < l + 1:
        n = int(rng.integers(self.min_doc_len, l + 1))
        stop = min(start + n, l + 1)
        if stop - start < self.min_doc_len and start > 0:
          break  # Padding for the rest of the row.
        seg[r, start:stop] = doc
        pos[r, start:stop] = np.arange(stop - start)
        start, doc = stop, doc + 1
    # Each document starts from a uniform token; no chain across documents.
    restart = np.ones((b, l + 1), bool)
    restart[:, 1:] = seg[:, 1:] != seg[:, :-1]
    stream = np.empty((b, l + 1), np.int64)
    stream[:, 0] = rand[:, 0]
    for j in range(1, l + 1):
      chained = self.perm[stream[:, j - 1] - 1]
      stream[:, j] = np.where(follow[:, j] & ~restart[:, j], chained, rand[:, j])
    pad = seg == 0
    stream[pad] = 0
    inputs, targets = stream[:, :-1], stream[:, 1:]
    seg_in = seg[:, :-1]
    weights = (seg_in > 0) & (seg[:, 1:] == seg_in)
    out = {
        "inputs": inputs.astype(np.int32),
        "targets": np.where(weights, targets, 0).astype(np.int32),
        "weights": weights.astype(np.float32),
        "segment_ids": seg_in.astype(np.int32),
        "positions": np.where(seg_in > 0, pos[:, :-1], 0).astype(np.int32),
    }
    return {k: a[self.rows] for k, a in out.items()}
