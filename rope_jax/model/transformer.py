"""A Gemma-1-like decoder in Flax NNX whose positional encoding is chosen per layer.

Architecture (Gemma 1 exactly, SPEC.md §3): token embedding scaled by √d_model and tied with the
output layer; per block a pre-norm attention and a pre-norm GeGLU feed-forward with residuals;
a final RMSNorm. RMSNorm is ``x · rsqrt(mean(x²) + ε) · (1 + scale)`` with ``scale`` zero-initialised.
GeGLU is ``down(gelu_tanh(gate(x)) · up(x))``. Attention is MHA / MQA / GQA with a head dimension
independent of d_model; queries are scaled by ``head_dim^-0.5`` after rotation. No biases.

Shapes: B batch, L sequence length, D model width, N query heads, K key/value heads, H head
dimension, F feed-forward hidden width, V vocabulary size.

Every parameter carries its logical axis names (``out_sharding`` metadata, e.g.
``("embed", "q_heads", "head_dim")``); ``rope_jax.sharding`` maps them onto a device mesh.

``Transformer.__call__`` returns one type, :class:`DecoderOutput` (logits, and the updated KV
cache or the per-layer intermediates when asked for). For analysis the forward pass can return,
per layer, the pre-rotation queries and keys, the post-rotation ones, the values and the
attention weights (``return_intermediates=True``): the same computation the model trains with,
not a second copy of it.

The RoPE cos/sin tables depend on the positions only, so the ``Transformer`` evaluates them once
per forward pass (one pair per distinct ``RopeConfig`` among the layers) and hands them to the
layers.

Encodings other than rotations (``rope_jax.model.position_bias``): a layer whose ``RopeConfig``
has ``bias="alibi"`` or ``"fire"`` adds that bias to its attention logits, a function of the
query and key positions (the KV cache keeps each key's position); YaRN's attention factor
multiplies the logits by its square; ``ModelConfig.absolute_encoding="sinusoidal"`` adds
Vaswani et al.'s encoding to the embeddings.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax import struct

from rope_jax.model import attention as attention_lib
from rope_jax.model import position_bias
from rope_jax import sharding as sharding_lib
from rope_jax.config.schema import (  # pylint: disable=unused-import (re-exported)
    ATTENTION_IMPLS, DTYPES, REMAT_NAMES, ModelConfig, RopeConfig)

# Rematerialisation of each block in the backward pass: the config's name (schema.REMAT_NAMES)
# -> jax.checkpoint policy ("full" saves nothing, "dots" saves matmul outputs, "dots_no_batch"
# saves those without batch dims).
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
# Logical axis names of the residual stream [B, L, D] (rope_jax.sharding.constrain).
ACT_BLD = ("activation_batch", "activation_length", "activation_embed")


@struct.dataclass
class DecoderOutput:
  """What :meth:`Transformer.__call__` returns (a pytree, so it can leave a ``jit``).

  Attributes:
    logits: float32 ``[B, L, V]``.
    cache: with a KV cache given, the updated per-layer caches (:func:`init_cache`); else None.
    intermediates: with ``return_intermediates=True``, one ``dict(q, k, q_rot, k_rot, v, attn)``
      per layer (see :meth:`Transformer.__call__`); else None.
  """

  logits: jax.Array
  cache: list[dict[str, jax.Array]] | None = None
  intermediates: list[dict[str, jax.Array]] | None = None


# cos/sin tables of one RopeConfig at the forward pass's positions (rope_jax.rope.rope_tables).
RopeTables = tuple[jax.Array, jax.Array] | None


def _param(init: jax.Array, names: Sequence[str | None]) -> nnx.Param:
  """A parameter annotated with logical axis names (resolved to a mesh by rope_jax.sharding)."""
  return nnx.Param(init, out_sharding=tuple(names), eager_sharding=False)


def _dtype(name: str) -> jnp.dtype:
  return jnp.dtype(name)


class RMSNorm(nnx.Module):
  """``x · rsqrt(mean(x²) + ε) · (1 + scale)``, computed in float32; ``scale [D]`` starts at 0."""

  def __init__(self, dim: int, *, eps: float, param_dtype: jnp.dtype):
    self.scale = _param(jnp.zeros((dim,), param_dtype), ("norm",))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (normed * (1.0 + self.scale[...].astype(jnp.float32))).astype(x.dtype)


class Embedder(nnx.Module):
  """Token embedding ``[V, D]``, scaled by √D on the way in and tied on the way out."""

  def __init__(self, vocab_size: int, embed_dim: int, *, rngs: nnx.Rngs,
               param_dtype: jnp.dtype):
    init = jax.random.normal(rngs.params(), (vocab_size, embed_dim), param_dtype)
    self.table = _param(init * embed_dim**-0.5, ("vocab", "embed"))
    self.embed_dim = embed_dim

  def encode(self, tokens: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """``tokens [B, L]`` int -> ``[B, L, D]`` in ``dtype``, times √D."""
    x = jnp.take(self.table[...], tokens, axis=0).astype(dtype)
    return x * jnp.asarray(np.sqrt(self.embed_dim), dtype)

  def decode(self, x: jax.Array) -> jax.Array:
    """``x [B, L, D]`` -> float32 logits ``[B, L, V]`` against the same table."""
    return jnp.einsum("bld,vd->blv", x, self.table[...].astype(x.dtype),
                      preferred_element_type=jnp.float32)


def attention_mask(segment_ids: jax.Array, kv_segment_ids: jax.Array | None = None, *,
                   q_offset: jax.Array | int = 0) -> jax.Array:
  """Causal mask restricted to tokens of the same packed document.

  Args:
    segment_ids: ``[B, L]`` int; tokens with equal ids belong to one document (0 = padding,
      which only sees padding so that every row keeps at least one valid entry).
    kv_segment_ids: ``[B, S]`` segment ids of the keys; default ``segment_ids`` (S = L).
    q_offset: key slot of the first query (query i sits at slot ``q_offset + i``); a KV
      cache's write index when decoding, 0 for self-attention.

  Returns:
    bool ``[B, 1, L, S]``: ``mask[b, 0, i, j]`` is True where query i may attend to key j.
  """
  if kv_segment_ids is None:
    kv_segment_ids = segment_ids
  q_slots = q_offset + jnp.arange(segment_ids.shape[-1])
  causal = jnp.arange(kv_segment_ids.shape[-1])[None, :] <= q_slots[:, None]
  same = segment_ids[:, :, None] == kv_segment_ids[:, None, :]
  return (causal[None] & same)[:, None]


def init_cache(cfg: ModelConfig, batch_size: int, max_length: int) -> list[dict[str, jax.Array]]:
  """An empty KV cache for ``Transformer.__call__(..., cache=...)``, one dict per layer.

  Each layer's dict holds ``k``, ``v`` ``[B, S, K, H]`` in ``cfg.dtype`` (keys are stored
  rotated, at their own positions), ``segment_ids [B, S]`` int32 (0 = empty or padding),
  ``positions [B, S]`` int32 (each key's position, for the logit biases) and ``index`` (int32
  scalar: the slot the next token is written to). S = ``max_length``.
  """
  shape = (batch_size, max_length, cfg.num_kv_heads, cfg.head_dim)
  dt = _dtype(cfg.dtype)
  return [dict(k=jnp.zeros(shape, dt), v=jnp.zeros(shape, dt),
               segment_ids=jnp.zeros(shape[:2], jnp.int32),
               positions=jnp.zeros(shape[:2], jnp.int32), index=jnp.zeros((), jnp.int32))
          for _ in range(cfg.num_layers)]


def update_cache(cache: dict[str, jax.Array], k_rot: jax.Array, v: jax.Array,
                 segment_ids: jax.Array, positions: jax.Array) -> dict[str, jax.Array]:
  """Writes ``L`` new rotated keys / values ``[B, L, K, H]`` (and their segment ids and
  positions ``[B, L]``) at slots ``index .. index+L-1``."""
  index = cache["index"]

  def write(old: jax.Array, new: jax.Array) -> jax.Array:
    return jax.lax.dynamic_update_slice(old, new.astype(old.dtype),
                                        (0, index) + (0,) * (old.ndim - 2))

  return dict(k=write(cache["k"], k_rot), v=write(cache["v"], v),
              segment_ids=write(cache["segment_ids"], segment_ids),
              positions=write(cache["positions"], positions), index=index + k_rot.shape[1])


class Attention(nnx.Module):
  """Multi-head attention with GQA and a per-layer positional encoding."""

  def __init__(self, cfg: ModelConfig, rope: RopeConfig, *, rngs: nnx.Rngs):
    pdt = _dtype(cfg.param_dtype)
    d, n, k, h = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                             in_axis=0, out_axis=(1, 2))
    out_init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                                 in_axis=(0, 1), out_axis=2)
    self.q_proj = _param(init(rngs.params(), (d, n, h), pdt), ("embed", "q_heads", "head_dim"))
    self.k_proj = _param(init(rngs.params(), (d, k, h), pdt), ("embed", "kv_heads", "head_dim"))
    self.v_proj = _param(init(rngs.params(), (d, k, h), pdt), ("embed", "kv_heads", "head_dim"))
    self.o_proj = _param(out_init(rngs.params(), (n, h, d), pdt), ("q_heads", "head_dim", "embed"))
    self.rope = rope
    # ALiBi / FIRE on the logits (None: no bias); FIRE's parameters live here, per layer.
    self.bias = position_bias.logit_bias(rope.bias, n, rngs=rngs, param_dtype=pdt)
    self.num_heads, self.num_kv_heads, self.head_dim = n, k, h
    self.impl = cfg.attention_impl

  def __call__(self, x: jax.Array, tables: RopeTables, positions: jax.Array,
               segment_ids: jax.Array, return_intermediates: bool = False, *,
               cache: dict[str, jax.Array] | None = None):
    """``x [B, L, D]``, ``positions``/``segment_ids [B, L]`` -> ``(out [B, L, D], cache,
    intermediates)``.

    ``tables`` are this layer's RoPE cos/sin at the tokens' positions (``self.rope.tables``;
    the ``Transformer`` computes them once for all layers); ``positions`` feed the logit bias,
    if the layer has one. With a layer ``cache`` (see
    :func:`init_cache`) the new keys/values are written at the cache's index, the queries attend
    to every cached slot of their segment up to their own, and ``cache`` is the updated one
    (else None). ``intermediates`` is ``dict(q, k, q_rot, k_rot, v, attn)`` when
    ``return_intermediates`` (else None).
    """
    if return_intermediates and cache is not None:
      raise ValueError("return_intermediates is not supported together with a KV cache.")
    dt = x.dtype
    q = jnp.einsum("bld,dnh->blnh", x, self.q_proj[...].astype(dt))
    k = jnp.einsum("bld,dkh->blkh", x, self.k_proj[...].astype(dt))
    v = jnp.einsum("bld,dkh->blkh", x, self.v_proj[...].astype(dt))
    q_rot = self.rope.apply_tables(q, tables)
    k_rot = self.rope.apply_tables(k, tables)
    keys, values, key_positions = k_rot, v, positions
    new_cache = None
    if cache is None:
      mask = attention_mask(segment_ids)
    else:
      new_cache = update_cache(cache, k_rot, v, segment_ids, positions)
      keys, values = new_cache["k"].astype(dt), new_cache["v"].astype(dt)
      key_positions = new_cache["positions"]
      mask = attention_mask(segment_ids, new_cache["segment_ids"], q_offset=cache["index"])
    bias = None if self.bias is None else self.bias(positions, key_positions)  # [B, N, L, S]
    scale = self.head_dim**-0.5 * self.rope.logit_scale()
    probs = None
    if self.impl == "splash" and not return_intermediates and cache is None and bias is None:
      encoded = attention_lib.splash_attention(q_rot * jnp.asarray(scale, dt), k_rot, v,
                                               segment_ids)
    elif self.impl in ("dot_product", "splash") and not return_intermediates:
      encoded = jax.nn.dot_product_attention(q_rot, keys, values, bias=bias, mask=mask,
                                             scale=scale)
    else:
      encoded, probs = self._xla_attention(q_rot * jnp.asarray(scale, dt), keys, values, mask,
                                           bias)
    out = jnp.einsum("blnh,nhd->bld", encoded, self.o_proj[...].astype(dt))
    inter = None
    if return_intermediates:
      inter = dict(q=q, k=k, q_rot=q_rot, k_rot=k_rot, v=v, attn=probs)
    return out, new_cache, inter

  def _xla_attention(self, q, k, v, mask, bias=None):
    """Plain einsum attention; returns (``[B, L, N, H]``, float32 weights ``[B, N, L, S]``).

    ``bias``: float32 ``[B, N, L, S]`` added to the logits (query head n = kv head n // G).
    """
    b, l, n, h = q.shape
    groups = n // self.num_kv_heads
    qg = q.reshape(b, l, self.num_kv_heads, groups, h)
    logits = jnp.einsum("btkgh,bskh->bkgts", qg, k, preferred_element_type=jnp.float32)
    logits = logits.reshape(b, n, l, k.shape[1])
    if bias is not None:
      logits = logits + bias
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    pg = probs.astype(v.dtype).reshape(b, self.num_kv_heads, groups, l, k.shape[1])
    encoded = jnp.einsum("bkgts,bskh->btkgh", pg, v).reshape(b, l, n, h)
    return encoded, probs


class FeedForward(nnx.Module):
  """GeGLU: ``down(gelu_tanh(x · W_gate) ⊙ (x · W_up))``."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    pdt = _dtype(cfg.param_dtype)
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
    d, f = cfg.embed_dim, cfg.mlp_dim
    self.gate = _param(init(rngs.params(), (d, f), pdt), ("embed", "mlp"))
    self.up = _param(init(rngs.params(), (d, f), pdt), ("embed", "mlp"))
    self.down = _param(init(rngs.params(), (f, d), pdt), ("mlp", "embed"))

  def __call__(self, x: jax.Array) -> jax.Array:
    dt = x.dtype
    gate = jax.nn.gelu(x @ self.gate[...].astype(dt), approximate=True)
    hidden = sharding_lib.constrain(gate * (x @ self.up[...].astype(dt)),
                                    ("activation_batch", "activation_length", "activation_mlp"))
    return hidden @ self.down[...].astype(dt)


class Block(nnx.Module):
  """Pre-norm attention and pre-norm GeGLU, each with a residual connection."""

  def __init__(self, cfg: ModelConfig, layer: int, *, rngs: nnx.Rngs):
    pdt = _dtype(cfg.param_dtype)
    self.pre_attention_norm = RMSNorm(cfg.embed_dim, eps=cfg.norm_eps, param_dtype=pdt)
    self.attn = Attention(cfg, cfg.layer_rope(layer), rngs=rngs)
    self.pre_ffw_norm = RMSNorm(cfg.embed_dim, eps=cfg.norm_eps, param_dtype=pdt)
    self.mlp = FeedForward(cfg, rngs=rngs)

  def __call__(self, x, tables, positions, segment_ids, return_intermediates=False, *,
               cache=None):
    """As :meth:`Attention.__call__`: ``(x [B, L, D], cache or None, intermediates or None)``."""
    attn_out, cache, inter = self.attn(self.pre_attention_norm(x), tables, positions,
                                       segment_ids, return_intermediates, cache=cache)
    x = x + attn_out
    x = x + self.mlp(self.pre_ffw_norm(x))
    return x, cache, inter


class Transformer(nnx.Module):
  """The decoder: tokens ``[B, L]`` -> float32 logits ``[B, L, V]``."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    pdt = _dtype(cfg.param_dtype)
    self.embedder = Embedder(cfg.vocab_size, cfg.embed_dim, rngs=rngs, param_dtype=pdt)
    self.blocks = nnx.List([Block(cfg, i, rngs=rngs) for i in range(cfg.num_layers)])
    self.final_norm = RMSNorm(cfg.embed_dim, eps=cfg.norm_eps, param_dtype=pdt)

  def __call__(
      self,
      tokens: jax.Array,
      positions: jax.Array | None = None,
      segment_ids: jax.Array | None = None,
      *,
      return_intermediates: bool = False,
      cache: list[dict[str, jax.Array]] | None = None,
  ) -> DecoderOutput:
    """Runs the decoder.

    Args:
      tokens: ``[B, L]`` int token ids.
      positions: ``[B, L]`` int positions (restart at 0 per packed document); default
        ``arange(L)`` for every row.
      segment_ids: ``[B, L]`` int document ids for packing (0 = padding); default all ones.
      return_intermediates: also return, per layer, ``dict(q, k, q_rot, k_rot, v, attn)`` with
        q ``[B, L, N, H]``, k/v ``[B, L, K, H]`` (q/k before and after rotation) and the
        attention weights ``attn [B, N, L, L]`` (float32).
      cache: per-layer KV caches (:func:`init_cache`) for incremental decoding: the tokens are
        written at the cache's index and attend to the cached slots of their segment
        (``positions`` must then be given explicitly).

    Returns:
      :class:`DecoderOutput`: float32 ``logits [B, L, V]``; ``cache`` the updated per-layer
      caches when one was given; ``intermediates`` the per-layer dicts when asked for.
    """
    if tokens.ndim != 2:
      raise ValueError(f"tokens must be [B, L], got shape {tokens.shape}.")
    if cache is not None and positions is None:
      raise ValueError("positions must be given explicitly when decoding with a KV cache.")
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    if segment_ids is None:
      segment_ids = jnp.ones(tokens.shape, jnp.int32)
    for name, arr in (("positions", positions), ("segment_ids", segment_ids)):
      if arr.shape != tokens.shape:
        raise ValueError(f"{name} must have the tokens' shape {tokens.shape}, got {arr.shape}.")
    if return_intermediates and cache is not None:
      raise ValueError("return_intermediates is not supported together with a KV cache.")
    # One cos/sin table per distinct positional encoding, shared by every layer that uses it.
    # "dynamic" scaling reads the number of key slots: L here, the cache's size when decoding.
    key_slots = tokens.shape[1] if cache is None else cache[0]["k"].shape[1]
    tables: dict[RopeConfig, RopeTables] = {}
    for block in self.blocks:
      if block.attn.rope not in tables:
        tables[block.attn.rope] = block.attn.rope.tables(positions, self.cfg.head_dim,
                                                         seq_len=key_slots)
    dt = _dtype(self.cfg.dtype)
    x = self.embedder.encode(tokens, dt)
    absolute = position_bias.absolute_embedding(self.cfg.absolute_encoding, positions,
                                                self.cfg.embed_dim, dt)
    if absolute is not None:
      x = x + absolute
    x = sharding_lib.constrain(x, ACT_BLD)
    new_cache, intermediates = [], []
    for i, block in enumerate(self.blocks):
      layer_tables = tables[block.attn.rope]
      if cache is not None:
        x, layer_cache, _ = block(x, layer_tables, positions, segment_ids, cache=cache[i])
        new_cache.append(layer_cache)
      elif self.cfg.remat != "none" and not return_intermediates:
        x, _, _ = nnx.remat(lambda blk, x, t: blk(x, t, positions, segment_ids),
                            policy=REMAT_POLICIES[self.cfg.remat])(block, x, layer_tables)
      else:
        x, _, inter = block(x, layer_tables, positions, segment_ids, return_intermediates)
        intermediates.append(inter)
      x = sharding_lib.constrain(x, ACT_BLD)
    logits = sharding_lib.constrain(self.embedder.decode(self.final_norm(x)),
                                    ("activation_batch", "activation_length", "activation_vocab"))
    return DecoderOutput(logits=logits, cache=new_cache if cache is not None else None,
                         intermediates=intermediates if return_intermediates else None)


def count_params(cfg: ModelConfig) -> dict[str, int]:
  """Parameter counts from abstract shapes (:func:`abstract_model`: nothing is allocated)."""
  _, state = abstract_model(cfg)
  total = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(state))
  embedding = int(np.prod(state["embedder"]["table"].shape))
  return {"total": total, "embedding": embedding, "non_embedding": total - embedding}


def abstract_model(cfg: ModelConfig) -> tuple[nnx.GraphDef, nnx.State]:
  """``(graphdef, params)`` of ``Transformer(cfg)`` without allocating anything.

  ``params`` is the ``nnx.State`` of the model's ``nnx.Param``s with ``jax.ShapeDtypeStruct``
  leaves (no sharding); ``nnx.merge(graphdef, params)`` rebuilds the model from real arrays. The one
  home of the abstract model: the trainer, the run directory and the weight importers add their
  shardings or devices to these leaves.

  Raises:
    ValueError: the model holds state other than ``nnx.Param`` (nothing here would save it).
  """
  abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
  if jax.tree.leaves(rest):
    raise ValueError("The model has non-parameter state; rope_jax only saves and restores "
                     "nnx.Param.")
  return graphdef, params
