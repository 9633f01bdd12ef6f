"""Next-token losses over logits: weighted cross-entropy and the z-loss.

Shared by training (``rope_jax.training.train_lib``) and evaluation
(``rope_jax.training.evaluate``), so evaluation does not import the trainer. Shapes: B batch,
L sequence length, V vocabulary size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy_sums(logits: jax.Array, targets: jax.Array,
                       weights: jax.Array) -> dict[str, jax.Array]:
  """Weighted SUMS of the next-token loss terms, for exact averaging over microbatches.

  Args:
    logits: float ``[B, L, V]`` (computed in float32).
    targets: int ``[B, L]``.
    weights: float ``[B, L]``; 0 masks padding and document ends of packed rows.

  Returns:
    float32 scalars ``ce_sum`` (Σ w·ce), ``log_z_sq_sum`` (Σ w·log(Z)²) and ``weight_sum``
    (Σ w).
  """
  logits = logits.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  ce = log_z - target_logit
  w = weights.astype(jnp.float32)
  return {"ce_sum": jnp.sum(w * ce), "log_z_sq_sum": jnp.sum(w * jnp.square(log_z)),
          "weight_sum": jnp.sum(w)}


def loss_from_sums(sums: dict[str, jax.Array],
                   z_loss: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """``(objective, aux)`` of :func:`cross_entropy` from (possibly accumulated) sums."""
  denom = jnp.maximum(sums["weight_sum"], 1.0)
  loss = sums["ce_sum"] / denom
  z_term = z_loss * sums["log_z_sq_sum"] / denom
  return loss + z_term, {"loss": loss, "z_loss": z_term, "num_tokens": sums["weight_sum"]}


def cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array,
                  z_loss: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Weighted next-token cross-entropy (nats per target token) plus optional z-loss.

  Args:
    logits: float32 ``[B, L, V]``.
    targets: int ``[B, L]`` (the token after each input).
    weights: float ``[B, L]``; 0 masks padding and document ends of packed rows.
    z_loss: coefficient of ``log(Z)²``.

  Returns:
    ``(objective, aux)``: objective = (Σ w·ce + z_loss·Σ w·log(Z)²) / Σ w; aux has ``loss``
    (the cross-entropy part), ``z_loss`` (its term), ``num_tokens`` (Σ w).
  """
  return loss_from_sums(cross_entropy_sums(logits, targets, weights), z_loss)
