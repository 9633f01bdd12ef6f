"""Packing: segments never mix documents, positions restart, every target token is kept once."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from rope_jax.data import packing

BOS, EOS = 2, 1


def _documents(lengths):
  """Document i is n_i copies of token 100+i, then eos: its tokens name it."""
  return [np.array([100 + i] * n + [EOS], np.int32) for i, n in enumerate(lengths)]


def _lengths(seed, n=60, max_len=40):
  return np.random.default_rng(seed).integers(0, max_len, size=n).tolist()


@pytest.mark.parametrize("pack", [True, False])
@pytest.mark.parametrize("seq_len", [7, 16, 64])
def test_segments_hold_one_document_and_nothing_is_lost(pack, seq_len):
  docs = _documents(_lengths(0))
  rows = packing.pack_documents(docs, seq_len, bos_id=BOS, pack=pack)
  batch = packing.rows_to_batch(rows, seq_len)
  packing.validate_batch(batch, seq_len)

  seen = collections.Counter()
  for r in range(len(rows)):
    for s in range(1, batch["segment_ids"][r].max() + 1):
      m = batch["segment_ids"][r] == s
      owners = set(batch["targets"][r][m].tolist()) - {EOS}
      owners |= set(batch["inputs"][r][m].tolist()) - {BOS}
      assert len(owners) <= 1, f"row {r} segment {s} mixes documents {owners}"
      seen.update(batch["targets"][r][m].tolist())
    if not pack:
      assert batch["segment_ids"][r].max() == 1
  # Every target token of every document, exactly once, each with weight 1.
  want = collections.Counter(t for d in docs for t in d.tolist())
  assert seen == want
  assert batch["weights"].sum() == sum(len(d) for d in docs)
  assert (batch["weights"] == (batch["segment_ids"] > 0)).all()


def test_targets_are_next_tokens_and_long_documents_are_chunked():
  doc = np.arange(10, 33, dtype=np.int32)  # 23 tokens -> chunks of 8, 8, 7 pairs
  chunks = packing.chunk_document(doc, 8, BOS)
  assert [c.length for c in chunks] == [8, 8, 7]
  batch = packing.rows_to_batch([[c] for c in chunks], 8)
  s = np.concatenate([[BOS], doc])
  np.testing.assert_array_equal(batch["inputs"].reshape(-1)[:23], s[:-1])
  np.testing.assert_array_equal(batch["targets"].reshape(-1)[:23], s[1:])
  np.testing.assert_array_equal(batch["positions"][:, 0], [0, 0, 0])
  assert batch["positions"].max() == 7


def test_packing_fills_rows_first_fit():
  docs = _documents([4, 11, 4, 3])  # pairs 5, 12, 5, 4 into rows of 16
  rows = packing.pack_documents(docs, 16, bos_id=BOS)
  assert [[c.length for c in r] for r in rows] == [[5, 5, 4], [12]]
  batch = packing.rows_to_batch(rows, 16)
  np.testing.assert_array_equal(batch["segment_ids"][0], [1] * 5 + [2] * 5 + [3] * 4 + [0] * 2)
  np.testing.assert_array_equal(batch["positions"][0][:14], [0, 1, 2, 3, 4] * 2 + [0, 1, 2, 3])


def test_streaming_packer_matches_whole_list_packing():
  docs = _documents(_lengths(1))
  packer = packing.Packer(32, bos_id=BOS)
  rows = [r for d in docs for r in packer.add(d)] + packer.flush()
  whole = packing.pack_documents(docs, 32, bos_id=BOS)
  a, b = packing.rows_to_batch(rows, 32), packing.rows_to_batch(whole, 32)
  for k in packing.BATCH_KEYS:
    np.testing.assert_array_equal(a[k], b[k])
  assert len(rows) * 32 * 0.9 < a["weights"].sum()  # first-fit leaves little padding


@pytest.mark.parametrize("corrupt", ["merge", "positions", "pad_weight", "gap"])
def test_validate_batch_catches_broken_layouts(corrupt):
  batch = packing.rows_to_batch(packing.pack_documents(_documents([3, 3, 3]), 16, bos_id=BOS), 16)
  packing.validate_batch(batch, 16)
  if corrupt == "merge":
    batch["segment_ids"][0, 4] = 3  # jumps from 1 to 3
  elif corrupt == "positions":
    batch["positions"][0, 5] = 7  # a segment that does not restart at 0
  elif corrupt == "pad_weight":
    batch["weights"][0, -1] = 1.0
  else:
    batch["segment_ids"][0, 2] = 0  # padding inside a row
  with pytest.raises(ValueError):
    packing.validate_batch(batch, 16)
