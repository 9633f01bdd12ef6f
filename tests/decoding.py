"""Shared test helper: decode a batch with the KV cache, prefill then one token at a time."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from rope_jax.model import generate
from rope_jax.model import transformer as model_lib


def left_padded_batch(vocab_size: int, seed: int = 0):
  """Row 0: 10 random tokens; row 1: the same first 7 tokens, left-padded by 3.

  Returns ``(tokens, positions, segment_ids [2, 10], valid bool [2, 10])``
  (``generate.prompt_layout``: row 1's positions start at 0 on its first real token).
  """
  row = np.random.default_rng(seed).integers(3, vocab_size, size=(10,))
  tokens = jnp.asarray(np.stack([row, np.concatenate([[0, 0, 0], row[:7]])]), jnp.int32)
  valid = np.ones((2, 10), bool)
  valid[1, :3] = False
  positions, segment_ids, _ = generate.prompt_layout(jnp.asarray(valid))
  return tokens, positions, segment_ids, valid


def decode_stepwise(forward, cfg, tokens, positions, segment_ids, *, prefill: int,
                    max_length: int):
  """Logits ``[B, L, V]`` (numpy) of ``tokens [B, L]`` fed through a ``max_length``-slot cache:
  the first ``prefill`` tokens at once, then one per call. Returns ``(logits, final cache)``.

  ``forward(tokens, positions, segment_ids, cache=...)`` returns a ``DecoderOutput``.
  """
  cache = model_lib.init_cache(cfg, batch_size=tokens.shape[0], max_length=max_length)
  out = forward(tokens[:, :prefill], positions[:, :prefill], segment_ids[:, :prefill],
                cache=cache)
  steps, cache = [np.asarray(out.logits)], out.cache
  for t in range(prefill, tokens.shape[1]):
    out = forward(tokens[:, t:t + 1], positions[:, t:t + 1], segment_ids[:, t:t + 1],
                  cache=cache)
    steps.append(np.asarray(out.logits))
    cache = out.cache
  return np.concatenate(steps, axis=1), cache
