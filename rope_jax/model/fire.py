"""FIRE (Li et al. 2024, arXiv 2310.04418): a learned relative-position bias on the logits.

``bias[b, n, i, j] = f_n( ψ(i - j) / ψ(max(|L|, i)) )`` with ``ψ(x) = log(|c|·x + 1)`` (the
input map is ``rope_jax.encodings.fire_normalized_distance``) and ``f`` a two-layer MLP
``R -> R^hidden -> R^N`` with a ReLU, one output per query head. Learned: c (init 0.1), the
threshold's multiplier (init 1; ``|L| = |multiplier| · init_threshold``, init_threshold = 512, so
the learned quantity is of order one) and the MLP. The paper's defaults: 32 hidden units.

The MLP is evaluated one hidden unit at a time (a sum of ``hidden`` rank-one terms), so the
largest temporary is the ``[B, N, L, S]`` bias itself, not ``[B, L, S, hidden]``.
Shapes: B batch, L queries, S keys, N query heads.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rope_jax import encodings

FIRE_HIDDEN = 32
FIRE_INIT_C = 0.1
FIRE_INIT_THRESHOLD = 512.0


def _param(init: jax.Array) -> nnx.Param:
  """A small replicated parameter (no logical axis names: every device holds all of it)."""
  return nnx.Param(init, out_sharding=(None,) * init.ndim, eager_sharding=False)


class Fire(nnx.Module):
  """FIRE bias for ``num_heads`` query heads."""

  def __init__(self, num_heads: int, *, rngs: nnx.Rngs, hidden: int = FIRE_HIDDEN,
               init_c: float = FIRE_INIT_C, init_threshold: float = FIRE_INIT_THRESHOLD,
               param_dtype: jnp.dtype = jnp.float32):
    if hidden < 1 or num_heads < 1:
      raise ValueError(f"FIRE needs hidden >= 1 and num_heads >= 1, got {hidden}, {num_heads}.")
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
    self.c = _param(jnp.asarray(init_c, param_dtype))
    self.threshold_multiplier = _param(jnp.asarray(1.0, param_dtype))
    # The MLP's input is a scalar (fan-in 1): a truncated standard normal.
    self.w_in = _param(jax.random.truncated_normal(rngs.params(), -2.0, 2.0, (hidden,),
                                                   param_dtype))
    self.b_in = _param(jnp.zeros((hidden,), param_dtype))
    self.w_out = _param(init(rngs.params(), (hidden, num_heads), param_dtype))
    self.b_out = _param(jnp.zeros((num_heads,), param_dtype))
    self.init_threshold = float(init_threshold)

  def threshold(self) -> jax.Array:
    """|L|, the position below which queries share one normaliser ψ(|L|)."""
    return jnp.abs(self.threshold_multiplier[...].astype(jnp.float32)) * self.init_threshold

  def __call__(self, q_positions: jax.Array, k_positions: jax.Array) -> jax.Array:
    """``q_positions [B, L]``, ``k_positions [B, S]`` int -> float32 bias ``[B, N, L, S]``."""
    x = encodings.fire_normalized_distance(q_positions, k_positions,
                                           self.c[...].astype(jnp.float32), self.threshold())
    w_in, b_in = self.w_in[...].astype(jnp.float32), self.b_in[...].astype(jnp.float32)
    w_out = self.w_out[...].astype(jnp.float32)
    out = self.b_out[...].astype(jnp.float32)[None, :, None, None]
    for h in range(w_in.shape[0]):
      unit = jax.nn.relu(x * w_in[h] + b_in[h])  # [B, L, S]
      out = out + unit[:, None] * w_out[h][None, :, None, None]
    return out
