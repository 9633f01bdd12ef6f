"""Sampling from a rope_jax ``Transformer`` with a KV cache: greedy, temperature and top-k.

One jitted function runs a prefill over the padded prompts and then a ``jax.lax.while_loop``
of single-token decode steps that stops when every row has emitted EOS (or after
``max_new_tokens``).

Padding: prompts are a ``[B, P]`` array plus a ``[B, P]`` mask of real tokens, padded on the
left, the right, or both. Each row's real tokens get positions ``0 .. n_b - 1`` and segment id
1, pads get segment id 0 (so no real token attends to a pad, and vice versa), and the row's
new tokens continue at position ``n_b``. Generation therefore does not depend on how a prompt
was padded: the same prompt gives the same tokens alone or in any padded batch.

    model = gemma.import_model(path, cfg)
    tokens, mask = pad_prompts([[2, 651, 6037], [2, 9413]], side="left")
    out = generate(model, tokens, mask, max_new_tokens=32, eos_id=1)
    out.tokens  # [B, 32], pad_id after each row's EOS; out.lengths [B]
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rope_jax.model import transformer as model_lib


@dataclasses.dataclass(frozen=True)
class GenerateOutput:
  """Generated tokens.

  Attributes:
    tokens: ``[B, max_new_tokens]`` int32; after a row's EOS (included) it holds ``pad_id``.
    lengths: ``[B]`` int32 number of generated tokens per row, EOS included.
  """

  tokens: np.ndarray
  lengths: np.ndarray


def pad_prompts(prompts: Sequence[Sequence[int]], *, side: str = "left", pad_id: int = 0,
                length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Token lists -> ``(tokens [B, P] int32, mask [B, P] bool)`` padded on ``side``."""
  if side not in ("left", "right"):
    raise ValueError(f"side must be 'left' or 'right', got {side!r}.")
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("Every prompt needs at least one token (e.g. BOS).")
  length = length or max(len(p) for p in prompts)
  tokens = np.full((len(prompts), length), pad_id, np.int32)
  mask = np.zeros((len(prompts), length), bool)
  for i, p in enumerate(prompts):
    if len(p) > length:
      raise ValueError(f"Prompt {i} has {len(p)} tokens, more than length={length}.")
    sl = slice(length - len(p), length) if side == "left" else slice(0, len(p))
    tokens[i, sl], mask[i, sl] = p, True
  return tokens, mask


def sample_logits(logits: jax.Array, rng: jax.Array, *, temperature: float = 0.0,
                  top_k: int = 0) -> jax.Array:
  """Next tokens ``[B]`` from float32 logits ``[B, V]``.

  ``temperature = 0`` is greedy (argmax); otherwise the logits are divided by ``temperature``
  and, with ``top_k > 0``, all but the ``top_k`` largest are masked before sampling.
  """
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits.astype(jnp.float32) / temperature
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def prompt_layout(mask: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(positions [B, P], segment_ids [B, P], last [B])`` of a padded prompt batch.

  Real tokens get positions 0, 1, ... and segment id 1; pads position 0 and segment id 0;
  ``last`` is the index of each row's last real token (where the next-token logits are).
  """
  seg = mask.astype(jnp.int32)
  positions = jnp.maximum(jnp.cumsum(seg, axis=1) - 1, 0) * seg
  last = mask.shape[1] - 1 - jnp.argmax(mask[:, ::-1], axis=1)
  return positions, seg, last


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "temperature",
                                             "top_k", "eos_id", "pad_id"))
def _generate(graphdef: nnx.GraphDef, params: nnx.State, tokens: jax.Array, mask: jax.Array,
              rng: jax.Array, *, max_new_tokens: int, temperature: float, top_k: int,
              eos_id: int, pad_id: int) -> tuple[jax.Array, jax.Array]:
  model = nnx.merge(graphdef, params)
  batch, prompt_len = tokens.shape
  positions, seg, last = prompt_layout(mask)
  cache = model_lib.init_cache(model.cfg, batch, prompt_len + max_new_tokens)
  prefill = model(tokens, positions, seg, cache=cache)
  logits, cache = prefill.logits, prefill.cache
  logits = jnp.take_along_axis(logits, last[:, None, None], axis=1)[:, 0]  # [B, V]
  next_pos = seg.sum(axis=1)  # Each row continues at its own length.

  def cond(carry):
    i, _, _, _, _, done, _ = carry
    return (i < max_new_tokens) & ~jnp.all(done)

  def body(carry):
    i, cache, logits, pos, out, done, rng = carry
    rng, step_rng = jax.random.split(rng)
    token = sample_logits(logits, step_rng, temperature=temperature, top_k=top_k)
    token = jnp.where(done, pad_id, token)
    out = out.at[:, i].set(token)
    done = done | (token == eos_id)
    ones = jnp.ones((batch, 1), jnp.int32)
    step = model(token[:, None], pos[:, None], ones, cache=cache)
    logits, cache = step.logits, step.cache
    return i + 1, cache, logits[:, 0], pos + 1, out, done, rng

  out = jnp.full((batch, max_new_tokens), pad_id, jnp.int32)
  done = jnp.zeros((batch,), bool)
  carry = (jnp.zeros((), jnp.int32), cache, logits, next_pos, out, done, rng)
  _, _, _, _, out, done, _ = jax.lax.while_loop(cond, body, carry)
  is_eos = out == eos_id
  lengths = jnp.where(jnp.any(is_eos, axis=1), jnp.argmax(is_eos, axis=1) + 1, max_new_tokens)
  return out, lengths.astype(jnp.int32)


def generate(
    model: model_lib.Transformer,
    tokens: np.ndarray | jax.Array,
    mask: np.ndarray | jax.Array | None = None,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int = 0,
    eos_id: int | None = None,
    pad_id: int = 0,
    rng: jax.Array | int = 0,
) -> GenerateOutput:
  """Continues each prompt row by up to ``max_new_tokens`` tokens.

  Args:
    model: a ``Transformer`` (any positional encoding).
    tokens: ``[B, P]`` int prompt tokens, padded on either side.
    mask: ``[B, P]`` bool, True on real prompt tokens; default all True.
    max_new_tokens: tokens to generate per row (the cache holds P + max_new_tokens slots).
    temperature: 0 for greedy decoding, else the sampling temperature.
    top_k: sample among the k most likely tokens (0 = all); ignored when greedy.
    eos_id: stop a row after it emits this token (None: never stop early).
    pad_id: written after a row's EOS.
    rng: a PRNG key or an int seed (used only when sampling).

  Returns:
    :class:`GenerateOutput` with host numpy arrays.
  """
  tokens = jnp.asarray(tokens, jnp.int32)
  mask = jnp.ones(tokens.shape, bool) if mask is None else jnp.asarray(mask, bool)
  if tokens.ndim != 2 or mask.shape != tokens.shape:
    raise ValueError(f"tokens must be [B, P] and mask the same shape; got {tokens.shape} and "
                     f"{mask.shape}.")
  if not bool(jnp.all(jnp.any(mask, axis=1))):
    raise ValueError("Every prompt row needs at least one real token (e.g. BOS).")
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
  if temperature < 0 or top_k < 0:
    raise ValueError(f"temperature and top_k must be >= 0, got {temperature}, {top_k}.")
  if isinstance(rng, int):
    rng = jax.random.key(rng)
  graphdef, params = nnx.split(model)
  out, lengths = _generate(graphdef, params, tokens, mask, rng, max_new_tokens=max_new_tokens,
                           temperature=float(temperature), top_k=int(top_k),
                           eos_id=-1 if eos_id is None else int(eos_id), pad_id=int(pad_id))
  return GenerateOutput(tokens=np.asarray(out), lengths=np.asarray(lengths))
