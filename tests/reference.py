"""Independent float64 numpy references, written from the papers, not from rope_jax's code.

RoPE is the RoFormer block-diagonal rotation: for each 2-D chunk (a, b) with frequency g at
position m, ``(a, b) -> R(m·g) (a, b)`` with ``R(φ) = [[cos φ, -sin φ], [sin φ, cos φ]]``.
Chunks are formed by explicit index lists and every rotation is applied one chunk at a time.
"""

from __future__ import annotations

import math

import numpy as np


def pair_indices(dim: int, layout: str) -> list[tuple[int, int]]:
  """The (first, second) dims of each 2-D chunk of a width-``dim`` vector."""
  if layout == "split_half":
    return [(i, i + dim // 2) for i in range(dim // 2)]
  if layout == "interleaved":
    return [(2 * i, 2 * i + 1) for i in range(dim // 2)]
  raise ValueError(layout)


def frequencies(head_dim: int, theta: float, fraction: float, variant: str):
  """(per-chunk frequencies g_i over the rotated width, rotated width) from SPEC.md §1."""
  kept = int(fraction * head_dim // 2)  # The paper's rope_angles.
  if variant == "partial":
    r = 2 * kept
    return np.array([theta ** (-2.0 * i / r) for i in range(kept)]), r
  g = np.array([theta ** (-2.0 * i / head_dim) for i in range(head_dim // 2)])
  if variant == "p_rope":
    g[kept:] = 0.0
  elif variant == "reversed":
    g[: head_dim // 2 - kept] = 0.0
  else:
    raise ValueError(variant)
  return g, head_dim


def rope(x, positions, *, theta=10_000.0, fraction=1.0, variant="p_rope", layout="split_half",
         scale_factor=1.0, type="default", bias="none", **scaling):  # pylint: disable=redefined-builtin
  """``x [B, L, N, H]``, ``positions [B, L]`` -> float64 ``[B, L, N, H]``.

  Takes a whole ``RopeConfig`` as keywords; context extension (``type`` other than "default")
  has its own references in tests/test_rope_scaling.py, and ``bias`` acts on the logits
  (:func:`gemma_forward`), not here.
  """
  del bias
  if type != "default" or any(v is not None for v in scaling.values()):
    raise NotImplementedError(f"reference.rope has no context extension ({type}, {scaling}).")
  x = np.asarray(x, np.float64)
  out = x.copy()
  g, r = frequencies(x.shape[-1], theta, fraction, variant)
  pos = np.asarray(positions, np.float64) / scale_factor
  for k, (i, j) in enumerate(pair_indices(r, layout)):
    phi = pos[..., None] * g[k]  # [B, L, 1]
    a, b = x[..., i], x[..., j]
    out[..., i] = np.cos(phi) * a - np.sin(phi) * b
    out[..., j] = np.sin(phi) * a + np.cos(phi) * b
  return out


def rms_norm(x, scale, eps=1e-6):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * (1.0 + scale)


def gelu_tanh(x):
  return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def softmax(x, axis=-1):
  x = x - x.max(axis=axis, keepdims=True)
  e = np.exp(x)
  return e / e.sum(axis=axis, keepdims=True)


def alibi_slopes(n: int) -> list[float]:
  """Press et al.'s reference recipe: a geometric sequence starting at (and with ratio)
  2^(-8/n) for n a power of two; else the closest lower power of two P, then every other slope
  of 2P heads."""
  def geometric(m):
    start = 2 ** (-(2 ** -(math.log2(m) - 3)))
    return [start * start**i for i in range(m)]
  if math.log2(n).is_integer():
    return geometric(n)
  p = 2 ** math.floor(math.log2(n))
  return geometric(p) + alibi_slopes(2 * p)[0::2][: n - p]


def sinusoidal(positions, dim, base=10_000.0):
  """Vaswani et al.: ``PE[pos, 2k] = sin(pos / base^(2k/D))``, ``PE[pos, 2k+1] = cos(...)``."""
  pos = np.asarray(positions, np.float64)
  out = np.empty(pos.shape + (dim,))
  for k in range(dim // 2):
    out[..., 2 * k] = np.sin(pos / base ** (2 * k / dim))
    out[..., 2 * k + 1] = np.cos(pos / base ** (2 * k / dim))
  return out


def gemma_forward(params: dict, tokens, positions, segment_ids, *, num_heads, num_kv_heads,
                  rope_kwargs_per_layer, absolute_encoding="none"):
  """float64 Gemma-1 forward from SPEC.md §3, over a plain nested dict of numpy params.

  ``params`` has the layout of ``nnx.state(model, nnx.Param).to_pure_dict()``. A layer whose
  rope keywords have ``bias="alibi"`` adds ``-m_n·(i - j)`` (positions i, j) to head n's logits;
  ``absolute_encoding="sinusoidal"`` adds :func:`sinusoidal` to the scaled embeddings.
  Returns logits ``[B, L, V]``.
  """
  p = params
  table = np.asarray(p["embedder"]["table"], np.float64)
  d = table.shape[1]
  x = table[np.asarray(tokens)] * np.sqrt(d)
  if absolute_encoding == "sinusoidal":
    x = x + sinusoidal(positions, d)
  elif absolute_encoding != "none":
    raise NotImplementedError(absolute_encoding)
  b, l = tokens.shape
  seg = np.asarray(segment_ids)
  allowed = (np.arange(l)[None, :, None] >= np.arange(l)[None, None, :]) & (
      seg[:, :, None] == seg[:, None, :])
  for i, rope_kwargs in enumerate(rope_kwargs_per_layer):
    blk = {k: v for k, v in p["blocks"][i].items()}
    a = blk["attn"]
    h_in = rms_norm(x, np.asarray(blk["pre_attention_norm"]["scale"], np.float64))
    q = np.einsum("bld,dnh->blnh", h_in, np.asarray(a["q_proj"], np.float64))
    k = np.einsum("bld,dkh->blkh", h_in, np.asarray(a["k_proj"], np.float64))
    v = np.einsum("bld,dkh->blkh", h_in, np.asarray(a["v_proj"], np.float64))
    q = rope(q, positions, **rope_kwargs)
    k = rope(k, positions, **rope_kwargs)
    hd = q.shape[-1]
    group = num_heads // num_kv_heads
    k = np.repeat(k, group, axis=2)  # Query head n reads kv head n // group.
    v = np.repeat(v, group, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q * hd**-0.5, k)
    if rope_kwargs.get("bias", "none") == "alibi":
      pos = np.asarray(positions, np.float64)
      m = np.asarray(alibi_slopes(num_heads))
      logits = logits - m[None, :, None, None] * (pos[:, None, :, None] - pos[:, None, None, :])
    elif rope_kwargs.get("bias", "none") != "none":
      raise NotImplementedError(rope_kwargs["bias"])
    logits = np.where(allowed[:, None], logits, -np.inf)
    enc = np.einsum("bnts,bsnh->btnh", softmax(logits), v)
    x = x + np.einsum("blnh,nhd->bld", enc, np.asarray(a["o_proj"], np.float64))
    m = blk["mlp"]
    h_in = rms_norm(x, np.asarray(blk["pre_ffw_norm"]["scale"], np.float64))
    gate = gelu_tanh(h_in @ np.asarray(m["gate"], np.float64))
    x = x + (gate * (h_in @ np.asarray(m["up"], np.float64))) @ np.asarray(m["down"], np.float64)
  x = rms_norm(x, np.asarray(p["final_norm"]["scale"], np.float64))
  return x @ table.T
