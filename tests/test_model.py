"""The Gemma-like decoder: exact forward against float64 numpy, causality, packing, GQA, configs."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rope_jax.config import base as config_lib
from rope_jax.model import transformer as model_lib
from tests import reference

SMALL = dict(vocab_size=97, num_layers=2, embed_dim=48, num_heads=4, num_kv_heads=2, head_dim=16,
             mlp_dim=64)


def _model(seed=0, **overrides) -> model_lib.Transformer:
  cfg = model_lib.ModelConfig(**{**SMALL, **overrides})
  model = model_lib.Transformer(cfg, rngs=nnx.Rngs(seed))
  # Non-zero norm scales so that the (1 + scale) convention is actually exercised.
  for path, var in nnx.iter_graph(model):
    if isinstance(var, nnx.Param) and path[-1] == "scale":
      var[...] = 0.1 * jax.random.normal(jax.random.key(len(path)), var.value.shape)
  return model


def _tokens(b=2, l=12, seed=0, vocab=97):
  return jnp.asarray(np.random.default_rng(seed).integers(3, vocab, size=(b, l)), jnp.int32)


def _pure_params(model):
  return jax.tree.map(np.asarray, nnx.state(model, nnx.Param).to_pure_dict())


@pytest.mark.parametrize("rope_kwargs", [
    dict(),
    dict(fraction=0.5),
    dict(fraction=0.0),
    dict(fraction=0.75, variant="reversed", theta=500_000.0),
    dict(fraction=0.5, variant="partial", layout="interleaved"),
    dict(fraction=0.0, bias="alibi"),  # ALiBi (Press et al.)
    dict(fraction=0.75, bias="alibi"),  # p-RoPE + ALiBi
])
def test_forward_matches_float64_numpy_gemma(rope_kwargs):
  model = _model(rope=model_lib.RopeConfig(**rope_kwargs))
  tokens = _tokens()
  positions = jnp.asarray([[0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5], list(range(12))], jnp.int32)
  segments = jnp.asarray([[1] * 6 + [2] * 6, [1] * 10 + [0] * 2], jnp.int32)
  got = model(tokens, positions, segments).logits
  rope_all = [dataclasses.asdict(model.cfg.rope)] * model.cfg.num_layers
  want = reference.gemma_forward(_pure_params(model), np.asarray(tokens), np.asarray(positions),
                                 np.asarray(segments), num_heads=4, num_kv_heads=2,
                                 rope_kwargs_per_layer=rope_all)
  assert got.dtype == jnp.float32 and got.shape == (2, 12, 97)
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("num_heads", [4, 3])  # 3: ALiBi's slopes for a non-power of two.
def test_sinusoidal_absolute_and_rnope_layers_match_float64(num_heads):
  """NoPE + sinusoidal absolute positions, with interleaved RoPE / NoPE + ALiBi layers."""
  glob = model_lib.RopeConfig(fraction=0.0, bias="alibi")
  model = _model(num_layers=3, global_every=2, global_rope=glob, num_heads=num_heads,
                 num_kv_heads=1, rope=model_lib.RopeConfig(), absolute_encoding="sinusoidal")
  tokens = _tokens()
  positions = jnp.asarray([[0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5], list(range(100, 112))],
                          jnp.int32)
  segments = jnp.asarray([[1] * 6 + [2] * 6, [1] * 12], jnp.int32)
  got = model(tokens, positions, segments).logits
  rope_kwargs = [dataclasses.asdict(model.cfg.layer_rope(i)) for i in range(3)]
  assert [k["bias"] for k in rope_kwargs] == ["none", "alibi", "none"]
  want = reference.gemma_forward(_pure_params(model), np.asarray(tokens), np.asarray(positions),
                                 np.asarray(segments), num_heads=num_heads, num_kv_heads=1,
                                 rope_kwargs_per_layer=rope_kwargs,
                                 absolute_encoding="sinusoidal")
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=2e-4)


def test_per_layer_positional_encoding_gemma4_style():
  glob = model_lib.RopeConfig(fraction=0.25, theta=1_000_000.0)
  model = _model(num_layers=3, global_every=3, global_rope=glob)
  assert [blk.attn.rope for blk in model.blocks] == [model.cfg.rope, model.cfg.rope, glob]
  tokens = _tokens(b=1)
  pos = jnp.arange(12)[None]
  rope_kwargs = [dataclasses.asdict(model.cfg.layer_rope(i)) for i in range(3)]
  want = reference.gemma_forward(_pure_params(model), np.asarray(tokens), np.asarray(pos),
                                 np.ones((1, 12)), num_heads=4, num_kv_heads=2,
                                 rope_kwargs_per_layer=rope_kwargs)
  np.testing.assert_allclose(np.asarray(model(tokens).logits), want, rtol=2e-4, atol=2e-4)


def test_rope_tables_once_per_forward_per_distinct_encoding(monkeypatch):
  """3 layers, 2 encodings: 2 table evaluations per forward pass, none inside the layers, and no
  data-dependent branch in the traced model."""
  from rope_jax import rope as rope_lib  # pylint: disable=g-import-not-at-top
  model = _model(num_layers=3, global_every=3,
                 global_rope=model_lib.RopeConfig(fraction=0.25, theta=1_000_000.0))
  calls = []
  real = rope_lib.rope_tables
  monkeypatch.setattr(rope_lib, "rope_tables", lambda *a, **k: calls.append(a) or real(*a, **k))
  tokens = _tokens()
  jaxpr = str(jax.make_jaxpr(lambda t: model(t, jnp.full(t.shape, 7000) + jnp.arange(12)).logits)(
      tokens))
  assert len(calls) == 2 and "cond" not in jaxpr


def test_causal_changing_token_t_changes_no_earlier_logit():
  model = _model()
  tokens = _tokens(b=1, l=16)
  base = np.asarray(model(tokens).logits)
  for t in (0, 5, 15):
    changed = np.asarray(model(tokens.at[0, t].set((tokens[0, t] + 1) % 97)).logits)
    np.testing.assert_array_equal(changed[:, :t], base[:, :t])
    assert not np.allclose(changed[:, t:], base[:, t:])


def test_packed_batch_equals_documents_run_unpacked():
  model = _model()
  docs = [_tokens(b=1, l=n, seed=n)[0] for n in (5, 3, 6)]
  packed = jnp.concatenate(docs + [jnp.zeros((2,), jnp.int32)])[None]  # 14 tokens + 2 pad.
  segments = jnp.asarray([[1] * 5 + [2] * 3 + [3] * 6 + [0] * 2], jnp.int32)
  positions = jnp.asarray([list(range(5)) + list(range(3)) + list(range(6)) + [0, 1]], jnp.int32)
  packed_logits = np.asarray(model(packed, positions, segments).logits)
  start = 0
  for doc in docs:
    alone = np.asarray(model(doc[None]).logits)
    np.testing.assert_allclose(packed_logits[:, start:start + len(doc)], alone, atol=1e-5)
    start += len(doc)


def test_segments_do_not_attend_across_each_other():
  model = _model()
  tokens = _tokens(b=1, l=8)
  segments = jnp.asarray([[1, 1, 1, 1, 2, 2, 2, 2]], jnp.int32)
  positions = jnp.asarray([[0, 1, 2, 3, 0, 1, 2, 3]], jnp.int32)
  inter = model(tokens, positions, segments, return_intermediates=True).intermediates
  for layer in inter:
    attn = np.asarray(layer["attn"])  # [B, N, L, L]
    np.testing.assert_array_equal(attn[..., 4:, :4], 0.0)
    np.testing.assert_array_equal(attn[..., :4, 4:], 0.0)
    np.testing.assert_allclose(attn.sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.triu(attn[0, 0], k=1) == 0.0)


def test_intermediates_are_the_forward_pass_quantities():
  model = _model(rope=model_lib.RopeConfig(fraction=0.5))
  tokens = _tokens()
  out = model(tokens, return_intermediates=True)
  logits, inter = out.logits, out.intermediates
  assert out.cache is None and model(tokens).intermediates is None
  np.testing.assert_array_equal(np.asarray(logits), np.asarray(model(tokens).logits))
  assert len(inter) == 2
  layer = inter[0]
  assert layer["q"].shape == (2, 12, 4, 16) and layer["k"].shape == (2, 12, 2, 16)
  assert layer["v"].shape == (2, 12, 2, 16) and layer["attn"].shape == (2, 4, 12, 12)
  pos = jnp.broadcast_to(jnp.arange(12), (2, 12))
  np.testing.assert_array_equal(layer["q_rot"], model.cfg.rope.apply(layer["q"], pos))
  np.testing.assert_array_equal(layer["k_rot"], model.cfg.rope.apply(layer["k"], pos))


def test_gqa_equals_mha_with_repeated_kv_heads():
  gqa = _model(num_heads=4, num_kv_heads=2)
  mha = _model(num_heads=4, num_kv_heads=4)
  mha_params = nnx.state(gqa, nnx.Param).to_pure_dict()
  for blk in mha_params["blocks"].values():
    for name in ("k_proj", "v_proj"):
      blk["attn"][name] = jnp.repeat(blk["attn"][name], 2, axis=1)
  state = nnx.state(mha, nnx.Param)
  nnx.replace_by_pure_dict(state, mha_params)
  nnx.update(mha, state)
  tokens = _tokens()
  np.testing.assert_allclose(np.asarray(mha(tokens).logits), np.asarray(gqa(tokens).logits),
                             atol=1e-5)


def test_dot_product_attention_impl_matches_xla():
  xla = _model()
  dpa = _model(attention_impl="dot_product")
  tokens = _tokens()
  segments = jnp.asarray([[1] * 7 + [2] * 5, [1] * 12], jnp.int32)
  positions = jnp.asarray([list(range(7)) + list(range(5)), list(range(12))], jnp.int32)
  np.testing.assert_allclose(np.asarray(dpa(tokens, positions, segments).logits),
                             np.asarray(xla(tokens, positions, segments).logits), atol=1e-5)


def test_bfloat16_compute_and_remat_run_and_stay_close():
  ref = _model()
  bf16 = _model(dtype="bfloat16", remat=True)
  tokens = _tokens()
  np.testing.assert_allclose(np.asarray(bf16(tokens).logits), np.asarray(ref(tokens).logits),
                             atol=0.1)
  grads = nnx.grad(lambda m: jnp.mean(m(tokens).logits))(bf16)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("config, total, embedding", [
    ("configs/gemma_2b.py", 2_506_434_560, 524_550_144),
    ("configs/gemma_7b.py", 8_538_074_112, 786_825_216),
])
def test_gemma_parameter_counts_without_allocation(config, total, embedding):
  cfg = config_lib.model_config(config_lib.load_config(config))
  counts = model_lib.count_params(cfg)  # jax.eval_shape: a 7B count on a laptop.
  assert counts == {"total": total, "embedding": embedding, "non_embedding": total - embedding}
  assert cfg.vocab_size == 256_128


def test_every_param_has_logical_axis_names():
  model = nnx.eval_shape(lambda: model_lib.Transformer(model_lib.ModelConfig(**SMALL),
                                                       rngs=nnx.Rngs(0)))
  specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
  leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
  spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  assert len(spec_leaves) == len(leaves)
  for spec, leaf in zip(spec_leaves, leaves):
    assert len(spec) == len(leaf.shape) and all(isinstance(n, str) for n in spec)


@pytest.mark.parametrize("overrides, match", [
    (dict(num_heads=4, num_kv_heads=3), r"num_heads \(4\) must be divisible by .*num_kv_heads \(3\)"),
    (dict(head_dim=15), "head_dim must be even"),
    (dict(rope=model_lib.RopeConfig(fraction=2.0)), "fraction p must be in"),
    (dict(rope=model_lib.RopeConfig(theta=0.0)), "theta"),
    (dict(rope=model_lib.RopeConfig(scale_factor=0.5)), "scale_factor"),
    (dict(attention_impl="flash"), "attention_impl must be one of"),
    (dict(embed_dim=0), "embed_dim must be a positive int"),
])
def test_bad_model_config_raises(overrides, match):
  with pytest.raises(ValueError, match=match):
    model_lib.ModelConfig(**{**SMALL, **overrides})


def test_bad_inputs_raise():
  model = _model()
  with pytest.raises(ValueError, match="positions must have the tokens' shape"):
    model(_tokens(), positions=jnp.zeros((2, 5), jnp.int32))
  with pytest.raises(ValueError, match=r"tokens must be \[B, L\]"):
    model(jnp.zeros((12,), jnp.int32))


# --- configs -------------------------------------------------------------------------------


def _leaf_keys(d, prefix=""):
  for k, v in d.items():
    if isinstance(v, dict):
      yield from _leaf_keys(v, f"{prefix}{k}.")
    else:
      yield prefix + k


def test_every_model_config_key_is_consumed():
  """Keys of config.model are exactly the ModelConfig / RopeConfig fields: none unused."""
  config = config_lib.load_config("configs/tiny.py")
  model_keys = set(_leaf_keys(config.model.to_dict()))
  fields = {f.name for f in dataclasses.fields(model_lib.ModelConfig)} - {"rope", "global_rope"}
  rope_fields = {f.name for f in dataclasses.fields(model_lib.RopeConfig)}
  want = fields | {f"{p}.{f}" for p in ("rope", "global_rope") for f in rope_fields}
  assert model_keys == want


@pytest.mark.parametrize("arg, variant, fraction, theta", [
    ("pe=nope", "p_rope", 0.0, 10_000.0),
    ("pe=rope,theta=500000", "p_rope", 1.0, 500_000.0),
    ("pe=p_rope,p=0.75,theta=10000", "p_rope", 0.75, 10_000.0),
    ("pe=reversed", "reversed", 0.75, 10_000.0),
    ("pe=partial,p=0.5", "partial", 0.5, 10_000.0),
    ("", "p_rope", 1.0, 10_000.0),
])
def test_config_arguments_choose_the_positional_encoding(arg, variant, fraction, theta):
  cfg = config_lib.model_config(config_lib.load_config(f"configs/gemma_2b.py:{arg}"))
  assert (cfg.rope.variant, cfg.rope.fraction, cfg.rope.theta) == (variant, fraction, theta)
  assert cfg.layer_rope(17) == cfg.rope


@pytest.mark.parametrize("arg, match", [
    ("pe=t5", r"Unknown pe='t5'; allowed: \('nope', 'rope'"),
    ("fraction=0.5", r"Unknown config argument 'fraction'.*allowed: \('pe', 'p'"),
    ("pe=nope,p=0.5", "pe=nope fixes p=0.0"),
    ("p=abc", "is not a number"),
    ("pe", "is not key=value"),
])
def test_bad_config_argument_raises(arg, match):
  with pytest.raises(ValueError, match=match):
    config_lib.load_config(f"configs/tiny.py:{arg}")


def test_command_line_overrides_through_config_flags(tmp_path):
  from absl import flags
  from ml_collections import config_flags
  argv = ["prog", "--config=configs/tiny.py:pe=p_rope", "--config.model.rope.fraction=0.25",
          "--config.model.global_every=2", "--config.model.global_rope.theta=1000000"]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv, sys_argv=argv)
  fv(argv)
  cfg = config_lib.model_config(fv.config)
  assert cfg.rope.fraction == 0.25 and cfg.layer_rope(0).theta == 10_000.0
  assert cfg.layer_rope(1) == dataclasses.replace(cfg.rope, theta=1_000_000.0)
  argv = ["prog", "--config=configs/tiny.py", "--config.model.rope.fractoin=0.25"]
  fv2 = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv2, sys_argv=argv)
  with pytest.raises(Exception, match="fractoin"):
    fv2(argv)


def test_unknown_config_section_or_key_raises():
  config = config_lib.load_config("configs/tiny.py")
  config.unlock()
  config.model.extra_knob = 3
  with pytest.raises(ValueError, match=r"Unknown key\(s\) \['extra_knob'\] in model"):
    config_lib.validate(config)
  config = config_lib.load_config("configs/tiny.py")
  config.unlock()
  config.optimiser = {"lr": 1.0}
  with pytest.raises(ValueError, match=r"Unknown config section\(s\) \['optimiser'\]"):
    config_lib.validate(config)
