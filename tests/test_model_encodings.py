"""The decoder with the encodings beyond the paper: ALiBi, FIRE, sinusoidal absolute positions,
interleaved RoPE/NoPE layers, and HF context extension (linear, NTK, dynamic, YaRN, Llama 3.1).

Each must give the same logits decoding with a KV cache as in one full forward pass, respect
packing (positions restart per document), compute the attention it is defined to compute, and
be rejected in a combination it cannot serve before anything is compiled.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rope_jax import encodings
from rope_jax import rope_scaling
from rope_jax.config import base as config_lib
from rope_jax.config.schema import ModelConfig, RopeConfig
from rope_jax.model import transformer as model_lib
from tests import decoding

SMALL = dict(vocab_size=61, num_layers=2, embed_dim=32, num_heads=4, num_kv_heads=2, head_dim=16,
             mlp_dim=48)
L0 = 4  # original_max_position_embeddings of the scaled encodings: the tests run past it.
ENCODINGS = {
    "alibi": dict(rope=RopeConfig(fraction=0.0, bias="alibi")),
    "alibi+rope": dict(rope=RopeConfig(bias="alibi")),
    "fire": dict(rope=RopeConfig(fraction=0.0, bias="fire")),
    "sinusoidal+nope": dict(rope=RopeConfig(fraction=0.0), absolute_encoding="sinusoidal"),
    "rnope": dict(rope=RopeConfig(), global_every=2, global_rope=RopeConfig(fraction=0.0)),
    "rope+fire-global": dict(rope=RopeConfig(fraction=0.75), global_every=2,
                             global_rope=RopeConfig(fraction=0.0, bias="fire")),
    "linear": dict(rope=RopeConfig(type="linear", factor=4.0)),
    "ntk": dict(rope=RopeConfig(type="ntk", factor=4.0)),
    "dynamic": dict(rope=RopeConfig(type="dynamic", factor=2.0,
                                    original_max_position_embeddings=L0)),
    "yarn": dict(rope=RopeConfig(type="yarn", factor=4.0, original_max_position_embeddings=L0)),
    "llama3": dict(rope=RopeConfig(type="llama3", factor=8.0, original_max_position_embeddings=L0,
                                   low_freq_factor=1.0, high_freq_factor=4.0, theta=500.0)),
}


def _model(seed: int = 0, **overrides) -> model_lib.Transformer:
  model = model_lib.Transformer(ModelConfig(**{**SMALL, **overrides}), rngs=nnx.Rngs(seed))
  for path, var in nnx.iter_graph(model):
    if isinstance(var, nnx.Param) and path[-1] == "scale":
      var[...] = 0.3 * jax.random.normal(jax.random.key(len(path)), var[...].shape)
    if isinstance(var, nnx.Param) and path[-1] in ("b_in", "b_out"):  # FIRE's MLP biases.
      var[...] = 0.5 * jax.random.normal(jax.random.key(len(path)), var[...].shape)
  return model


def _jitted(model):
  graphdef, state = nnx.split(model)
  fn = jax.jit(lambda state, *args, cache=None: nnx.merge(graphdef, state)(*args, cache=cache))
  return lambda *args, cache=None: fn(state, *args, cache=cache)


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_kv_cache_decode_matches_full_forward(name):
  """Prefill 4 tokens, then decode one at a time; row 1 is row 0's first 7 tokens, left-padded.

  The cache has exactly as many slots as the full pass has tokens, so "dynamic" (which reads
  the number of key slots) sees the same length in both.
  """
  model = _model(**ENCODINGS[name])
  forward = _jitted(model)
  tokens, positions, segment_ids, valid = decoding.left_padded_batch(61)
  full = np.asarray(forward(tokens, positions, segment_ids).logits)
  cached, _ = decoding.decode_stepwise(forward, model.cfg, tokens, positions, segment_ids,
                                       prefill=4, max_length=10)
  np.testing.assert_allclose(cached[valid], full[valid], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(cached[1, 3:], cached[0, :7], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_packing_positions_restart_per_document(name):
  """A row packing documents A (5 tokens) and B (7) gives B the logits of B alone."""
  if name == "dynamic":
    pytest.skip("dynamic NTK reads the row length (12 vs 7), so B alone is another encoding")
  model = _model(**ENCODINGS[name])
  rng = np.random.default_rng(1)
  a, b = rng.integers(3, 61, size=(5,)), rng.integers(3, 61, size=(7,))
  packed = jnp.asarray(np.concatenate([a, b])[None], jnp.int32)
  positions = jnp.asarray([list(range(5)) + list(range(7))], jnp.int32)
  segments = jnp.asarray([[1] * 5 + [2] * 7], jnp.int32)
  got = np.asarray(model(packed, positions, segments).logits)
  alone_b = np.asarray(model(jnp.asarray(b[None], jnp.int32)).logits)
  alone_a = np.asarray(model(jnp.asarray(a[None], jnp.int32)).logits)
  np.testing.assert_allclose(got[0, 5:], alone_b[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got[0, :5], alone_a[0], rtol=1e-5, atol=1e-5)


def _softmax(x):
  x = x - x.max(-1, keepdims=True)
  e = np.exp(x)
  return e / e.sum(-1, keepdims=True)


def _reference_probs(inter, bias, logit_scale, positions, segments):
  """float64 softmax(logit_scale · q_rot·k_rot / √H + bias) under the causal, same-segment mask,
  from the layer's own rotated queries and keys ([B, L, N, H], [B, L, K, H])."""
  q = np.asarray(inter["q_rot"], np.float64)
  k = np.asarray(inter["k_rot"], np.float64)
  k = np.repeat(k, q.shape[2] // k.shape[2], axis=2)
  logits = logit_scale * np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1]) + bias
  l = q.shape[1]
  seg = np.asarray(segments)
  allowed = np.tril(np.ones((l, l), bool))[None] & (seg[:, :, None] == seg[:, None, :])
  return _softmax(np.where(allowed[:, None], logits, -np.inf))


def test_alibi_attention_is_softmax_of_scores_plus_distance_bias():
  model = _model(rope=RopeConfig(fraction=0.5, bias="alibi"))
  tokens = jnp.asarray(np.random.default_rng(2).integers(3, 61, size=(2, 9)), jnp.int32)
  positions = jnp.asarray([list(range(4)) + list(range(5)), list(range(9))], jnp.int32)
  segments = jnp.asarray([[1] * 4 + [2] * 5, [1] * 9], jnp.int32)
  out = model(tokens, positions, segments, return_intermediates=True)
  slopes = encodings.alibi_slopes(4)
  pos = np.asarray(positions, np.float64)
  bias = -slopes[None, :, None, None] * (pos[:, None, :, None] - pos[:, None, None, :])
  for inter in out.intermediates:
    want = _reference_probs(inter, bias, 1.0, positions, segments)
    np.testing.assert_allclose(np.asarray(inter["attn"]), want, rtol=1e-4, atol=1e-6)


def test_fire_attention_adds_the_layers_own_fire_bias():
  model = _model(rope=RopeConfig(fraction=0.0, bias="fire"))
  tokens = jnp.asarray(np.random.default_rng(3).integers(3, 61, size=(1, 8)), jnp.int32)
  positions = jnp.arange(8, dtype=jnp.int32)[None]
  segments = jnp.ones((1, 8), jnp.int32)
  out = model(tokens, positions, segments, return_intermediates=True)
  for block, inter in zip(model.blocks, out.intermediates):
    bias = np.asarray(block.attn.bias(positions, positions), np.float64)
    want = _reference_probs(inter, bias, 1.0, positions, segments)
    np.testing.assert_allclose(np.asarray(inter["attn"]), want, rtol=1e-4, atol=1e-6)
  a, b = (np.asarray(blk.attn.bias.w_out[...]) for blk in model.blocks)
  assert not np.allclose(a, b)  # Each layer has its own FIRE.


@pytest.mark.parametrize("name", ["yarn", "llama3", "linear"])
def test_scaled_rotation_and_yarn_temperature(name):
  """q_rot/k_rot rotate with the scaled ladder; YaRN's logits carry attention_factor²."""
  model = _model(**ENCODINGS[name])
  rope = model.cfg.rope
  tokens = jnp.asarray(np.random.default_rng(4).integers(3, 61, size=(1, 12)), jnp.int32)
  positions = jnp.arange(12, dtype=jnp.int32)[None] * 37
  segments = jnp.ones((1, 12), jnp.int32)
  out = model(tokens, positions, segments, return_intermediates=True)
  factor = rope_scaling.attention_factor(rope.type, rope.scaling_params())
  assert (factor > 1.0) == (name == "yarn")
  freqs = rope_scaling.scaled_frequencies(16, rope.theta, rope.type, rope.scaling_params())
  for inter in out.intermediates:
    q, q_rot = np.asarray(inter["q"], np.float64), np.asarray(inter["q_rot"], np.float64)
    phi = np.asarray(positions, np.float64)[0, :, None] * freqs  # [L, H/2]
    a, b = q[0, :, :, :8], q[0, :, :, 8:]
    want = np.concatenate([a * np.cos(phi)[:, None] - b * np.sin(phi)[:, None],
                           b * np.cos(phi)[:, None] + a * np.sin(phi)[:, None]], axis=-1)
    np.testing.assert_allclose(q_rot[0], want, atol=2e-5)
    ref = _reference_probs(inter, 0.0, factor**2, positions, segments)
    np.testing.assert_allclose(np.asarray(inter["attn"]), ref, rtol=1e-4, atol=1e-6)


def test_sinusoidal_absolute_encoding_breaks_shift_invariance_of_nope():
  """NoPE sees no positions at all (a shift changes nothing); with the sinusoidal encoding
  added to the embeddings it does, and it equals NoPE fed embeddings + PE."""
  tokens = jnp.asarray(np.random.default_rng(5).integers(3, 61, size=(1, 8)), jnp.int32)
  pos = jnp.arange(8, dtype=jnp.int32)[None]
  nope = _model(rope=RopeConfig(fraction=0.0))
  np.testing.assert_allclose(np.asarray(nope(tokens, pos).logits),
                             np.asarray(nope(tokens, pos + 100).logits), atol=1e-5)
  absolute = _model(rope=RopeConfig(fraction=0.0), absolute_encoding="sinusoidal")
  shifted = np.abs(np.asarray(absolute(tokens, pos).logits)
                   - np.asarray(absolute(tokens, pos + 100).logits)).max()
  assert shifted > 1e-2


def test_eval_time_context_extension_on_trained_params():
  """A model trained without scaling restores into the YaRN model unchanged (no parameters
  change) and its long-context logits change."""
  trained = _model(rope=RopeConfig())
  cfg = trained.cfg.with_rope_scaling(
      {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8})
  assert cfg.rope.type == "yarn" and cfg.rope.fraction == 1.0
  extended = nnx.eval_shape(lambda: model_lib.Transformer(cfg, rngs=nnx.Rngs(0)))
  nnx.update(extended, nnx.state(trained, nnx.Param))
  tokens = jnp.asarray(np.random.default_rng(6).integers(3, 61, size=(1, 32)), jnp.int32)
  a, b = trained(tokens).logits, extended(tokens).logits
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3
  with pytest.raises(ValueError, match=r"Cannot override \['bias'\]"):
    trained.cfg.with_rope_scaling({"bias": "fire"})


@pytest.mark.parametrize("overrides, match", [
    (dict(rope=RopeConfig(bias="alibi"), attention_impl="splash"),
     r"model\.rope\.bias='alibi' .*attention_impl='splash'"),
    (dict(global_every=2, global_rope=RopeConfig(bias="fire"), attention_impl="splash"),
     r"model\.global_rope\.bias='fire'"),
    (dict(rope=RopeConfig(bias="t5")), r"model\.rope\.bias must be one of"),
    (dict(absolute_encoding="learned"), r"model\.absolute_encoding must be one of"),
    (dict(rope=RopeConfig(type="yarn", factor=0.5, original_max_position_embeddings=8)),
     r"rope\.factor must be a finite number >= 1\.0 for rope type 'yarn', got 0\.5"),
    (dict(rope=RopeConfig(type="longrope")), r"rope\.type must be one of"),
    (dict(rope=RopeConfig(type="yarn", factor=2.0)),
     r"needs rope\.original_max_position_embeddings"),
    (dict(rope=RopeConfig(type="linear", factor=2.0, scale_factor=2.0)),
     r"cannot be combined with rope type 'linear'"),
])
def test_bad_combinations_are_rejected_before_compile(overrides, match):
  with pytest.raises(ValueError, match=match):
    ModelConfig(**{**SMALL, **overrides})


def test_config_arguments_and_command_line_select_the_encodings():
  from absl import flags
  from ml_collections import config_flags
  argv = ["prog", "--config=configs/tiny.py:pe=rope", "--config.model.rope.type=yarn",
          "--config.model.rope.factor=4", "--config.model.rope.original_max_position_embeddings=64",
          "--config.model.global_every=2", "--config.model.global_rope.bias=alibi",
          "--config.model.global_rope.fraction=0"]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv, sys_argv=argv)
  fv(argv)
  cfg = config_lib.model_config(fv.config)
  assert (cfg.rope.type, cfg.rope.factor, cfg.rope.original_max_position_embeddings) == (
      "yarn", 4.0, 64)
  glob = cfg.layer_rope(1)
  assert (glob.bias, glob.fraction, glob.type, glob.factor) == ("alibi", 0.0, "yarn", 4.0)
  alibi = config_lib.model_config(config_lib.load_config("configs/tiny.py:pe=alibi"))
  assert (alibi.rope.fraction, alibi.rope.bias) == (0.0, "alibi")
  sinus = config_lib.model_config(config_lib.load_config("configs/tiny.py:pe=sinusoidal"))
  assert (sinus.rope.fraction, sinus.absolute_encoding) == (0.0, "sinusoidal")
  rnope = config_lib.model_config(config_lib.load_config("configs/tiny.py:pe=rnope"))
  assert [rnope.layer_rope(i).fraction for i in range(8)] == [1, 1, 1, 0, 1, 1, 1, 0]


def test_global_rope_with_its_own_type_inherits_no_scaling_parameters():
  d = dict(SMALL, rope=dict(type="yarn", factor=4.0, original_max_position_embeddings=64),
           global_every=2, global_rope=dict(type="default", fraction=0.0))
  cfg = ModelConfig.from_dict(d)
  assert cfg.layer_rope(1) == RopeConfig(fraction=0.0)
  d["global_rope"] = dict(fraction=0.0)  # No type: inherits yarn and its parameters.
  assert ModelConfig.from_dict(d).layer_rope(1).factor == 4.0
  assert dataclasses.asdict(ModelConfig.from_dict(d).layer_rope(0))["type"] == "yarn"


def test_restore_a_run_with_a_context_extension_it_was_not_trained_with(tmp_path):
  """rundir.load(..., rope_scaling=...): same parameters, YaRN model, long-context logits differ;
  a field that changes parameters is refused before anything is read."""
  from rope_jax.checkpoint import rundir  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config("configs/tiny.py:pe=p_rope,p=0.75")
  config.unlock()
  config.model.update(num_layers=1, embed_dim=32, num_heads=2, num_kv_heads=1, head_dim=16,
                      mlp_dim=32)
  model = model_lib.Transformer(config_lib.model_config(config), rngs=nnx.Rngs(0))
  rundir.save_params(str(tmp_path), nnx.state(model, nnx.Param), config.to_dict())
  yarn = dict(type="yarn", factor=4.0, original_max_position_embeddings=16)
  plain = rundir.load(str(tmp_path))
  extended = rundir.load(str(tmp_path), rope_scaling=yarn)
  assert extended.model_config.rope == dataclasses.replace(plain.model_config.rope, **yarn)
  assert extended.config.model.rope.type == "yarn" and plain.model_config.rope.type == "default"
  for a, b in zip(jax.tree.leaves(nnx.state(plain.model, nnx.Param)),
                  jax.tree.leaves(nnx.state(extended.model, nnx.Param))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  tokens = jnp.asarray(np.random.default_rng(7).integers(3, 100, size=(1, 64)), jnp.int32)
  diff = np.abs(np.asarray(plain.model(tokens).logits) - np.asarray(extended.model(tokens).logits))
  assert diff.max() > 1e-3
  with pytest.raises(ValueError, match=r"Cannot override \['fraction'\]"):
    rundir.load(str(tmp_path), rope_scaling={"fraction": 0.5})
