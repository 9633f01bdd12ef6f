"""The model's hooks for positional encodings that are not rotations.

* Attention-logit biases, chosen per layer by ``RopeConfig.bias``: ``"alibi"`` (fixed per-head
  slopes) or ``"fire"`` (a learned MLP, ``rope_jax.model.fire``). Both are functions of the query
  and key *positions* (``[B, L]`` and ``[B, S]``), never of slots, so they are right for packed
  rows (positions restart per document; the segment mask does the rest) and for a KV cache
  (which stores each key's position).
* Absolute encodings added to the token embeddings, chosen by ``ModelConfig.absolute_encoding``:
  ``"sinusoidal"`` (Vaswani et al.); with ``rope.fraction = 0`` that is the "NoPE with absolute
  positions" baseline.

The math lives in ``rope_jax.encodings`` (pure functions); this module only wires it to NNX.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rope_jax import encodings
from rope_jax.model import fire as fire_lib


class Alibi(nnx.Module):
  """ALiBi's fixed bias ``-m_n · (i - j)`` with the standard slopes of ``num_heads`` heads."""

  def __init__(self, num_heads: int):
    self.slopes = tuple(float(s) for s in encodings.alibi_slopes(num_heads))  # Static, no params.

  def __call__(self, q_positions: jax.Array, k_positions: jax.Array) -> jax.Array:
    """``q_positions [B, L]``, ``k_positions [B, S]`` -> float32 ``[B, N, L, S]``."""
    return encodings.alibi_bias(q_positions, k_positions, np.asarray(self.slopes))


def logit_bias(kind: str, num_heads: int, *, rngs: nnx.Rngs,
               param_dtype: jnp.dtype = jnp.float32) -> nnx.Module | None:
  """The bias module of one attention layer (None for ``"none"``)."""
  if kind == "none":
    return None
  if kind == "alibi":
    return Alibi(num_heads)
  if kind == "fire":
    return fire_lib.Fire(num_heads, rngs=rngs, param_dtype=param_dtype)
  raise ValueError(f"rope.bias must be one of {encodings.LOGIT_BIASES}, got {kind!r}.")


def absolute_embedding(kind: str, positions: jax.Array, dim: int, dtype: jnp.dtype
                       ) -> jax.Array | None:
  """What is added to the ``[B, L, D]`` embeddings at ``positions [B, L]`` (None for "none")."""
  if kind == "none":
    return None
  if kind == "sinusoidal":
    return encodings.sinusoidal_embedding(positions, dim).astype(dtype)
  raise ValueError(f"model.absolute_encoding must be one of {encodings.ABSOLUTE_ENCODINGS}, "
                   f"got {kind!r}.")
