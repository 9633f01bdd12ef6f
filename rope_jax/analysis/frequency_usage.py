"""Which RoPE frequencies does a model use? (§4 of the paper; Figs 3–4, value control Fig. 14).

By Cauchy–Schwarz, the contribution of chunk k to a RoPE activation is bounded by
``|q_i^{(k)T} ρ(g_k)^{j-i} k_j^{(k)}| ≤ ‖q_i^{(k)}‖ ‖k_j^{(k)}‖``, so the paper measures how much a
head *can* use frequency g_k by the mean 2-norm of its chunk k, for queries and keys separately,
before rotation (rotation does not change chunk norms). Values are never rotated and serve as a
control: the paper finds no frequency structure there (App. E.2).

Conventions:

* Inputs are pre-rotation activations ``[B, L, N, H]`` (queries: N heads; keys and values: K
  heads) with an optional validity mask ``[B, L]`` (1 = real token, 0 = padding).
* Outputs are ordered high → low frequency: chunk 0 is the fastest, the order of
  ``rope.to_pairs`` and ``rope.chunk_frequencies`` (via :func:`chunks.rope_chunks`).
* Norms are in the units of the activations themselves (the model's q/k/v units).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rope_jax.analysis.chunks import DEFAULT_ROPE
from rope_jax.analysis.chunks import unchecked_chunks
from rope_jax.analysis.chunks import check_rope
from rope_jax.config.schema import RopeConfig

INTERMEDIATE_NAMES: tuple[str, ...] = ("q", "k", "v", "q_rot", "k_rot")


def chunk_norms(x: jax.Array, *, rope: RopeConfig = DEFAULT_ROPE) -> jax.Array:
  """The 2-norm of every RoPE chunk: ``[..., H] -> [..., H/2]`` (float32), fastest first."""
  return _chunk_norms(x, rope=check_rope(rope, np.shape(x)[-1]))


@functools.partial(jax.jit, static_argnames=("rope",))
def _chunk_norms(x, *, rope) -> jax.Array:
  pairs = unchecked_chunks(jnp.asarray(x, jnp.float32), rope)
  return jnp.sqrt(jnp.sum(jnp.square(pairs), axis=-1))


def _check_mask(mask, batch_shape: tuple[int, ...]) -> np.ndarray:
  """The ``[B, L]`` mask as float32 host weights (all ones if None), or ValueError."""
  if mask is None:
    return np.ones(batch_shape, np.float32)
  mask = np.asarray(mask)
  if mask.shape != batch_shape:
    raise ValueError(f"mask must be [B, L] = {batch_shape} (1 = valid token), got {mask.shape}.")
  if not np.any(mask):
    raise ValueError("mask has no valid token: nothing to average over.")
  return (mask != 0).astype(np.float32)


def mean_chunk_norms(
    x: jax.Array,
    mask: jax.Array | None = None,
    *,
    rope: RopeConfig = DEFAULT_ROPE,
) -> jax.Array:
  """Per-head mean chunk norm over the valid tokens of a batch (Fig. 4 is one layer of this).

  Args:
    x: ``[B, L, N, H]`` pre-rotation queries, keys or values.
    mask: optional ``[B, L]``, nonzero for valid tokens; None averages over all tokens.
    rope: the encoding (its layout and, for ``"partial"``, its rotated width define the chunks).

  Returns:
    float32 ``[N, H/2]``: row n, column k is the mean of ``‖x^{(k)}‖`` over valid tokens of head
    n; column 0 is the highest frequency.
  """
  if np.ndim(x) != 4:
    raise ValueError(f"x must be [B, L, N, H], got shape {np.shape(x)}.")
  check_rope(rope, np.shape(x)[-1])
  weights = _check_mask(mask, np.shape(x)[:2])
  return _masked_mean_norms(x, weights, rope=rope)


@functools.partial(jax.jit, static_argnames=("rope",))
def _masked_mean_norms(x, weights, *, rope) -> jax.Array:
  norms = _chunk_norms(x, rope=rope)  # [B, L, N, H/2]
  weights = weights[:, :, None, None]
  return jnp.sum(norms * weights, axis=(0, 1)) / jnp.sum(weights, axis=(0, 1))


def layer_frequency_usage(
    per_layer: Sequence[jax.Array],
    mask: jax.Array | None = None,
    *,
    rope: RopeConfig = DEFAULT_ROPE,
) -> jax.Array:
  """Fig. 3: mean chunk norm per layer, averaged over heads and valid tokens.

  Args:
    per_layer: one ``[B, L, N, H]`` array per layer (same H in every layer).
    mask, rope: as in :func:`mean_chunk_norms`.

  Returns:
    float32 ``[num_layers, H/2]``, high → low frequency along the last axis.
  """
  if not per_layer:
    raise ValueError("per_layer must hold at least one [B, L, N, H] array, got none.")
  return jnp.stack([
      mean_chunk_norms(x, mask, rope=rope).mean(axis=0)
      for x in per_layer
  ])


def frequency_usage_from_intermediates(
    intermediates: Sequence[Mapping[str, jax.Array]],
    mask: jax.Array | None = None,
    *,
    rope: RopeConfig = DEFAULT_ROPE,
    names: Sequence[str] = ("q", "k", "v"),
) -> dict[str, jax.Array]:
  """Per-layer, per-head frequency usage of a model's exposed intermediates.

  Args:
    intermediates: one dict per layer with (at least) the entries in ``names``, each
      ``[B, L, N or K, H]`` (the model's ``"q"``, ``"k"``, ``"v"``; pre-rotation).
    mask: optional ``[B, L]`` valid-token mask.
    rope: the encoding, as in :func:`mean_chunk_norms`.
    names: which entries to measure (any of ``INTERMEDIATE_NAMES``).

  Returns:
    ``{name: float32 [num_layers, heads, H/2]}``, high → low frequency along the last axis.
    ``.mean(axis=1)`` is the per-layer (Fig. 3) view; ``[layer]`` the per-head (Fig. 4) view.
  """
  if not intermediates:
    raise ValueError("intermediates must hold one dict per layer, got none.")
  for name in names:
    if name not in INTERMEDIATE_NAMES:
      raise ValueError(f"names must be among {INTERMEDIATE_NAMES}, got {name!r}.")
  usage = {}
  for name in names:
    for layer, inter in enumerate(intermediates):
      if name not in inter:
        raise ValueError(f"layer {layer} has no {name!r}; it has {sorted(inter)}.")
    usage[name] = jnp.stack([
        mean_chunk_norms(inter[name], mask, rope=rope)
        for inter in intermediates
    ])
  return usage


def stationary_chunks(
    x: jax.Array,
    x_rot: jax.Array,
    *,
    rope: RopeConfig = DEFAULT_ROPE,
    atol: float = 1e-6,
) -> np.ndarray:
  """Chunks the kernel left unrotated at every token: the identity (NoPE) channels, from data.

  Compares pre- and post-rotation activations chunk by chunk. With at least one token at a
  nonzero position whose chunk is nonzero, a rotating chunk changes, so the result equals
  ``rope.chunk_frequencies(...) == 0``; it is read from the model, not from its config.

  Args:
    x, x_rot: ``[..., H]`` the same activations before and after ``rope.apply_rope``.
    rope: the encoding whose chunks are compared.
    atol: absolute tolerance for "unchanged".

  Returns:
    bool numpy ``[H/2]``, True for identity chunks (high → low frequency order).
  """
  if np.shape(x) != np.shape(x_rot):
    raise ValueError(
        f"x and x_rot must have the same shape, got {np.shape(x)} and {np.shape(x_rot)}.")
  check_rope(rope, np.shape(x)[-1])
  return np.asarray(_unchanged_chunks(x, x_rot, atol, rope=rope))


@functools.partial(jax.jit, static_argnames=("rope",))
def _unchanged_chunks(x, x_rot, atol, *, rope) -> jax.Array:
  delta = _chunk_norms(jnp.asarray(x, jnp.float32) - jnp.asarray(x_rot, jnp.float32), rope=rope)
  return jnp.all(delta.reshape(-1, delta.shape[-1]) <= atol, axis=0)
