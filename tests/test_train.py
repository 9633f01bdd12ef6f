"""Training library on one CPU device: config sections, optimizer, loss, data, errors, learning.

Multi-device, multi-process, resume and AOT checks are in test_sharding.py, test_multihost.py,
test_train_resume.py and test_aot.py (subprocesses).
"""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rope_jax.config import base as config_lib
from rope_jax.training import flops
from rope_jax.model import transformer as model_lib
from rope_jax import sharding
from rope_jax.data import synthetic as synthetic_data
from rope_jax.model import losses
from rope_jax.training import train_lib


def tiny(**overrides):
  """The tiny config on the synthetic source, with ``section.key=value`` overrides."""
  c = config_lib.load_config("configs/tiny.py")
  c.train.data_source = "synthetic"
  for key, value in overrides.items():
    section, name = key.split("__")
    c[section][name] = value
  return c


# Config sections --------------------------------------------------------------------------------

def test_base_config_validates_every_section():
  sections = config_lib.validate(tiny())
  assert set(sections) >= {"model", "train", "eval", "checkpoint", "mesh", "data"}
  assert isinstance(sections["train"], train_lib.TrainConfig)
  assert isinstance(sections["mesh"], sharding.MeshConfig)
  assert sections["eval"].length_multipliers == (1, 2, 4)


@pytest.mark.parametrize("section", ["train", "eval", "checkpoint", "mesh"])
def test_unknown_key_is_an_error_naming_it(section):
  c = tiny()
  c.unlock()
  c[section]["bogus_knob"] = 1
  with pytest.raises(ValueError, match=f"bogus_knob.*{section}"):
    config_lib.validate(c)


@pytest.mark.parametrize("key,value,match", [
    ("train__data_source", "tfrecords", "data_source"),
    ("train__warmup_steps", 10_000, "warmup_steps"),
    ("train__global_batch_size", 0, "global_batch_size"),
    ("eval__length_multipliers", (1, 0), "length_multipliers"),
    ("checkpoint__max_to_keep", 0, "max_to_keep"),
    ("mesh__fsdp", -1, "At most one"),  # data is -1 already.
])
def test_bad_values_are_errors(key, value, match):
  with pytest.raises(ValueError, match=match):
    config_lib.validate(tiny(**{key: value}))


def test_wrong_type_is_an_error():
  with pytest.raises(ValueError, match="train.seed"):
    train_lib.TrainConfig.from_dict({"seed": "zero"})


def test_model_remat_policies_and_old_bools():
  assert model_lib.ModelConfig(8, 1, 8, 1, 1, 2, 8, remat=True).remat == "full"
  assert model_lib.ModelConfig(8, 1, 8, 1, 1, 2, 8, remat=False).remat == "none"
  with pytest.raises(ValueError, match="remat"):
    model_lib.ModelConfig(8, 1, 8, 1, 1, 2, 8, remat="some")


# Optimizer and loss -----------------------------------------------------------------------------

def test_schedule_warmup_then_cosine():
  cfg = train_lib.TrainConfig(learning_rate=1.0, warmup_steps=10, num_steps=110,
                              end_learning_rate_fraction=0.1)
  lr = train_lib.make_schedule(cfg)
  np.testing.assert_allclose(float(lr(0)), 0.1, rtol=1e-6)  # Not 0: step 0 learns.
  np.testing.assert_allclose(float(lr(9)), 1.0, rtol=1e-6)
  np.testing.assert_allclose(float(lr(59)), 0.55, rtol=1e-5)  # Half way down the cosine.
  np.testing.assert_allclose(float(lr(109)), 0.1, rtol=1e-6)


def test_cross_entropy_is_masked_and_z_loss_adds():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 5, 7)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 7, size=(2, 5)))
  weights = jnp.asarray([[1, 1, 1, 0, 0], [1, 0, 1, 1, 0]], jnp.float32)
  obj, aux = losses.cross_entropy(logits, targets, weights)
  logp = jax.nn.log_softmax(logits)
  ce = -np.take_along_axis(np.asarray(logp), np.asarray(targets)[..., None], -1)[..., 0]
  np.testing.assert_allclose(float(obj), (ce * weights).sum() / 6, rtol=1e-6)
  assert float(aux["num_tokens"]) == 6
  # Masked positions do not matter at all.
  poisoned = logits.at[0, 3].set(1e4).at[1, 4].set(-1e4)
  np.testing.assert_allclose(float(losses.cross_entropy(poisoned, targets, weights)[0]),
                             float(obj), rtol=1e-6)
  obj_z, aux_z = losses.cross_entropy(logits, targets, weights, z_loss=1e-2)
  assert float(aux_z["z_loss"]) > 0
  np.testing.assert_allclose(float(obj_z), float(obj) + float(aux_z["z_loss"]), rtol=1e-6)


# Synthetic source -------------------------------------------------------------------------------

def test_synthetic_source_format_state_and_processes():
  kw = dict(vocab_size=64, split="train", global_batch_size=4, seq_len=32, seed=3)
  src = synthetic_data.SyntheticSource(**kw)
  b0 = next(src)
  assert {k: (v.dtype, v.shape) for k, v in b0.items()} == {
      "inputs": (np.int32, (4, 32)), "targets": (np.int32, (4, 32)),
      "weights": (np.float32, (4, 32)), "segment_ids": (np.int32, (4, 32)),
      "positions": (np.int32, (4, 32))}
  state = src.get_state()
  b1 = next(src)
  src.set_state(state)
  np.testing.assert_array_equal(next(src)["inputs"], b1["inputs"])
  # Packed documents: positions restart at each new segment; padding has weight 0.
  seg, pos = b0["segment_ids"], b0["positions"]
  starts = np.concatenate([np.ones((4, 1), bool), seg[:, 1:] != seg[:, :-1]], 1) & (seg > 0)
  assert np.all(pos[starts] == 0)
  assert np.all(b0["weights"][seg == 0] == 0)
  # Two processes together see exactly the one-process global batch.
  halves = [next(synthetic_data.SyntheticSource(**kw, process_index=i, process_count=2))
            for i in range(2)]
  for key in b0:
    np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), b0[key])


# Sharding rules, mesh and errors ----------------------------------------------------------------

def test_logical_to_spec_drops_axes_that_do_not_divide():
  rules = sharding.normalize_rules(sharding.DEFAULT_RULES)
  mesh_shape = {"data": 2, "fsdp": 4, "tensor": 2}
  spec = sharding.logical_to_spec(("embed", "kv_heads", "head_dim"), (128, 1, 64), rules,
                                  mesh_shape)
  assert spec == jax.sharding.PartitionSpec("fsdp")  # One MQA head stays replicated.
  spec = sharding.logical_to_spec(("embed", "q_heads", "head_dim"), (128, 4, 64), rules,
                                  mesh_shape)
  assert spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  with pytest.raises(ValueError, match="no rule"):
    sharding.logical_to_spec(("mystery",), (4,), rules, mesh_shape)


def test_mesh_size_must_match_devices():
  with pytest.raises(ValueError, match="device count"):
    sharding.make_mesh(sharding.MeshConfig(data=2))
  with pytest.raises(ValueError, match="unknown mesh axis"):
    sharding.MeshConfig(logical_axis_rules=(("batch", "pipeline"),))


def test_unknown_accelerator_is_an_error():
  with pytest.raises(ValueError, match="Unknown accelerator 'TPU v99'"):
    flops.peak_flops_per_device("TPU v99")
  fake = types.SimpleNamespace(platform="gpu", device_kind="Mystery GPU", process_index=0)
  with pytest.raises(ValueError, match="peak_tflops_per_device"):
    flops.resolve_peak([fake])
  assert flops.resolve_peak([fake], 100.0)[0] == 100e12
  assert flops.peak_flops_per_device("TPU v5 lite") == 197e12
  assert flops.peak_flops_per_device("NVIDIA H100 80GB HBM3") == 989e12


def test_workdir_not_writable(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  with pytest.raises(ValueError, match="not writable"):
    train_lib.check_workdir(str(blocker / "run"))


def test_flop_count_matches_parameter_count():
  cfg = config_lib.model_config(tiny())
  counts = model_lib.count_params(cfg)
  norms = (2 * cfg.num_layers + 1) * cfg.embed_dim
  assert flops.matmul_params(cfg) == counts["total"] - norms
  per_token = flops.train_flops_per_token(cfg, 128)
  assert per_token == 6 * flops.matmul_params(cfg) + 6 * 4 * 4 * 64 * 128


# Steps ------------------------------------------------------------------------------------------

def _setup(c):
  s = config_lib.validate(c)
  return train_lib.make_setup(s["model"], s["train"], s["mesh"]), s


def test_remat_and_attention_impls_give_the_same_gradients():
  """remat policies and jax.nn.dot_product_attention change nothing numerically."""
  import dataclasses
  from flax import nnx
  base = model_lib.ModelConfig(vocab_size=256, num_layers=2, embed_dim=32, num_heads=2,
                               num_kv_heads=1, head_dim=16, mlp_dim=64)
  batch = next(synthetic_data.SyntheticSource(vocab_size=256, split="train",
                                              global_batch_size=2, seq_len=16, seed=0))
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  results = []
  for remat, impl in [("none", "xla"), ("full", "xla"), ("dots", "dot_product")]:
    cfg = dataclasses.replace(base, remat=remat, attention_impl=impl)
    graphdef, params = nnx.split(model_lib.Transformer(cfg, rngs=nnx.Rngs(0)), nnx.Param)

    def loss(p, graphdef=graphdef):
      return losses.cross_entropy(train_lib._forward(graphdef, p, batch),  # pylint: disable=protected-access
                                  batch["targets"], batch["weights"])[0]

    results.append(jax.jit(jax.value_and_grad(loss))(params))
  for value, grads in results[1:]:
    np.testing.assert_allclose(float(value), float(results[0][0]), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(results[0][1])):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_tiny_loss_falls_on_a_learnable_source():
  """The tiny model learns the synthetic Markov chain: loss drops well below ln V."""
  steps = 50
  c = tiny(train__global_batch_size=8, train__seq_len=32, train__num_steps=steps,
           train__warmup_steps=5, train__learning_rate=3e-3)
  setup, s = _setup(c)
  state = setup.init()
  step = setup.compile_train_step()
  src = train_lib.make_batch_iterator(s["train"], s["model"], None, split="train",
                                      global_batch_size=8, seq_len=32, seed=0,
                                      process_index=0, process_count=1)
  history = []
  for _ in range(steps):
    state, m = step(state, train_lib.to_global(setup, next(src), 8))
    history.append(m["loss"])
  history = [float(x) for x in history]
  first, last = np.mean(history[:5]), np.mean(history[-5:])
  assert first > 7.5  # ~ln(2048) = 7.6 at init.
  assert last < first - 2.0, history


def test_splash_attention_matches_xla_in_interpret_mode():
  """The TPU kernel (run by the Pallas interpreter on CPU) = einsum attention, with packing."""
  from rope_jax.model import attention
  b, l, n, k, h = 1, 128, 2, 1, 64
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  q = jax.random.normal(keys[0], (b, l, n, h)) * h**-0.5
  kk, v = (jax.random.normal(kx, (b, l, k, h)) for kx in keys[1:])
  seg = np.ones((b, l), np.int32)
  seg[0, 50:] = 2
  seg[0, 110:] = 0  # Padding.
  seg = jnp.asarray(seg)
  out = attention.splash_attention(q, kk, v, seg, interpret=True)
  cfg = model_lib.ModelConfig(16, 1, 8, n, k, h, 8)
  from flax import nnx
  att = model_lib.Attention(cfg, cfg.rope, rngs=nnx.Rngs(0))
  ref, _ = att._xla_attention(q, kk, v, model_lib.attention_mask(seg))  # pylint: disable=protected-access
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)
