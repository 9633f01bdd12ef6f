"""Fused attention kernels the model can select with ``model.attention_impl``.

``"splash"``: the Pallas splash-attention kernel (TPU; flash attention with block-sparse causal
and packing masks). Under a mesh (``rope_jax.sharding.activate``) it runs per shard inside
``jax.shard_map`` over the batch and head axes, since a Pallas call cannot be partitioned
automatically. On a CPU host it compiles for TPU through the AOT path (``rope_jax.aot``);
``interpret=True`` runs it (slowly) on CPU for tests.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from rope_jax import sharding as sharding_lib

SPLASH_BLOCKS = (512, 256, 128)


def _block(seq_len: int) -> int:
  for b in SPLASH_BLOCKS:
    if seq_len % b == 0:
      return b
  raise ValueError(f"attention_impl='splash' needs a sequence length that is a multiple of "
                   f"{SPLASH_BLOCKS[-1]}, got {seq_len}.")


def _splash_local(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, *,
                  interpret: bool) -> jax.Array:
  """Per-device splash attention; q ``[B, N, L, H]``, k/v ``[B, K, L, H]`` -> ``[B, N, L, H]``."""
  from jax.experimental.pallas.ops.tpu.splash_attention import (  # pylint: disable=g-import-not-at-top
      splash_attention_kernel as sk, splash_attention_mask as sm)
  _, n, l, _ = q.shape
  blk = _block(l)
  sizes = sk.BlockSizes(block_q=blk, block_kv=blk, block_kv_compute=blk, block_q_dkv=blk,
                        block_kv_dkv=blk, block_kv_dkv_compute=blk, block_q_dq=blk,
                        block_kv_dq=blk)
  mask = sm.MultiHeadMask([sm.CausalMask((l, l)) for _ in range(n)])
  kernel = sk.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                              interpret=interpret)
  ids = sk.SegmentIds(q=segment_ids, kv=segment_ids)
  return jax.vmap(kernel)(q, k, v, ids)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, *,
                     interpret: bool = False) -> jax.Array:
  """Causal, packing-aware attention with the Pallas splash kernel.

  Args:
    q: ``[B, L, N, H]`` queries, already rotated and scaled by ``H^-0.5``.
    k, v: ``[B, L, K, H]`` keys (rotated) and values; N % K == 0.
    segment_ids: ``[B, L]`` int document ids (0 = padding).
    interpret: run the kernel in the Pallas interpreter (CPU tests).

  Returns:
    ``[B, L, N, H]`` in q's dtype.
  """
  n, kh = q.shape[2], k.shape[2]
  qt, kt, vt = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))
  seg = segment_ids.astype(jnp.int32)
  q_spec = sharding_lib.active_spec(("activation_batch", "activation_heads", None, None),
                                    qt.shape)
  if q_spec is None:  # No mesh: one device.
    out = _splash_local(qt, kt, vt, seg, interpret=interpret)
    return jnp.swapaxes(out, 1, 2)
  kv_spec = sharding_lib.active_spec(("activation_batch", "activation_kv_heads", None, None),
                                     kt.shape)
  q_heads_axes = q_spec[1] if len(q_spec) > 1 else None
  kv_heads_axes = kv_spec[1] if len(kv_spec) > 1 else None
  if q_heads_axes != kv_heads_axes and kh > 1:
    # Heads split differently (K not divisible by the tensor axis): give every q head its kv head.
    kt, vt = (jnp.repeat(a, n // kh, axis=1) for a in (kt, vt))
    kv_spec = q_spec
  elif q_heads_axes != kv_heads_axes:  # MQA: the one kv head is replicated over head shards.
    kv_spec = PartitionSpec(q_spec[0] if len(q_spec) else None)
  batch_spec = PartitionSpec(q_spec[0] if len(q_spec) else None)
  fn = jax.shard_map(
      lambda a, b, c, d: _splash_local(a, b, c, d, interpret=interpret),
      in_specs=(q_spec, kv_spec, kv_spec, batch_spec), out_specs=q_spec, check_vma=False)
  return jnp.swapaxes(fn(qt, kt, vt, seg), 1, 2)
