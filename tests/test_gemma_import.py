"""Importing official Gemma 1 weights: equivalence to Hugging Face, streaming I/O, clear errors.

The reference logits come from Hugging Face ``transformers``' PyTorch ``GemmaForCausalLM`` on two
tiny random models (MQA like Gemma 2B, MHA like Gemma 7B), and the Flax-layout checkpoints hold
the same weights as the gemma library writes them; ``tools/make_gemma_reference.py`` made both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from rope_jax import analysis
from rope_jax.model import transformer as model_lib
from rope_jax.checkpoint import rundir
from rope_jax.weights import gemma
from rope_jax.weights import safetensors_io
from tests import fake_devices

TESTDATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")
MODELS = ("gemma_tiny_mqa", "gemma_tiny_mha")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _src(name: str, layout: str) -> str:
  return os.path.join(TESTDATA, name, layout)


def _reference(name: str) -> tuple[np.ndarray, np.ndarray]:
  with np.load(os.path.join(TESTDATA, name, "reference_logits.npz")) as z:
    return z["tokens"], z["logits"]


def _cfg(name: str, **overrides) -> model_lib.ModelConfig:
  fields = gemma.infer_model_fields(_src(name, "hf"))
  fields.pop("rope")
  return model_lib.ModelConfig(**{**fields, **overrides})


def _hf_tensors(name: str) -> dict[str, np.ndarray]:
  reader = safetensors_io.SafetensorsReader(_src(name, "hf"))
  return {k: np.array(reader.read(k)) for k in reader.keys()}


def _write_hf(tmp_path, tensors: dict[str, np.ndarray], name: str = "gemma_tiny_mqa") -> str:
  """An HF checkpoint directory with these tensors and the test model's config.json."""
  out = tmp_path / "hf"
  out.mkdir()
  shutil.copy(os.path.join(_src(name, "hf"), "config.json"), out / "config.json")
  safetensors_io.save_file(str(out / "model.safetensors"), tensors)
  return str(out)


@pytest.mark.parametrize("layout", ["hf", "flax"])
@pytest.mark.parametrize("name", MODELS)
def test_logits_match_hugging_face(name, layout):
  tokens, want = _reference(name)
  model = gemma.import_model(_src(name, layout), _cfg(name), layout=layout)
  got = np.asarray(model(jnp.asarray(tokens)).logits)
  assert got.shape == want.shape == tokens.shape + (128,)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=5e-5)


@pytest.mark.parametrize("name", MODELS)
def test_inferred_config_is_the_same_from_both_layouts(name):
  hf = gemma.infer_model_fields(_src(name, "hf"))
  assert hf.pop("rope") == {"theta": 10_000.0} and hf.pop("norm_eps") == 1e-6
  assert gemma.infer_model_fields(_src(name, "flax")) == hf
  assert gemma.detect_layout(_src(name, "hf")) == "hf"
  assert gemma.detect_layout(_src(name, "flax")) == "flax"


def test_safetensors_roundtrip_bf16_and_sharded_index(tmp_path):
  a = np.arange(12, dtype=np.float32).reshape(3, 4)
  b = np.linspace(-2, 2, 5).astype(ml_dtypes.bfloat16)
  safetensors_io.save_file(str(tmp_path / "s1.safetensors"), {"a": a}, {"format": "np"})
  safetensors_io.save_file(str(tmp_path / "s2.safetensors"), {"b": b})
  (tmp_path / safetensors_io.INDEX_FILE).write_text(
      '{"metadata": {}, "weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}')
  reader = safetensors_io.SafetensorsReader(str(tmp_path))
  assert sorted(reader.keys()) == ["a", "b"] and reader.metadata == {"format": "np"}
  assert reader.spec("b") == ((5,), np.dtype(ml_dtypes.bfloat16))
  np.testing.assert_array_equal(reader.read("a"), a)
  np.testing.assert_array_equal(reader.read("b"), b)


def test_bf16_checkpoint_into_bf16_params(tmp_path):
  tensors = {k: v.astype(ml_dtypes.bfloat16) for k, v in _hf_tensors("gemma_tiny_mqa").items()}
  src = _write_hf(tmp_path, tensors)
  model = gemma.import_model(src, _cfg("gemma_tiny_mqa", param_dtype="bfloat16"))
  table = model.embedder.table[...]
  assert table.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(table), tensors["model.embed_tokens.weight"])
  tokens, want = _reference("gemma_tiny_mqa")
  got = np.asarray(model(jnp.asarray(tokens)).logits)
  assert np.max(np.abs(got - want)) < 0.1 * np.max(np.abs(want))  # bf16 weights, f32 compute.


def test_flax_layout_in_the_older_non_ocdbt_orbax_format(tmp_path):
  """Older gemma checkpoints were written before Orbax's OCDBT default: one zarr per array."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  reader = gemma.OrbaxParamsReader(_src("gemma_tiny_mha", "flax"))
  params: dict = {}
  for key in reader.keys():
    module, leaf = key.rsplit("/", 1)
    params.setdefault(module, {})[leaf] = reader.read(key)
  ocp.PyTreeCheckpointer(use_ocdbt=False).save(str(tmp_path / "ckpt"), params)
  assert not (tmp_path / "ckpt" / "manifest.ocdbt").exists()
  tokens, want = _reference("gemma_tiny_mha")
  model = gemma.import_model(str(tmp_path / "ckpt"), _cfg("gemma_tiny_mha"))
  np.testing.assert_allclose(np.asarray(model(jnp.asarray(tokens)).logits), want, rtol=1e-5,
                             atol=5e-5)


def test_pad_vocab(tmp_path):
  tokens, want = _reference("gemma_tiny_mqa")
  cfg = _cfg("gemma_tiny_mqa", vocab_size=136)
  with pytest.raises(ValueError, match=r"'vocab_size' = 128 .* model\.vocab_size = 136"):
    gemma.import_params(_src("gemma_tiny_mqa", "hf"), cfg)
  model = gemma.import_model(_src("gemma_tiny_mqa", "flax"), cfg, pad_vocab=True)
  got = np.asarray(model(jnp.asarray(tokens)).logits)
  np.testing.assert_allclose(got[..., :128], want, rtol=1e-5, atol=5e-5)
  np.testing.assert_array_equal(got[..., 128:], 0.0)


# ---------------------------------------------------------------------------------- errors


def test_missing_tensor_names_the_key(tmp_path):
  tensors = _hf_tensors("gemma_tiny_mqa")
  del tensors["model.layers.1.mlp.up_proj.weight"]
  with pytest.raises(ValueError, match=r"Missing tensor 'model\.layers\.1\.mlp\.up_proj\.weight' "
                     r"\[F, D\].*blocks\.1\.mlp\.up"):
    gemma.import_params(_write_hf(tmp_path, tensors), _cfg("gemma_tiny_mqa"))


def test_wrong_shape_names_the_key_and_both_shapes(tmp_path):
  tensors = _hf_tensors("gemma_tiny_mqa")
  key = "model.layers.0.self_attn.k_proj.weight"
  tensors[key] = np.concatenate([tensors[key]] * 2)
  with pytest.raises(ValueError, match=r"'model\.layers\.0\.self_attn\.k_proj\.weight' has shape "
                     r"\(64, 64\), expected \(32, 64\) = \[K\*H, D\]"):
    gemma.import_params(_write_hf(tmp_path, tensors), _cfg("gemma_tiny_mqa"))


def test_unexpected_tensor_is_named(tmp_path):
  tensors = _hf_tensors("gemma_tiny_mqa")
  tensors["model.layers.0.post_feedforward_layernorm.weight"] = np.zeros(64, np.float32)
  tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]  # Tied: allowed.
  with pytest.raises(ValueError, match=r"no place for.*post_feedforward_layernorm"):
    gemma.import_params(_write_hf(tmp_path, tensors), _cfg("gemma_tiny_mqa"))


def test_unknown_layout(tmp_path):
  with pytest.raises(ValueError, match=r"Unknown checkpoint layout 'pytorch'"):
    gemma.import_params(_src("gemma_tiny_mqa", "hf"), _cfg("gemma_tiny_mqa"), layout="pytorch")
  (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
  with pytest.raises(ValueError, match=r"Unknown checkpoint layout at .*Pass layout="):
    gemma.import_params(str(tmp_path), _cfg("gemma_tiny_mqa"))
  with pytest.raises(ValueError, match=r"not a gemma-library params checkpoint|embedder"):
    gemma.import_params(_src("gemma_tiny_mqa", "hf"), _cfg("gemma_tiny_mqa"), layout="flax")


@pytest.mark.parametrize("layout, overrides, pattern", [
    ("hf", dict(num_heads=2), r"config\.json 'num_attention_heads' = 4 .* model\.num_heads = 2"),
    ("hf", dict(head_dim=16), r"'head_dim' = 32 .* model\.head_dim = 16"),
    ("flax", dict(num_layers=3), r"layer_<i> count' = 2 .* model\.num_layers = 3"),
    ("flax", dict(mlp_dim=32), r"'mlp_dim' = 64 .* model\.mlp_dim = 32"),
    ("flax", dict(rope=model_lib.RopeConfig(fraction=0.75)), r"model\.rope\.fraction = 0\.75"),
    ("hf", dict(rope=model_lib.RopeConfig(theta=5e5)), r"model\.rope\.theta = 500000\.0"),
])
def test_config_mismatch_names_the_key(layout, overrides, pattern):
  with pytest.raises(ValueError, match=pattern):
    gemma.import_params(_src("gemma_tiny_mqa", layout), _cfg("gemma_tiny_mqa", **overrides))


# --------------------------------------------------------------------- checkpoint and CLIs


def test_saved_checkpoint_restores_like_a_run(tmp_path):
  from rope_jax.config import base as config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.base_config()
  config.model.update(**gemma.infer_model_fields(_src("gemma_tiny_mha", "hf")))
  params = gemma.import_params(_src("gemma_tiny_mha", "flax"), config_lib.model_config(config))
  rundir.save_params(str(tmp_path), params, config.to_dict(), step=7,
                     metadata={"import": {"layout": "flax"}})
  restored = rundir.load(str(tmp_path), device=jax.local_devices()[0], attention_impl=None)
  step, model, metadata = restored.step, restored.model, restored.metadata
  assert step == 7 and metadata["import"] == {"layout": "flax"}
  tokens, want = _reference("gemma_tiny_mha")
  np.testing.assert_allclose(np.asarray(model(jnp.asarray(tokens)).logits), want, rtol=1e-5,
                             atol=5e-5)


def test_restore_model_reads_the_params_of_a_training_run(tmp_path):
  """A trainer checkpoint holds {"params", "opt_state", "step"}; only the params come back."""
  import json  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from rope_jax.checkpoint import manager as checkpoint  # pylint: disable=g-import-not-at-top
  from rope_jax.config import base as config_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.training import train_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.base_config()
  config.model.update(vocab_size=64, num_layers=1, embed_dim=16, num_heads=2, num_kv_heads=1,
                      head_dim=8, mlp_dim=32)
  model_cfg = config_lib.model_config(config)
  optimizer, _ = train_lib.make_optimizer(train_lib.TrainConfig.from_dict(config.train.to_dict()))
  state = train_lib.init_state(model_cfg, optimizer, seed=0)
  with checkpoint.Checkpointer(rundir.checkpoint_dir(str(tmp_path)), save_interval_steps=1,
                               max_to_keep=1, async_save=False) as ckpt:
    ckpt.save(3, state, metadata={"config": json.loads(config.to_json_best_effort())})
  restored = rundir.load(str(tmp_path), device=jax.local_devices()[0], attention_impl=None)
  step, model, _ = restored.step, restored.model, restored.metadata
  assert step == 3
  want = jax.tree.leaves(nnx.to_pure_dict(state["params"]))
  got = jax.tree.leaves(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  assert len(got) == len(want)
  for a, b in zip(got, want):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_import_sample_and_analysis_end_to_end(tmp_path):
  """The import CLI, the sampling CLI and the Gemma 7B analysis script on a tiny checkpoint."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  run = lambda *args: subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env,
                                     capture_output=True, text=True, timeout=240)
  out = run("rope_jax.import_gemma", f"--src={_src('gemma_tiny_mqa', 'flax')}",
            f"--out={tmp_path}")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Saved 2-layer Gemma (74,048 params)" in out.stdout
  out = run("rope_jax.sample", f"--workdir={tmp_path}", "--prompt=To be", "--prompt=or not",
            "--vocab=bytes", "--max_new_tokens=4")
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.splitlines()[1].startswith("To be\u2502")

  from experiments import gemma7b_analysis  # pylint: disable=g-import-not-at-top
  prompts = tmp_path / "quotes.txt"
  prompts.write_text("To be, or not to be.\n# skipped\n\nAll the world's a stage.\nBrevity.\n")
  figs = tmp_path / "figs"
  paths = gemma7b_analysis.main([f"--workdir={tmp_path}", f"--prompts={prompts}",
                                 "--vocab=bytes", f"--out={figs}", "--batch_size=2"])
  assert all(os.path.exists(p) for p in paths)
  with np.load(figs / "frequency_usage.npz") as z:
    assert z["q"].shape == (2, 4, 16) and z["k"].shape == z["v"].shape == (2, 1, 16)
    assert z["diagonal"].shape == z["previous_token"].shape == (2, 4)
    assert np.all((z["diagonal"] >= 0) & (z["diagonal"] <= 1))


def test_analysis_finds_a_planted_previous_token_head():
  """Thm 5.3's construction planted in head 1 of layer 0 (q = k in the fastest chunk, the key
  rotated one step ahead) makes a previous-token head, and the analysis reports exactly it."""
  from experiments import gemma7b_analysis  # pylint: disable=g-import-not-at-top
  cfg = _cfg("gemma_tiny_mha")
  model = gemma.import_model(_src("gemma_tiny_mha", "flax"), cfg)
  attn = model.blocks[0].attn
  u = np.full((cfg.embed_dim,), 1000.0 / np.sqrt(cfg.embed_dim), np.float32)
  q, k = np.asarray(attn.q_proj[...]).copy(), np.asarray(attn.k_proj[...]).copy()
  q[:, 1], k[:, 1] = 0.0, 0.0
  q[:, 1, 0] = u
  k[:, 1, 0], k[:, 1, cfg.head_dim // 2] = u * np.cos(1.0), u * np.sin(1.0)
  attn.q_proj[...], attn.k_proj[...] = jnp.asarray(q), jnp.asarray(k)
  # One repeated token per prompt: every query and key of layer 0 is the same vector, so only
  # the rotation tells positions apart.
  result = gemma7b_analysis.analyse(model, [[7] * 10, [9] * 8], batch_size=1)
  assert result["previous_token"].shape == (2, 2)
  assert result["previous_token"][0, 1] > 0.95
  assert [(l, h) for l, h, _ in analysis.heads_above(result["previous_token"], 0.95)] == [(0, 1)]


def test_import_onto_a_mesh_in_a_subprocess():
  """With 4 CPU devices: params land in their NamedShardings and the logits are unchanged."""
  code = f"""
import os
os.environ["XLA_FLAGS"] = {fake_devices.xla_flags(4)!r}
os.environ["JAX_PLATFORMS"] = "cpu"
import sys; sys.path.insert(0, {REPO!r})
import jax, jax.numpy as jnp, numpy as np
from rope_jax import sharding
from rope_jax.weights import gemma
from rope_jax.model import transformer as model_lib
src = {_src("gemma_tiny_mha", "hf")!r}
fields = gemma.infer_model_fields(src); fields.pop("rope")
cfg = model_lib.ModelConfig(**fields)
mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=2, tensor=2))
model = gemma.import_model(src, cfg, mesh=mesh)
q = model.blocks[0].attn.q_proj[...]
assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor"), q.sharding
assert len(q.addressable_shards) == 4 and q.addressable_shards[0].data.shape == (16, 1, 24)
z = np.load({os.path.join(TESTDATA, "gemma_tiny_mha", "reference_logits.npz")!r})
np.testing.assert_allclose(np.asarray(model(jnp.asarray(z["tokens"])).logits), z["logits"],
                           rtol=1e-5,
                           atol=5e-5)
print("ok")
"""
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
  assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
