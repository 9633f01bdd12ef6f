"""The 2-D RoPE chunks of a head, in the kernel's own layout.

The paper writes a query or key as H/2 two-dimensional chunks ``q^{(k)}`` (SPEC §1.1); chunk k
rotates at frequency ``g_k``. Which two dims form chunk k depends on the pairing of the kernel
(``rope.to_pairs``: split-half or interleaved) and, for the ``"partial"`` variant, on the rotated
width R. Everything in ``rope_jax.analysis`` that talks about "chunk k" goes through
:func:`rope_chunks`, so chunk k here is chunk k of ``rope.chunk_frequencies`` and of the kernel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rope_jax import rope


def validate_chunk_layout(head_dim: int, layout: str, rotary_dim: int | None) -> int:
  """Raises ValueError for a bad layout, odd H or bad rotary width; returns R (H if None)."""
  if layout not in rope.LAYOUTS:
    raise ValueError(f"layout must be one of {rope.LAYOUTS}, got {layout!r}.")
  if head_dim % 2:
    raise ValueError(f"the last axis (head_dim H) must be even, got {head_dim}.")
  if rotary_dim is None:
    return head_dim
  if isinstance(rotary_dim, bool) or not isinstance(rotary_dim, (int, np.integer)):
    raise ValueError(f"rotary_dim must be an even int in [0, H={head_dim}], got {rotary_dim!r}.")
  if rotary_dim % 2 or not 0 <= rotary_dim <= head_dim:
    raise ValueError(f"rotary_dim must be an even int in [0, H={head_dim}], got {rotary_dim}.")
  return int(rotary_dim)


def rope_chunks(
    x: jax.Array, *, layout: str = "split_half", rotary_dim: int | None = None) -> jax.Array:
  """Views ``x [..., H]`` as its RoPE chunks ``[..., H/2, 2]``, fastest frequency first.

  Args:
    x: ``[..., H]`` queries, keys or values (any leading dims, e.g. ``[B, L, N, H]``).
    layout: the kernel's pairing, ``"split_half"`` or ``"interleaved"`` (``rope.LAYOUTS``).
    rotary_dim: R, the rotated width; ``None`` means H (RoPE, p-RoPE, reversed). For the
      ``"partial"`` variant pass ``rope.rotary_frequencies(...)[1]``.

  Returns:
    ``[..., H/2, 2]``: ``to_pairs(x[..., :R])`` then ``to_pairs(x[..., R:])``, the order of
    ``rope.chunk_frequencies``.
  """
  rotary_dim = validate_chunk_layout(x.shape[-1], layout, rotary_dim)
  if rotary_dim == x.shape[-1]:
    return rope.to_pairs(x, layout)
  return jnp.concatenate(
      [rope.to_pairs(x[..., :rotary_dim], layout), rope.to_pairs(x[..., rotary_dim:], layout)],
      axis=-2)


def chunk_dims(
    head_dim: int, *, layout: str = "split_half", rotary_dim: int | None = None) -> np.ndarray:
  """The two dims of every chunk: int ``[H/2, 2]``; row k holds the dims of chunk k."""
  return np.asarray(rope_chunks(np.arange(head_dim), layout=layout, rotary_dim=rotary_dim))


def embed_in_chunk(
    psi: jax.Array,
    chunk: int,
    head_dim: int,
    *,
    layout: str = "split_half",
    rotary_dim: int | None = None,
) -> jax.Array:
  """A head vector ``[H]`` that is ``psi [2]`` in chunk ``chunk`` and zero elsewhere."""
  psi = jnp.asarray(psi, jnp.float32)
  if psi.shape != (2,):
    raise ValueError(f"psi must be a 2-vector (one RoPE chunk), got shape {psi.shape}.")
  if not 0 <= chunk < head_dim // 2:
    raise ValueError(f"chunk must be in [0, H/2 = {head_dim // 2}), got {chunk}.")
  dims = chunk_dims(head_dim, layout=layout, rotary_dim=rotary_dim)[chunk]
  return jnp.zeros((head_dim,), jnp.float32).at[dims].set(psi)
