"""Head types beyond the positional ones (reviewer T6HH; App. E.1; SPEC §2d).

* **BOS / attention-sink head**: puts its mass on the first token (BOS) for every query:
  target key 0.
* **Marker head** (App. E.1's apostrophe head; a punctuation head with another marker set): a
  query right after a marker token attends to the marker (its previous token); every other query
  attends to BOS. Markers are tokens whose piece is an apostrophe (``"apostrophe"``) or is
  made of punctuation only (``"punctuation"``): :func:`marker_tokens`.

Each type is a *target* set of keys per query (:func:`bos_targets`, :func:`marker_targets`); a
head's attention mass on its targets gives a mean score and, as the paper defines positional
heads, a strict score (the minimum over queries: the head is of the type iff it exceeds 1 - ε).
Queries: valid tokens i >= 1 (query 0 sees only itself). Attention ``[B, N, L, L]``, prompts
right-padded with BOS at position 0 (``measure.batches``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import numpy as np

HEAD_TYPES: tuple[str, ...] = ("bos", "marker")
MARKER_KINDS: tuple[str, ...] = ("apostrophe", "punctuation")
APOSTROPHES = frozenset("'’ʼ`")
# Word-start marks of SentencePiece / byte-level BPE pieces, not part of the text.
_WORD_MARKS = "▁Ġ "


def is_marker_piece(piece: str, kind: str) -> bool:
  """Whether a token piece is a marker of ``kind`` (one of ``MARKER_KINDS``)."""
  if kind not in MARKER_KINDS:
    raise ValueError(f"marker kind must be one of {MARKER_KINDS}, got {kind!r}.")
  text = piece.strip(_WORD_MARKS)
  if not text or (text.startswith("<") and text.endswith(">")):  # Empty or <s>-like specials.
    return False
  if kind == "apostrophe":
    return any(ch in APOSTROPHES for ch in text)
  return all(unicodedata.category(ch).startswith("P") for ch in text)


def marker_tokens(pieces: Sequence[str], kind: str) -> np.ndarray:
  """bool ``[L]``: which tokens of a prompt are markers; token 0 (BOS) never is."""
  out = np.array([is_marker_piece(p, kind) for p in pieces], bool)
  if out.size:
    out[0] = False
  return out


def _check_mask(mask) -> np.ndarray:
  mask = np.asarray(mask, bool)
  if mask.ndim != 2:
    raise ValueError(f"mask must be [B, L] (1 = valid token), got shape {mask.shape}.")
  return mask


def query_mask(mask) -> np.ndarray:
  """bool ``[B, L]``: the queries that count (valid, position >= 1)."""
  q = _check_mask(mask).copy()
  q[:, 0] = False
  return q


def bos_targets(mask) -> np.ndarray:
  """bool ``[B, L, L]``: key 0 for every counted query (:func:`query_mask`)."""
  q = query_mask(mask)
  t = np.zeros(q.shape + (q.shape[1],), bool)
  t[:, :, 0] = q
  return t


def marker_targets(markers, mask) -> np.ndarray:
  """bool ``[B, L, L]``: key i - 1 for a query after a marker, key 0 (BOS) otherwise.

  Args:
    markers: bool ``[B, L]`` marker tokens (:func:`marker_tokens` per row; False on padding).
    mask: ``[B, L]`` valid tokens.
  """
  q = query_mask(mask)
  markers = np.asarray(markers, bool)
  if markers.shape != q.shape:
    raise ValueError(f"markers must be [B, L] = {q.shape}, got {markers.shape}.")
  after = np.zeros_like(q)
  after[:, 1:] = markers[:, :-1] & q[:, 1:]
  t = np.zeros(q.shape + (q.shape[1],), bool)
  b, i = np.nonzero(after)
  t[b, i, i - 1] = True
  t[:, :, 0] |= q & ~after
  return t


def target_mass(attn, targets) -> np.ndarray:
  """Attention mass on the targets: ``[B, N, L, L]``, ``[B, L, L]`` -> float64 ``[B, N, L]``."""
  attn = np.asarray(attn, np.float64)
  targets = np.asarray(targets, bool)
  if attn.ndim != 4 or attn.shape[-1] != attn.shape[-2] or targets.shape != (
      attn.shape[0], attn.shape[2], attn.shape[3]):
    raise ValueError(f"need attn [B, N, L, L] and targets [B, L, L]; got {attn.shape} and "
                     f"{targets.shape}.")
  return np.einsum("bnij,bij->bni", attn, targets.astype(np.float64))


class TypeScores:
  """Running mean and minimum of one head type's target mass over batches (per layer and head).

  ``add(attn_per_layer, targets, queries)`` once per batch; ``mean`` and ``min`` are
  ``[num_layers, N]`` (NaN where no query counted); ``count`` the queries counted.
  """

  def __init__(self):
    self.sum = self.min = None
    self.count = 0

  def add(self, attn_per_layer: Sequence[np.ndarray], targets, queries) -> None:
    queries = np.asarray(queries, bool)
    mass = np.stack([target_mass(a, targets) for a in attn_per_layer])  # [layers, B, N, L]
    sel = queries[None, :, None, :]
    total = np.where(sel, mass, 0.0).sum(axis=(1, 3))
    low = np.where(sel, mass, np.inf).min(axis=(1, 3))
    self.sum = total if self.sum is None else self.sum + total
    self.min = low if self.min is None else np.minimum(self.min, low)
    self.count += int(queries.sum())

  @property
  def mean(self) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
      return self.sum / self.count if self.count else np.full_like(self.sum, np.nan)

  @property
  def strict(self) -> np.ndarray:
    return np.where(np.isinf(self.min), np.nan, self.min)
