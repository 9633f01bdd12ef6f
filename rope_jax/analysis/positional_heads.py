"""Positional attention heads: what RoPE can build and NoPE cannot (§5 of the paper; SPEC §2c).

A head is *diagonal* if α_{i,i} > 1 - ε for every query i and *previous-token* if
α_{i,i-1} > 1 - ε (α = causal softmax attention weights).

* **Prop. 5.2 (NoPE cannot).** On the sequence [x_bos, x, x] a single NoPE head has
  ``a_{3,3} = ⟨q_3, k_3⟩ = ⟨q_3, k_2⟩ = a_{3,2}``, so ``α_{3,3} = α_{3,2} < 1/2`` whatever its
  weights: neither pattern is possible. :func:`repeated_token_attention`.
* **Thm 5.3 (RoPE can, robustly).** Put ψ in one RoPE chunk of frequency g. Diagonal head:
  ``q_i = k_j = ψ`` gives ``a_{i,j} = ‖ψ‖² cos((j-i) g)``, maximal only at j = i. Previous-token
  head: ``q_i = ψ, k_j = ρ(g) ψ`` gives ``a_{i,j} = ‖ψ‖² cos((j+1-i) g)``, maximal only at
  j = i - 1. As ‖ψ‖ → ∞ the target weight tends to 1 (:func:`construction_logits`,
  :func:`sufficient_norm`). A fast frequency separates the target from its neighbours most for a
  given norm (logit gap ``‖ψ‖²(1 - cos g)``); the paper calls the highest "most effective", not
  necessary. Over long windows every irrational rotation comes back close to alignment
  (e.g. ``cos(44 · 1 rad) = 0.99996``), so the norm needed is not monotone in g at the fast end.
* **Detection** in a model (§4, Gemma 7B L1H5 diagonal, L1H8 previous-token): the paper's
  definition is strict, α > 1 - ε for *every* query: :func:`positional_head_min_scores` (the
  minimum over queries; a head qualifies iff it exceeds 1 - ε). :func:`positional_head_scores`
  is a separate, softer statistic, the *mean* α_{i,i} / α_{i,i-1} per layer and head.

Logits here are raw dot products (``logit_scale`` multiplies them, e.g. ``H**-0.5`` as in Gemma).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rope_jax.analysis.chunks import DEFAULT_ROPE
from rope_jax.analysis.chunks import NOPE
from rope_jax.analysis.chunks import check_rope
from rope_jax.analysis.chunks import embed_in_chunk
from rope_jax.config.schema import RopeConfig

HEAD_KINDS: tuple[str, ...] = ("diagonal", "previous_token")
TARGET_OFFSET: dict[str, int] = {"diagonal": 0, "previous_token": 1}


def _check_kind(kind: str) -> int:
  if kind not in TARGET_OFFSET:
    raise ValueError(f"kind must be one of {HEAD_KINDS}, got {kind!r}.")
  return TARGET_OFFSET[kind]


def _check_square(scores) -> None:
  shape = np.shape(scores)
  if len(shape) < 2 or shape[-1] != shape[-2]:
    raise ValueError(f"logits / attention must be [..., L, L], got shape {shape}.")


# ----------------------------------------------------------------------------------------------
# One head, attention from queries and keys.


def rope_logits(
    q: jax.Array,
    k: jax.Array,
    *,
    positions: jax.Array | None = None,
    rope: RopeConfig = DEFAULT_ROPE,
) -> jax.Array:
  """Single-head RoPE logits ``a_{i,j} = ⟨R(p_i) q_i, R(p_j) k_j⟩``.

  Args:
    q, k: ``[L, H]`` pre-rotation queries and keys of one head.
    positions: int ``[L]`` token positions (default ``0..L-1``).
    rope: the encoding (``rope.apply_rope``).

  Returns:
    float32 ``[L, L]`` (query i, key j), unmasked.
  """
  if np.ndim(q) != 2 or np.shape(q) != np.shape(k):
    raise ValueError(
        f"q and k must both be [L, H], got shapes {np.shape(q)} and {np.shape(k)}.")
  length = np.shape(q)[0]
  positions = np.arange(length) if positions is None else positions
  if np.shape(positions) != (length,):
    raise ValueError(f"positions must be [L] = {(length,)}, got {np.shape(positions)}.")
  return _rope_logits(q, k, positions, rope=check_rope(rope, np.shape(q)[1]))


@functools.partial(jax.jit, static_argnames=("rope",))
def _rope_logits(q, k, positions, *, rope) -> jax.Array:
  q_rot = rope.apply(jnp.asarray(q, jnp.float32)[:, None, :], positions)[:, 0]
  k_rot = rope.apply(jnp.asarray(k, jnp.float32)[:, None, :], positions)[:, 0]
  return q_rot @ k_rot.T


def causal_attention(logits: jax.Array, logit_scale: float = 1.0) -> jax.Array:
  """Causal softmax over keys: ``[..., L, L] -> [..., L, L]`` with α_{i,j} = 0 for j > i."""
  _check_square(logits)
  return _causal_softmax(logits, logit_scale)


@jax.jit
def _causal_softmax(logits: jax.Array, logit_scale) -> jax.Array:
  logits = jnp.asarray(logits, jnp.float32)
  length = logits.shape[-1]
  causal = jnp.tril(jnp.ones((length, length), bool))
  return jax.nn.softmax(jnp.where(causal, logits * logit_scale, -jnp.inf), axis=-1)


def single_head_attention(
    x: jax.Array,
    w_q: jax.Array,
    w_k: jax.Array,
    *,
    logit_scale: float = 1.0,
    rope: RopeConfig = DEFAULT_ROPE,
) -> jax.Array:
  """Causal attention of one head on inputs ``x [L, D]`` with ``w_q, w_k [D, H]``: ``[L, L]``.

  ``RopeConfig(fraction=0)`` is NoPE (the kernel returns queries and keys unrotated).
  """
  x_shape, wq_shape, wk_shape = np.shape(x), np.shape(w_q), np.shape(w_k)
  if len(x_shape) != 2 or len(wq_shape) != 2 or wq_shape != wk_shape or wq_shape[0] != x_shape[1]:
    raise ValueError(
        f"need x [L, D] and w_q, w_k [D, H]; got x {x_shape}, w_q {wq_shape}, w_k {wk_shape}.")
  return _single_head(x, w_q, w_k, logit_scale, rope=check_rope(rope, wq_shape[1]))


@functools.partial(jax.jit, static_argnames=("rope",))
def _single_head(x, w_q, w_k, logit_scale, *, rope) -> jax.Array:
  x = jnp.asarray(x, jnp.float32)
  logits = _rope_logits(x @ w_q, x @ w_k, jnp.arange(x.shape[0]), rope=rope)
  return _causal_softmax(logits, logit_scale)


def repeated_token_attention(
    w_q: jax.Array,
    w_k: jax.Array,
    x_bos: jax.Array,
    x: jax.Array,
    *,
    logit_scale: float = 1.0,
    rope: RopeConfig = NOPE,
) -> jax.Array:
  """Prop. 5.2's counterexample: one head's attention ``[3, 3]`` on ``[x_bos, x, x]``.

  With NoPE (``RopeConfig(fraction=0)``, the default) ``α[2, 2] == α[2, 1] < 1/2`` for any
  weights (the keys of the two x are identical, bit for bit; float32 may round α up to exactly
  1/2 when the BOS weight underflows): the last token cannot single out itself (diagonal) or its
  predecessor (previous-token). Pass ``rope=RopeConfig()`` (RoPE), which can.

  Args:
    w_q, w_k: ``[D, H]`` query and key projections.
    x_bos, x: ``[D]`` the BOS embedding and the repeated token's embedding.
  """
  if np.ndim(x_bos) != 1 or np.shape(x_bos) != np.shape(x):
    raise ValueError(
        f"x_bos and x must both be [D], got shapes {np.shape(x_bos)} and {np.shape(x)}.")
  sequence = jnp.stack([jnp.asarray(x_bos), jnp.asarray(x), jnp.asarray(x)])
  return single_head_attention(sequence, w_q, w_k, logit_scale=logit_scale, rope=rope)


# ----------------------------------------------------------------------------------------------
# Thm 5.3: the constructions.


def construction_qk(
    kind: str,
    *,
    head_dim: int,
    chunk: int = 0,
    norm: float = 1.0,
    rope: RopeConfig = DEFAULT_ROPE,
) -> tuple[jax.Array, jax.Array]:
  """The query and key ``[H]`` of Thm 5.3, repeated at every position.

  ``ψ = norm · (1, 1)/√2`` sits in RoPE chunk ``chunk`` (frequency
  ``rope.chunk_frequencies`` of ``rope``, at ``[chunk]``; 0 is the fastest). Diagonal: ``k = ψ``.
  Previous-token: ``k = ρ(g) ψ``, obtained from the kernel as ψ rotated to position 1, so that
  the key one token back, once rotated, aligns with the query (Fig. 1).
  """
  q = _construction_query(kind, head_dim, chunk, norm, rope)
  return _construction_qk(q, kind=kind, rope=rope)


def _construction_query(kind, head_dim, chunk, norm, rope):
  """Validates eagerly (the entry's one check); returns the query ``[H]``."""
  _check_kind(kind)
  check_rope(rope, head_dim)
  psi = np.full((2,), norm / np.sqrt(2.0), np.float32)
  return embed_in_chunk(psi, chunk, head_dim, rope=rope)


@functools.partial(jax.jit, static_argnames=("kind", "rope"))
def _construction_qk(q, *, kind, rope):
  if kind == "diagonal":
    return q, q
  k = rope.apply(q[None, None, :], jnp.ones((1,), jnp.int32))[0, 0]
  return q, k


def construction_logits(
    kind: str,
    *,
    head_dim: int,
    seq_len: int,
    chunk: int = 0,
    norm: float = 1.0,
    rope: RopeConfig = DEFAULT_ROPE,
) -> jax.Array:
  """Logits ``[L, L]`` of the Thm 5.3 head: ``‖ψ‖² cos((j - i + offset) g)``.

  Logits scale as ``norm²``: ``causal_attention(construction_logits(norm=1) * s)`` is the head
  with ``‖ψ‖² = s``.
  """
  q = _construction_query(kind, head_dim, chunk, norm, rope)
  return _construction_logits(q, seq_len, kind=kind, rope=rope)


@functools.partial(jax.jit, static_argnums=(1,), static_argnames=("kind", "rope"))
def _construction_logits(q, seq_len, *, kind, rope):
  q, k = _construction_qk(q, kind=kind, rope=rope)
  return _rope_logits(jnp.tile(q, (seq_len, 1)), jnp.tile(k, (seq_len, 1)), jnp.arange(seq_len),
                      rope=rope)


def target_attention(attn: jax.Array, kind: str) -> jax.Array:
  """α on the target key: ``[..., L, L] -> [..., L]``; α_{i,i} or α_{i,i-1} (NaN at i = 0 there)."""
  _check_kind(kind)
  _check_square(attn)
  return _target_attention(attn, kind=kind)


@functools.partial(jax.jit, static_argnames=("kind",))
def _target_attention(attn: jax.Array, *, kind: str) -> jax.Array:
  offset = TARGET_OFFSET[kind]
  diag = jnp.diagonal(jnp.asarray(attn), offset=-offset, axis1=-2, axis2=-1)
  return jnp.concatenate([jnp.full(diag.shape[:-1] + (offset,), jnp.nan, diag.dtype), diag], -1)


def min_target_attention(attn: jax.Array, kind: str) -> jax.Array:
  """``min_{i >= 1} α_target(i)``: ``[..., L, L] -> [...]``.

  Query 0 is skipped: it sees one key, so its α_{0,0} = 1 says nothing about the head.
  """
  _check_kind(kind)
  _check_square(attn)
  return _min_target_attention(attn, kind=kind)


@functools.partial(jax.jit, static_argnames=("kind",))
def _min_target_attention(attn: jax.Array, *, kind: str) -> jax.Array:
  return jnp.min(_target_attention(attn, kind=kind)[..., 1:], axis=-1)


def sufficient_norm(freq: float, seq_len: int, eps: float) -> float:
  """A ‖ψ‖ that guarantees ``α_target > 1 - ε`` for every query of a length-L Thm 5.3 head.

  Every query i has at most L - 1 non-target keys, each with logit ``s·cos(m g)`` for an offset
  ``1 <= |m| <= L - 1`` against the target's ``s = ‖ψ‖²``. So with
  ``c = max_{1<=m<=L-1} cos(m g)``:
  ``α_target >= 1 / (1 + (L-1) e^{-s(1-c)}) > 1 - ε``  iff  ``s > ln((L-1)(1-ε)/ε) / (1-c)``.
  Holds for both kinds (the previous-token offsets are a subset). Unit logit scale.

  Args:
    freq: g in rad/token (> 0; g = 0 never separates positions and raises).
    seq_len: L >= 2 tokens.
    eps: ε in (0, 1).

  Returns:
    the norm ``sqrt(ln((L-1)(1-ε)/ε) / (1-c))`` (float64 arithmetic).
  """
  if seq_len < 2:
    raise ValueError(f"seq_len must be >= 2, got {seq_len}.")
  if not 0.0 < eps < 1.0:
    raise ValueError(f"eps must be in (0, 1), got {eps}.")
  c = np.max(np.cos(np.arange(1, seq_len, dtype=np.float64) * freq))
  if not freq > 0 or c >= 1.0:
    raise ValueError(
        f"freq g = {freq} rad/token never separates positions within L = {seq_len} "
        "(cos(m g) = 1 for some offset m); use a rotating frequency g > 0.")
  return float(np.sqrt(max(np.log((seq_len - 1) * (1 - eps) / eps), 0.0) / (1.0 - c)))


# ----------------------------------------------------------------------------------------------
# Detection in a model's attention weights.


def _query_weights(shape, offset, mask, segment_ids) -> np.ndarray:
  """Host bool ``[B, L - offset]``: the queries ``i = offset .. L-1`` that count for ``offset``."""
  if len(shape) != 4 or shape[-1] != shape[-2]:
    raise ValueError(f"attn must be [B, N, L, L], got shape {shape}.")
  batch, _, length, _ = shape
  if not 0 <= offset < length:
    raise ValueError(f"offset must be in [0, L = {length}), got {offset}.")
  linked = _linked_to_previous((batch, length), mask, segment_ids)  # [B, L]
  weights = linked[:, offset:]  # [B, L - offset]: queries i = offset .. L-1.
  for back in range(1, max(offset, 1)):
    weights = weights & linked[:, offset - back:length - back]
  if not weights.any():
    raise ValueError("no valid query (need a valid, in-segment previous token).")
  return weights


def _linked_to_previous(shape_bl: tuple[int, int], mask, segment_ids) -> np.ndarray:
  """Host ``[B, L]`` bool: token i and token i - 1 are both valid and in one segment."""
  valid = np.ones(shape_bl, bool)
  if mask is not None:
    mask = np.asarray(mask)
    if mask.shape != shape_bl:
      raise ValueError(f"mask must be [B, L] = {shape_bl}, got {mask.shape}.")
    valid = mask != 0
  linked = valid[:, 1:] & valid[:, :-1]
  if segment_ids is not None:
    segment_ids = np.asarray(segment_ids)
    if segment_ids.shape != shape_bl:
      raise ValueError(f"segment_ids must be [B, L] = {shape_bl}, got {segment_ids.shape}.")
    linked &= segment_ids[:, 1:] == segment_ids[:, :-1]
  return np.pad(linked, ((0, 0), (1, 0)))


def offset_attention_scores(
    attn: jax.Array,
    offset: int,
    mask: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
) -> jax.Array:
  """Mean ``α_{i, i - offset}`` per head over valid queries: ``[B, N, L, L] -> [N]``.

  Query i counts if tokens ``i - max(offset, 1) .. i`` are valid tokens of one segment: the
  first token of a sequence or segment sees only itself (α_{i,i} = 1 by the causal mask alone)
  and has no previous token, so it is skipped for every offset, and diagonal and previous-token
  scores average over the same queries.

  Args:
    attn: ``[B, N, L, L]`` softmax attention weights (query i, key j).
    offset: 0 (diagonal) or 1 (previous token); any 0 <= offset < L works.
    mask: optional ``[B, L]`` valid-token mask (host array).
    segment_ids: optional ``[B, L]`` ids of packed segments (host array).
  """
  weights = _query_weights(np.shape(attn), offset, mask, segment_ids)
  return _weighted_diagonal_mean(attn, weights.astype(np.float32), offset=offset)


@functools.partial(jax.jit, static_argnames=("offset",))
def _weighted_diagonal_mean(attn: jax.Array, weights: jax.Array, *, offset: int) -> jax.Array:
  diag = jnp.diagonal(jnp.asarray(attn, jnp.float32), offset=-offset, axis1=-2, axis2=-1)
  return jnp.sum(diag * weights[:, None], axis=(0, 2)) / jnp.sum(weights)  # [N]


def offset_attention_min(
    attn: jax.Array,
    offset: int,
    mask: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
) -> jax.Array:
  """Minimum ``α_{i, i - offset}`` per head over the queries of :func:`offset_attention_scores`.

  The paper's definition: a head is diagonal (offset 0) / previous-token (offset 1) iff this
  exceeds 1 - ε, i.e. α > 1 - ε for every query. ``[B, N, L, L] -> [N]``.
  """
  weights = _query_weights(np.shape(attn), offset, mask, segment_ids)
  return _masked_diagonal_min(attn, weights, offset=offset)


@functools.partial(jax.jit, static_argnames=("offset",))
def _masked_diagonal_min(attn: jax.Array, weights: jax.Array, *, offset: int) -> jax.Array:
  diag = jnp.diagonal(jnp.asarray(attn, jnp.float32), offset=-offset, axis1=-2, axis2=-1)
  return jnp.min(jnp.where(weights[:, None], diag, jnp.inf), axis=(0, 2))  # [N]


def positional_head_min_scores(
    attn_per_layer: Sequence[jax.Array],
    mask: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
) -> dict[str, jax.Array]:
  """The strict scores: min over queries of α_{i,i} / α_{i,i-1}, ``{kind: [num_layers, N]}``.

  A head is a diagonal / previous-token head in the paper's sense iff its entry is > 1 - ε.
  Queries as in :func:`offset_attention_scores`.
  """
  if not attn_per_layer:
    raise ValueError("attn_per_layer must hold one [B, N, L, L] array per layer, got none.")
  return {
      kind: jnp.stack([offset_attention_min(a, offset, mask, segment_ids)
                       for a in attn_per_layer])
      for kind, offset in TARGET_OFFSET.items()
  }


def positional_head_scores(
    attn_per_layer: Sequence[jax.Array],
    mask: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
) -> dict[str, jax.Array]:
  """Diagonal (mean α_{i,i}) and previous-token (mean α_{i,i-1}) *mean* scores of every head.

  The mean is not the paper's definition (see :func:`positional_head_min_scores`): a head with
  α_{i,i} = 1 on most queries and 0 on a few has a high mean but is not a diagonal head.

  Args:
    attn_per_layer: one ``[B, N, L, L]`` attention-weight array per layer.
    mask, segment_ids: as in :func:`offset_attention_scores`.

  Returns:
    ``{"diagonal": [num_layers, N], "previous_token": [num_layers, N]}`` float32.
  """
  if not attn_per_layer:
    raise ValueError("attn_per_layer must hold one [B, N, L, L] array per layer, got none.")
  return {
      kind: jnp.stack([offset_attention_scores(a, offset, mask, segment_ids)
                       for a in attn_per_layer])
      for kind, offset in TARGET_OFFSET.items()
  }


def positional_head_scores_from_intermediates(
    intermediates: Sequence[Mapping[str, jax.Array]],
    mask: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
) -> dict[str, jax.Array]:
  """:func:`positional_head_scores` over the ``"attn"`` entry of each layer's intermediates."""
  for layer, inter in enumerate(intermediates):
    if "attn" not in inter:
      raise ValueError(f"layer {layer} has no 'attn'; it has {sorted(inter)}.")
  return positional_head_scores([inter["attn"] for inter in intermediates], mask, segment_ids)


def heads_above(scores: jax.Array, threshold: float) -> list[tuple[int, int, float]]:
  """Heads whose score exceeds ``threshold`` (e.g. 1 - ε), best first.

  Args:
    scores: ``[num_layers, N]`` (one entry of :func:`positional_head_scores`).
    threshold: the cut, in attention-weight units (0..1).

  Returns:
    ``[(layer, head, score), ...]`` sorted by decreasing score; layers and heads 0-indexed.
  """
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 2:
    raise ValueError(f"scores must be [num_layers, N], got shape {scores.shape}.")
  layers, heads = np.nonzero(scores > threshold)
  found = [(int(l), int(h), float(scores[l, h])) for l, h in zip(layers, heads)]
  return sorted(found, key=lambda t: -t[2])
