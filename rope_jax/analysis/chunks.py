"""The 2-D RoPE chunks of a head, in the kernel's own layout.

The paper writes a query or key as H/2 two-dimensional chunks ``q^{(k)}`` (SPEC §1.1); chunk k
rotates at frequency ``g_k``. Which two dims form chunk k depends on the pairing of the kernel
(``rope.to_pairs``: split-half or interleaved) and, for the ``"partial"`` variant, on the rotated
width R; both come from the encoding's ``RopeConfig``. Everything in ``rope_jax.analysis`` that
talks about "chunk k" goes through :func:`rope_chunks`, so chunk k here is chunk k of
``rope.chunk_frequencies`` and of the kernel.

Every analysis function takes the encoding as one hashable ``RopeConfig`` (``rope=``), checked
once at the public entry (:func:`check_rope`) and passed on as a static argument under jit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rope_jax import rope as rope_lib
from rope_jax.config.schema import RopeConfig

DEFAULT_ROPE = RopeConfig()  # RoPE, θ = 10k, split-half pairs.
NOPE = RopeConfig(fraction=0.0)


def check_rope(rope: RopeConfig, head_dim: int) -> RopeConfig:
  """The one validation of an analysis entry point: ``rope`` is a ``RopeConfig`` valid for H.

  Raises ValueError (naming the bad value and what is allowed) otherwise; returns ``rope``, which
  is hashable and passed on as a static argument of the jitted parts.
  """
  if not isinstance(rope, RopeConfig):
    raise ValueError(f"rope must be a rope_jax.config.schema.RopeConfig, got {rope!r}.")
  rope.validate(head_dim)
  return rope


def rotary_dim(rope: RopeConfig, head_dim: int) -> int:
  """R, the rotated width of a head: H, or ``2·int(p·H//2)`` for the ``"partial"`` variant."""
  if rope.variant != "partial":
    return head_dim
  return rope_lib.rotary_frequencies(head_dim, theta=rope.theta, fraction=rope.fraction,
                                     variant=rope.variant)[1]


def chunk_frequencies(rope: RopeConfig, head_dim: int) -> np.ndarray:
  """float64 ``[H/2]`` rad/token of every chunk, fastest first (0 = identity chunk)."""
  check_rope(rope, head_dim)
  return rope_lib.chunk_frequencies(head_dim, theta=rope.theta, fraction=rope.fraction,
                                    variant=rope.variant, rope_type=rope.type,
                                    rope_params=rope.scaling_params())


def unchecked_chunks(x: jax.Array, rope: RopeConfig) -> jax.Array:
  """:func:`rope_chunks` without validation (inside jitted code, after the entry checked)."""
  width = rotary_dim(rope, x.shape[-1])
  if width == x.shape[-1]:
    return rope_lib.to_pairs(x, rope.layout)
  return jnp.concatenate(
      [rope_lib.to_pairs(x[..., :width], rope.layout),
       rope_lib.to_pairs(x[..., width:], rope.layout)], axis=-2)


def rope_chunks(x: jax.Array, *, rope: RopeConfig = DEFAULT_ROPE) -> jax.Array:
  """Views ``x [..., H]`` as its RoPE chunks ``[..., H/2, 2]``, fastest frequency first.

  Args:
    x: ``[..., H]`` queries, keys or values (any leading dims, e.g. ``[B, L, N, H]``).
    rope: the encoding: its ``layout`` pairs the dims (``rope.to_pairs``), and for the
      ``"partial"`` variant only the first R dims rotate (:func:`rotary_dim`).

  Returns:
    ``[..., H/2, 2]``: ``to_pairs(x[..., :R])`` then ``to_pairs(x[..., R:])``, the order of
    ``rope.chunk_frequencies``.
  """
  check_rope(rope, np.shape(x)[-1])
  return unchecked_chunks(x, rope)


def chunk_dims(head_dim: int, *, rope: RopeConfig = DEFAULT_ROPE) -> np.ndarray:
  """The two dims of every chunk: int ``[H/2, 2]``; row k holds the dims of chunk k."""
  return np.asarray(rope_chunks(np.arange(head_dim), rope=rope))


def embed_in_chunk(
    psi: jax.Array, chunk: int, head_dim: int, *, rope: RopeConfig = DEFAULT_ROPE) -> jax.Array:
  """A head vector ``[H]`` that is ``psi [2]`` in chunk ``chunk`` and zero elsewhere."""
  psi = jnp.asarray(psi, jnp.float32)
  if psi.shape != (2,):
    raise ValueError(f"psi must be a 2-vector (one RoPE chunk), got shape {psi.shape}.")
  if not 0 <= chunk < head_dim // 2:
    raise ValueError(f"chunk must be in [0, H/2 = {head_dim // 2}), got {chunk}.")
  dims = chunk_dims(head_dim, rope=rope)[chunk]
  return jnp.zeros((head_dim,), jnp.float32).at[dims].set(psi)
