"""Long-context probes (train short, test long), deterministic by (seed, split, kind, index).

Each example fills one row of length ``L`` exactly as ``probes.py`` does (one segment, positions
0..n-1, padding after it; built with ``packing.rows_to_batch``, so a batch has the packer's
layout and mixes with packed corpus rows). ``weights`` is 1 exactly on the answer targets, and
scoring is exact match of the whole answer (every weighted target of the row; ``scoring.py``).

Token ids (any vocabulary with Gemma's specials; the offline one has room): 2 = bos,
``MARK_ID`` = 4, then each probe's alphabet from ``FIRST_SYMBOL_ID`` = 5.

* ``passkey`` (Mohtashami & Jaggi 2023): ``[bos] filler.. [mark] d_1..d_k filler.. [mark]
  d_1..d_k``: a ``k``-digit number (digits ``5..14``) hidden at ``depth`` in a periodic filler
  "sentence" (ids ``15..15+FILLER_PERIOD-1``, cycled, like "The grass is green. The sky is
  blue..."), asked for at the end by repeating the marker. ``depth`` is the fraction of the
  filler before the needle: 0 puts it right after bos, 1 right before the question; ``depth=-1``
  draws it uniformly per example (training). The answer is the ``k`` digits after the last mark.
* ``mqar`` (multi-query associative recall; Arora et al. 2023, zoology's ``multiquery_ar``):
  ``[bos] k_1 v_1 .. k_n v_n`` (``n = num_pairs`` distinct keys from ``num_keys``, values from
  ``num_values``), then the rest of the row is ``(L - 2n) // 2`` slots of two tokens, noise from
  ``MQAR_NOISE`` ids; every key is queried once, at slot ``x`` drawn without replacement with
  probability ``∝ (x+1)^(a-1)`` (``a = power_a``; zoology's 0.01 makes short gaps likely and long
  ones possible): the key at the slot's first token, its value as the answer after it. Longer
  rows give the same pairs more (and longer) query gaps.
* ``flipflop`` (Liu et al. 2023, "Exposing attention glitches"): ``L // 2`` instruction-bit
  pairs ``w b`` (write), ``i b`` (ignore), ``r b`` (read); the first is a write, the last a read,
  the others ``i`` with probability ``p_ignore`` and ``w`` / ``r`` with ``(1 - p_ignore) / 2``
  each. Written and ignored bits are random; the bit after every read equals the last written
  bit, and those bits are the answer. ``p_ignore`` 0.8 is the paper's training distribution, 0.1
  its dense and 0.98 its sparse out-of-distribution tests.

Validation examples use ``probes.VALIDATION_SEED``, independent of the run's seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rope_jax.data import config
from rope_jax.data import packing
from rope_jax.data import probes

KINDS = config.LONG_PROBE_KINDS
BOS_ID = packing.BOS_ID
MARK_ID = probes.SEP_ID  # passkey's "the pass key is"
FIRST_SYMBOL_ID = probes.FIRST_SYMBOL_ID
NUM_DIGITS = 10
FILLER_PERIOD = 24  # tokens in passkey's repeated filler "sentence"
MQAR_NOISE = 16  # ids of mqar's non-query tokens
# Flip-flop's alphabet: instructions write / read / ignore, then the bits 0 / 1.
FF_WRITE, FF_READ, FF_IGNORE, FF_ZERO, FF_ONE = FIRST_SYMBOL_ID + np.arange(5)
RANDOM_DEPTH = -1.0
_KIND_CODES = {kind: i for i, kind in enumerate(KINDS)}
_SPLIT_CODES = {"train": 0, "validation": 1}


def settings(kind: str, section) -> dict[str, float | int]:
  """The generator keyword arguments of ``kind`` from a ``config.data.long_probe`` section."""
  names = config.LONG_PROBE_SETTINGS.get(kind)
  if names is None:
    raise ValueError(f"Unknown long probe kind {kind!r}; known: {KINDS}.")
  return {name: section[f"{kind}_{name}"] for name in names}


def min_vocab_size(kind: str, **kwargs) -> int:
  """The smallest vocabulary that holds every token id of ``kind`` with these settings."""
  if kind == "passkey":
    return FIRST_SYMBOL_ID + NUM_DIGITS + FILLER_PERIOD
  if kind == "mqar":
    return FIRST_SYMBOL_ID + kwargs["num_keys"] + kwargs["num_values"] + MQAR_NOISE
  if kind == "flipflop":
    return FIRST_SYMBOL_ID + 5
  raise ValueError(f"Unknown long probe kind {kind!r}; known: {KINDS}.")


def _rng(kind: str, seed: int, split: str, index: int) -> np.random.Generator:
  if split not in _SPLIT_CODES:
    raise ValueError(f"Unknown split {split!r}; probes have {tuple(_SPLIT_CODES)}.")
  base = probes.VALIDATION_SEED if split == "validation" else seed
  return np.random.default_rng([int(base), _SPLIT_CODES[split], _KIND_CODES[kind], int(index)])


def passkey_needle_start(seq_len: int, digits: int, depth: float) -> int:
  """Index in ``s`` (``inputs`` too) of the needle's mark: ``1 + round(depth * filler)``."""
  return 1 + int(round(depth * passkey_filler_len(seq_len, digits)))


def passkey_filler_len(seq_len: int, digits: int) -> int:
  """Filler tokens in a passkey row: ``L + 1`` minus bos and two (mark + digits)."""
  return seq_len - 2 * digits - 2


def _passkey(rng: np.random.Generator, seq_len: int, digits: int, depth: float
             ) -> tuple[np.ndarray, np.ndarray]:
  filler_len = passkey_filler_len(seq_len, digits)
  if filler_len < 0:
    raise ValueError(f"seq_len {seq_len} is too short for a {digits}-digit passkey (needs >= "
                     f"{2 * digits + 2}).")
  if depth == RANDOM_DEPTH:
    depth = rng.uniform()
  elif not 0.0 <= depth <= 1.0:
    raise ValueError(f"passkey depth {depth!r} must be in [0, 1] (or -1 for uniform random).")
  key = FIRST_SYMBOL_ID + rng.integers(0, NUM_DIGITS, size=digits)
  filler = FIRST_SYMBOL_ID + NUM_DIGITS + np.arange(filler_len) % FILLER_PERIOD
  cut = passkey_needle_start(seq_len, digits, depth) - 1
  needle = np.concatenate([[MARK_ID], key])
  s = np.concatenate([[BOS_ID], filler[:cut], needle, filler[cut:], needle])
  mask = np.zeros(len(s) - 1, bool)
  mask[len(s) - 1 - digits:] = True  # targets: the digits after the last mark
  return s, mask


def mqar_gap_probabilities(space: int, power_a: float) -> np.ndarray:
  """``[space]`` probabilities of query slot ``x``: ``∝ (x+1)^(a-1)`` (zoology's power law)."""
  p = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1.0)
  return p / p.sum()


def _mqar(rng: np.random.Generator, seq_len: int, num_pairs: int, num_keys: int,
          num_values: int, power_a: float) -> tuple[np.ndarray, np.ndarray]:
  if num_pairs > num_keys:
    raise ValueError(f"mqar num_pairs {num_pairs} > num_keys {num_keys}: keys must be distinct.")
  if not 0.0 < power_a <= 1.0:
    raise ValueError(f"mqar power_a {power_a!r} must be in (0, 1].")
  context = 2 * num_pairs
  space = (seq_len - context) // 2
  if space < num_pairs:
    raise ValueError(f"seq_len {seq_len} is too short for {num_pairs} mqar pairs (needs >= "
                     f"{4 * num_pairs}).")
  keys = FIRST_SYMBOL_ID + rng.choice(num_keys, size=num_pairs, replace=False)
  values = FIRST_SYMBOL_ID + num_keys + rng.integers(0, num_values, size=num_pairs)
  slots = rng.choice(space, size=num_pairs, replace=False,
                     p=mqar_gap_probabilities(space, power_a))
  noise_id = FIRST_SYMBOL_ID + num_keys + num_values
  tail = noise_id + rng.integers(0, MQAR_NOISE, size=seq_len - context)
  tail[2 * slots], tail[2 * slots + 1] = keys, values
  s = np.concatenate([[BOS_ID], np.stack([keys, values], 1).reshape(-1), tail])
  mask = np.zeros(len(s) - 1, bool)
  mask[context + 2 * slots + 1] = True  # target s[j + 1] is the value after a query key
  return s, mask


def _flipflop(rng: np.random.Generator, seq_len: int, p_ignore: float
              ) -> tuple[np.ndarray, np.ndarray]:
  if not 0.0 <= p_ignore < 1.0:
    raise ValueError(f"flipflop p_ignore {p_ignore!r} must be in [0, 1).")
  n = seq_len // 2
  if n < 2:
    raise ValueError(f"seq_len {seq_len} is too short for flip-flop (needs >= 4).")
  u = rng.uniform(size=n)
  ops = np.where(u < p_ignore, FF_IGNORE,
                 np.where(u < p_ignore + (1 - p_ignore) / 2, FF_WRITE, FF_READ))
  ops[0], ops[-1] = FF_WRITE, FF_READ
  bits = rng.integers(0, 2, size=n)
  is_write = ops == FF_WRITE
  last_write = np.maximum.accumulate(np.where(is_write, np.arange(n), 0))
  bits = np.where(ops == FF_READ, bits[last_write], bits)
  s = np.concatenate([[BOS_ID], np.stack([ops, FF_ZERO + bits], 1).reshape(-1)])
  mask = np.zeros(len(s) - 1, bool)
  mask[1 + 2 * np.flatnonzero(ops == FF_READ)] = True  # the bit after each read
  return s, mask


def sequence(kind: str, index: int, *, seed: int, split: str, seq_len: int,
             **kwargs) -> tuple[np.ndarray, np.ndarray]:
  """Example ``index`` as the token sequence ``s`` ``[<= L+1]`` and its answer mask over
  ``s[1:]`` (``inputs = s[:-1]``, ``targets = s[1:]``)."""
  rng = _rng(kind, seed, split, index) if kind in _KIND_CODES else None
  if kind == "passkey":
    return _passkey(rng, seq_len, **kwargs)
  if kind == "mqar":
    return _mqar(rng, seq_len, **kwargs)
  if kind == "flipflop":
    return _flipflop(rng, seq_len, **kwargs)
  raise ValueError(f"Unknown long probe kind {kind!r}; known: {KINDS}.")


def make_example(kind: str, index: int, *, seed: int, split: str, seq_len: int,
                 **kwargs) -> packing.Batch:
  """Example ``index`` of a long probe: a dict of ``[L]`` arrays (``packing.BATCH_KEYS``)."""
  s, mask = sequence(kind, index, seed=seed, split=split, seq_len=seq_len, **kwargs)
  n = len(s) - 1
  row = packing.rows_to_batch([[packing.Chunk(s.astype(np.int32), 0, n)]], seq_len)
  row = {k: v[0] for k, v in row.items()}
  row["weights"][:n] = mask
  return row


def make_batch(kind: str, indices: Sequence[int], **kwargs) -> packing.Batch:
  """Examples ``indices`` stacked: a dict of ``[len(indices), L]`` arrays."""
  rows = [make_example(kind, int(i), **kwargs) for i in indices]
  return {k: np.stack([r[k] for r in rows]) for k in packing.BATCH_KEYS}
