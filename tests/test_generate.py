"""KV-cache decoding and generation: cached logits == full forward, padding, sampling, EOS."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rope_jax.model import generate
from rope_jax.model import transformer as model_lib
from tests import decoding

SMALL = dict(vocab_size=61, num_layers=2, embed_dim=32, num_heads=4, num_kv_heads=2, head_dim=16,
             mlp_dim=48)


def _model(seed: int = 0, **overrides) -> model_lib.Transformer:
  model = model_lib.Transformer(model_lib.ModelConfig(**{**SMALL, **overrides}),
                                rngs=nnx.Rngs(seed))
  for path, var in nnx.iter_graph(model):
    if isinstance(var, nnx.Param) and path[-1] == "scale":  # Exercise the (1 + scale) norms.
      var[...] = 0.3 * jax.random.normal(jax.random.key(len(path)), var[...].shape)
    if isinstance(var, nnx.Param) and path[-1] in ("o_proj", "down"):
      # Louder blocks, so that greedy continuations are not copies of the last token (at init
      # the residual stream is dominated by the tied input embedding).
      var[...] = 4.0 * var[...]
  return model


def _jitted(model):
  """``fn(tokens, positions, segment_ids, cache=None)``: the model's forward under one jit."""
  graphdef, state = nnx.split(model)
  fn = jax.jit(lambda state, *args, cache=None: nnx.merge(graphdef, state)(*args, cache=cache))
  return lambda *args, cache=None: fn(state, *args, cache=cache)


@pytest.mark.parametrize("rope_kwargs", [
    dict(),                                           # RoPE
    dict(fraction=0.75),                              # p-RoPE
    dict(fraction=0.0),                               # NoPE
    dict(fraction=0.5, variant="partial"),            # GPT-NeoX partial rotary
    dict(fraction=0.25, variant="reversed", layout="interleaved", theta=500_000.0),
])
def test_kv_cache_decode_matches_full_forward_at_every_step(rope_kwargs):
  model = _model(rope=model_lib.RopeConfig(**rope_kwargs), num_kv_heads=1)
  forward = _jitted(model)
  tokens, positions, segment_ids, valid = decoding.left_padded_batch(61)
  full = np.asarray(forward(tokens, positions, segment_ids).logits)
  cached, cache = decoding.decode_stepwise(forward, model.cfg, tokens, positions, segment_ids,
                                           prefill=4, max_length=12)
  assert int(cache[0]["index"]) == 10
  np.testing.assert_allclose(cached[valid], full[valid], rtol=1e-5, atol=1e-5)
  # Padding changes nothing: row 1's real tokens give row 0's logits.
  np.testing.assert_allclose(cached[1, 3:], cached[0, :7], rtol=1e-5, atol=1e-5)


def test_cache_requires_positions_and_excludes_intermediates():
  model = _model()
  cache = model_lib.init_cache(model.cfg, 1, 4)
  with pytest.raises(ValueError, match="positions must be given"):
    model(jnp.zeros((1, 2), jnp.int32), cache=cache)
  with pytest.raises(ValueError, match="return_intermediates"):
    tables = model.cfg.rope.tables(jnp.zeros((1, 2), jnp.int32), model.cfg.head_dim)
    model.blocks[0].attn(jnp.zeros((1, 2, 32)), tables, jnp.zeros((1, 2), jnp.int32),
                         jnp.ones((1, 2), jnp.int32), True, cache=cache[0])
  with pytest.raises(ValueError, match="return_intermediates"):
    model(jnp.zeros((1, 2), jnp.int32), jnp.zeros((1, 2), jnp.int32), cache=cache,
          return_intermediates=True)


def _naive_greedy(model, prompts, n, buffer=16):
  """Greedy continuations by re-running the full forward (no cache) for every new token."""
  forward = _jitted(model)
  outs = []
  for prompt in prompts:
    ids = np.zeros((1, buffer), np.int32)
    ids[0, :len(prompt)] = prompt
    for length in range(len(prompt), len(prompt) + n):
      segment_ids = (np.arange(buffer) < length)[None].astype(np.int32)
      positions = np.arange(buffer)[None]
      ids[0, length] = int(jnp.argmax(forward(ids, positions, segment_ids).logits[0, length - 1]))
    outs.append(ids[0, len(prompt):len(prompt) + n].tolist())
  return outs


def test_greedy_matches_full_forward_and_ignores_padding():
  model = _model(rope=model_lib.RopeConfig(fraction=0.75))
  prompts = [[2, 5, 6, 7, 8, 9], [2, 11], [2, 13, 14, 15]]
  want = _naive_greedy(model, prompts, 6)
  assert len({tuple(w) for w in want}) == 3  # Distinct continuations: padding mistakes show.
  for side in ("left", "right"):
    tokens, mask = generate.pad_prompts(prompts, side=side)
    out = generate.generate(model, tokens, mask, max_new_tokens=6)
    assert out.tokens.tolist() == want, side
    np.testing.assert_array_equal(out.lengths, 6)
  again = generate.generate(model, *generate.pad_prompts(prompts), max_new_tokens=6)
  assert again.tokens.tolist() == want  # Deterministic.


def test_sampling_is_seeded_and_top_k_1_is_greedy():
  model = _model(num_layers=1)
  tokens, mask = generate.pad_prompts([[2, 3, 4], [2, 9]])
  kwargs = dict(max_new_tokens=8, temperature=1.0)
  a = generate.generate(model, tokens, mask, rng=1, **kwargs).tokens
  b = generate.generate(model, tokens, mask, rng=1, **kwargs).tokens
  c = generate.generate(model, tokens, mask, rng=2, **kwargs).tokens
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  greedy = generate.generate(model, tokens, mask, max_new_tokens=8).tokens
  top1 = generate.generate(model, tokens, mask, rng=3, top_k=1, **kwargs).tokens
  np.testing.assert_array_equal(top1, greedy)


def test_sample_logits_top_k_keeps_only_the_k_largest():
  logits = jnp.log(jnp.asarray([[0.1, 0.2, 0.3, 0.4]] * 2000))
  draws = generate.sample_logits(logits, jax.random.key(0), temperature=1.0, top_k=2)
  counts = np.bincount(np.asarray(draws), minlength=4) / 2000
  assert counts[0] == counts[1] == 0
  np.testing.assert_allclose(counts[2:], [3 / 7, 4 / 7], atol=0.04)


def test_eos_stops_a_row_and_pads_after_it():
  model = _model(seed=3)
  prompts = [[2, 5, 6], [2, 7]]
  free = _naive_greedy(model, prompts, 6)
  # EOS = row 0's first new token that it had not emitted before (so row 0 stops mid-way).
  step = next(i for i in range(1, 6) if free[0][i] not in free[0][:i])
  eos = free[0][step]
  out = generate.generate(model, *generate.pad_prompts(prompts), max_new_tokens=6, eos_id=eos,
                          pad_id=0)
  for row, seq in enumerate(free):
    n = seq.index(eos) + 1 if eos in seq else 6
    assert out.tokens[row].tolist() == seq[:n] + [0] * (6 - n) and out.lengths[row] == n
  assert out.lengths[0] == step + 1


def test_bad_inputs():
  model = _model()
  with pytest.raises(ValueError, match="at least one token"):
    generate.pad_prompts([[2], []])
  tokens, mask = generate.pad_prompts([[2, 3], [2]])
  mask[1] = False
  with pytest.raises(ValueError, match="at least one real token"):
    generate.generate(model, tokens, mask, max_new_tokens=2)
  with pytest.raises(ValueError, match="max_new_tokens"):
    generate.generate(model, tokens, max_new_tokens=0)
