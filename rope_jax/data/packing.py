"""Packing tokenized documents into fixed-length rows for next-token prediction (numpy, pure).

A document is a 1-D int array of token ids that ends with eos (seqio's ``tokenize`` +
``append_eos``). The model reads ``s = [bos] + document``: a document of ``n`` tokens gives ``n``
(input, target) pairs, ``inputs = s[:-1]`` and ``targets = s[1:]``.

* **Chunking.** A document longer than ``L`` pairs is cut into chunks of ``L`` pairs (the last one
  shorter). Nothing is dropped: every target token of every document appears in exactly one row,
  with weight 1. A continuation chunk starts mid-document, at position 0, without bos.
* **Packing.** Chunks are placed first-fit into at most ``MAX_OPEN_ROWS`` open rows; a row is
  emitted when it is full, or (the oldest open row) when a chunk fits no open row and no new row
  may be opened. With ``pack=False`` every chunk gets a row of its own.
* **Row layout** (each ``[L]``): ``inputs``/``targets`` int32 token ids (0 = padding),
  ``weights`` float32 (1 on real targets, 0 on padding), ``segment_ids`` int32 (1, 2, 3, ... per
  chunk in the row, 0 = padding), ``positions`` int32 (0, 1, 2, ... restarting in each chunk,
  0 on padding).

Emission order is a pure function of the input order, so a seeded document order gives seeded
batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np

from rope_jax.data.text import BOS_ID, EOS_ID, PAD_ID, UNK_ID  # pylint: disable=unused-import

Batch = dict[str, np.ndarray]
BATCH_KEYS = ("inputs", "targets", "weights", "segment_ids", "positions")
MAX_OPEN_ROWS = 8


@dataclasses.dataclass(frozen=True)
class Chunk:
  """``targets = s[start + 1 : start + 1 + length]`` of the sequence ``s = [bos] + document``."""
  sequence: np.ndarray  # [n + 1] int32: bos followed by the document
  start: int
  length: int


def chunk_document(document: np.ndarray, seq_len: int, bos_id: int) -> list[Chunk]:
  """Splits one document (``[n]`` ids ending with eos) into chunks of at most ``seq_len`` pairs."""
  document = np.asarray(document)
  if document.ndim != 1:
    raise ValueError(f"A document must be a 1-D array of token ids, got shape {document.shape}.")
  n = int(document.shape[0])
  sequence = np.concatenate([np.array([bos_id], np.int32), document.astype(np.int32)])
  return [Chunk(sequence, start, min(seq_len, n - start)) for start in range(0, n, seq_len)]


@dataclasses.dataclass
class _Row:
  chunks: list[Chunk]
  fill: int


class Packer:
  """Streams chunks of documents into rows of ``seq_len`` (first-fit, bounded open rows).

  ``add(document)`` returns the rows completed so far; ``flush()`` returns the rest. A row is a
  list of :class:`Chunk`; :func:`rows_to_batch` turns rows into arrays.
  """

  def __init__(self, seq_len: int, *, bos_id: int, pack: bool = True,
               max_open_rows: int = MAX_OPEN_ROWS):
    if seq_len < 1:
      raise ValueError(f"seq_len must be >= 1, got {seq_len}.")
    self.seq_len = seq_len
    self.bos_id = bos_id
    self.max_open_rows = max_open_rows if pack else 1
    self.pack = pack
    self._open: list[_Row] = []

  def add(self, document: np.ndarray) -> list[list[Chunk]]:
    done = []
    for chunk in chunk_document(document, self.seq_len, self.bos_id):
      done.extend(self._place(chunk))
    return done

  def _place(self, chunk: Chunk) -> list[list[Chunk]]:
    done = []
    if self.pack:
      for i, row in enumerate(self._open):
        if row.fill + chunk.length <= self.seq_len:
          row.chunks.append(chunk)
          row.fill += chunk.length
          if row.fill == self.seq_len:
            done.append(self._open.pop(i).chunks)
          return done
    if len(self._open) >= self.max_open_rows:
      done.append(self._open.pop(0).chunks)
    row = _Row([chunk], chunk.length)
    if row.fill == self.seq_len or not self.pack:
      done.append(row.chunks)
    else:
      self._open.append(row)
    return done

  def flush(self) -> list[list[Chunk]]:
    done = [row.chunks for row in self._open]
    self._open = []
    return done


def pack_documents(documents: Iterable[np.ndarray], seq_len: int, *, bos_id: int,
                   pack: bool = True) -> list[list[Chunk]]:
  """All rows of a finite sequence of documents, in emission order (the open rows last)."""
  packer = Packer(seq_len, bos_id=bos_id, pack=pack)
  rows = []
  for document in documents:
    rows.extend(packer.add(document))
  return rows + packer.flush()


def rows_to_batch(rows: Sequence[Sequence[Chunk]], seq_len: int) -> Batch:
  """Stacks rows into a batch: a dict of ``[len(rows), seq_len]`` arrays (see module doc)."""
  b = len(rows)
  batch = {
      "inputs": np.zeros((b, seq_len), np.int32),
      "targets": np.zeros((b, seq_len), np.int32),
      "weights": np.zeros((b, seq_len), np.float32),
      "segment_ids": np.zeros((b, seq_len), np.int32),
      "positions": np.zeros((b, seq_len), np.int32),
  }
  for i, row in enumerate(rows):
    offset = 0
    for segment, c in enumerate(row, start=1):
      sl = slice(offset, offset + c.length)
      batch["inputs"][i, sl] = c.sequence[c.start : c.start + c.length]
      batch["targets"][i, sl] = c.sequence[c.start + 1 : c.start + 1 + c.length]
      batch["weights"][i, sl] = 1.0
      batch["segment_ids"][i, sl] = segment
      batch["positions"][i, sl] = np.arange(c.length, dtype=np.int32)
      offset += c.length
    if offset > seq_len:
      raise ValueError(f"Row {i} holds {offset} tokens > seq_len {seq_len}.")
  return batch


def validate_batch(batch: Batch, seq_len: int | None = None) -> None:
  """Raises ValueError unless ``batch`` has the layout above (any batch of this package does).

  Checks keys, shapes ``[B, L]`` and dtypes; that each row is segments 1, 2, .., k followed only
  by padding (segment 0); that positions count 0, 1, 2, .. within each segment; and that
  padding has token 0, weight 0 and position 0.
  """
  if set(batch) != set(BATCH_KEYS):
    raise ValueError(f"Batch keys {sorted(batch)} != {sorted(BATCH_KEYS)}.")
  shape = batch["inputs"].shape
  for k in BATCH_KEYS:
    want = np.float32 if k == "weights" else np.int32
    if batch[k].shape != shape or len(shape) != 2 or batch[k].dtype != want:
      raise ValueError(f"{k}: shape {batch[k].shape} dtype {batch[k].dtype}; want {shape} {want}.")
  if seq_len is not None and shape[1] != seq_len:
    raise ValueError(f"Row length {shape[1]} != seq_len {seq_len}.")
  seg, pos = batch["segment_ids"], batch["positions"]
  pad = seg == 0
  step = np.diff(seg, axis=1)
  if (seg[:, 0] > 1).any() or (seg < 0).any():
    raise ValueError("Segment ids must start at 1 (or 0 for an empty row) and be >= 0.")
  if ((step != 0) & (step != 1) & ~pad[:, 1:]).any() or (pad[:, :-1] & ~pad[:, 1:]).any():
    raise ValueError("Segment ids must go 1, 2, .., k in order, padding (0) only at the end.")
  start = np.concatenate([np.ones_like(pad[:, :1]), step != 0], axis=1)
  prev = np.concatenate([np.full_like(pos[:, :1], -1), pos[:, :-1]], axis=1)
  want_pos = np.where(start | pad, 0, prev + 1)
  if (pos != want_pos).any():
    raise ValueError("Positions must restart at 0 in each segment and count up by 1 "
                     "(0 on padding).")
  w = batch["weights"]
  if (w[pad] != 0).any() or (batch["inputs"][pad] != 0).any() or (batch["targets"][pad] != 0).any():
    raise ValueError("Padding must have token 0 and weight 0.")
  if ((w < 0) | (w > 1)).any():
    raise ValueError("Weights must be in [0, 1].")
