"""Save-time fingerprints of checkpointed arrays: cheap on-device checksums of the global values.

OCDBT checksums its b-tree nodes but not the data files holding larger chunks, so bytes
overwritten in place there decode silently to other values. ``manager.Checkpointer.save`` records
two 32-bit position-weighted fingerprints of every array leaf (:func:`record`) and restore
recomputes and compares them (:func:`mismatch`). Only integer arithmetic (wrapping mod 2**32), so
a fingerprint is bit-identical on every backend and for every sharding and reduction order.

Layer 2; pure JAX, no Orbax.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from absl import logging
import jax
from jax import lax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

PyTree = Any

FORMAT = 1  # Version of the record written by :func:`record`.

_UNSIGNED_BY_BITS = {
    2: getattr(jnp, "uint2", None),
    4: getattr(jnp, "uint4", None),
    8: jnp.uint8,
    16: jnp.uint16,
    32: jnp.uint32,
}


def _bits(dtype: Any) -> int | None:
  if jnp.issubdtype(dtype, jnp.integer):
    return jnp.iinfo(dtype).bits
  if jnp.issubdtype(dtype, jnp.floating):
    return jnp.finfo(dtype).bits
  return None


def fingerprintable(dtype: Any) -> bool:
  """Whether :func:`_as_uint32` maps this dtype bit-exactly onto uint32 words."""
  if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    return True
  if dtype == jnp.bool_:
    return True
  if jnp.issubdtype(dtype, jnp.complexfloating):
    return fingerprintable(jnp.finfo(dtype).dtype)
  bits = _bits(dtype)
  return bits == 64 or _UNSIGNED_BY_BITS.get(bits) is not None


def _as_uint32(x: jax.Array) -> jax.Array:
  """Bit-exact view of ``x`` as uint32 words (64-bit values become 2 words)."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  if jnp.issubdtype(x.dtype, jnp.complexfloating):
    return jnp.stack([_as_uint32(jnp.real(x)), _as_uint32(jnp.imag(x))], -1)
  bits = _bits(x.dtype)
  if bits in (32, 64):
    return lax.bitcast_convert_type(x, jnp.uint32)  # 64 bits: a trailing dim of 2
  return lax.bitcast_convert_type(x, _UNSIGNED_BY_BITS[bits]).astype(jnp.uint32)


def fingerprint_one(x: jax.Array) -> jax.Array:
  """Two order-sensitive 32-bit hashes of the bits of ``x``, shape ``[2]`` uint32.

  Word i with value u_i contributes u_i * w_i (w_i odd, so any single changed word changes the
  first sum) and a mixed (u_i ^ k_i) term to the second.
  """
  u = _as_uint32(x)
  idx = jnp.zeros(u.shape, jnp.uint32)
  stride = 1
  for d in reversed(range(u.ndim)):
    idx = idx + lax.broadcasted_iota(jnp.uint32, u.shape, d) * jnp.uint32(stride % 2**32)
    stride *= u.shape[d]
  w = (idx * jnp.uint32(0x9E3779B1) + jnp.uint32(0x7F4A7C15)) | jnp.uint32(1)
  first = jnp.sum(u * w, dtype=jnp.uint32)
  h = (u ^ (idx * jnp.uint32(0x85EBCA77) + jnp.uint32(0xC2B2AE3D))) * jnp.uint32(0x27D4EB2F)
  h = h ^ (h >> jnp.uint32(15))
  second = jnp.sum(h, dtype=jnp.uint32)
  return jnp.stack([first, second])


# One call per leaf (compiled once per shape/dtype/sharding): its uint32 temporaries exist for
# one leaf at a time, so fingerprinting a save costs at most the largest leaf, not the state.
_fingerprint_leaf = jax.jit(fingerprint_one)


def _to_host(x: jax.Array) -> np.ndarray:
  if x.is_fully_addressable or x.is_fully_replicated:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def path_str(path: tuple[Any, ...]) -> str:
  """A tree path as text, e.g. ``"['params']['embed']"``."""
  return jax.tree_util.keystr(path)


def fingerprints(tree: PyTree) -> dict[str, dict[str, Any]]:
  """Fingerprints of every array leaf of ``tree``, keyed by tree path.

  Non-array leaves (Python scalars, strings) and exotic dtypes are skipped. Each leaf is hashed
  by its own jitted call (dispatched asynchronously, then gathered).
  """
  items = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if isinstance(leaf, (np.ndarray, np.generic)):
      leaf = jnp.asarray(leaf)
    if not isinstance(leaf, jax.Array) or not fingerprintable(leaf.dtype):
      continue
    items.append((path_str(path), leaf, _fingerprint_leaf(leaf)))
  return {name: {"dtype": str(leaf.dtype), "shape": list(leaf.shape),
                 "fp": [int(v) for v in _to_host(fp)]}
          for name, leaf, fp in items}


def record(tree: PyTree) -> dict[str, Any]:
  """The JSON record saved beside a checkpoint: ``{"format": FORMAT, "leaves": ...}``."""
  return {"format": FORMAT, "leaves": fingerprints(tree)}


def mismatch(tree: PyTree, stored: Any, step: int) -> str | None:
  """Why the restored ``tree`` differs from its saved ``record``; None when it matches.

  Leaves whose dtype or shape differ from the saved ones (a restore may cast, e.g. bf16 -> f32)
  are not comparable and skipped; a warning says so when no leaf at all could be compared.
  """
  if not isinstance(stored, Mapping):
    return f"checksum record is {type(stored).__name__}"
  if stored.get("format") != FORMAT:
    return f"unknown checksum record format {stored.get('format')!r}"
  records = stored.get("leaves", {})
  compared = 0
  bad = []
  for name, rec in fingerprints(tree).items():
    saved = records.get(name)
    if saved is None or saved.get("dtype") != rec["dtype"] or saved.get("shape") != rec["shape"]:
      continue
    compared += 1
    if saved.get("fp") != rec["fp"]:
      bad.append(name)
  if bad:
    shown = ", ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
    return f"checksum mismatch in {len(bad)} array(s): {shown}"
  if records and not compared:
    logging.warning("Checkpoint step %d: no array could be checked against its saved checksum "
                    "(tree paths or dtypes of the restore target differ from the saved state).",
                    step)
  return None
