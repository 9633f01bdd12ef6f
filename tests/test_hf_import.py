"""Importing Hugging Face Llama / Mistral checkpoints: logits equal transformers', both config
schemas give one model, unsupported inputs are refused by name.

The checkpoints and golden logits are transformers' own (``tools/make_hf_fixtures.py``):
``llama_tiny_gqa`` (GQA, untied ``lm_head``, llama3 scaling with original length 16, so the
scaling changes every position from 1 on) and ``mistral_tiny_mqa`` (MQA, head_dim 32, θ = 1e6).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rope_jax.checkpoint import rundir
from rope_jax.config.schema import ModelConfig, RopeConfig
from rope_jax.errors import BadInputError
from rope_jax.model import transformer as model_lib
from rope_jax.weights import hf_checkpoint
from rope_jax.weights import hf_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTDATA = os.path.join(REPO, "tests", "testdata")
MODELS = ("llama_tiny_gqa", "mistral_tiny_mqa")
TOLERANCE = 1e-4  # Relative to the largest |logit| at each position.


def rel_error(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
  """``max_v |ours - ref| / max_v |ref|`` per position, the worst row: ``[L]``."""
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  return (np.abs(ours - ref).max(-1) / np.abs(ref).max(-1)).max(0)


def reference(name: str) -> tuple[np.ndarray, np.ndarray]:
  src = os.path.join(TESTDATA, name)
  return np.load(os.path.join(src, "tokens.npy")), np.load(os.path.join(src, "logits.npy"))


def env() -> dict[str, str]:
  return {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}


def cli(module: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env(),
                        capture_output=True, text=True, timeout=300)


def legacy_dir(tmp_path, name: str) -> str:
  """A copy of a fixture whose config.json is the transformers-4 schema."""
  out = tmp_path / f"{name}_legacy"
  shutil.copytree(os.path.join(TESTDATA, name), out)
  shutil.copy(out / "config_legacy.json", out / "config.json")
  return str(out)


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, rundir.Restored]:
  """Each fixture imported through the CLI (and the legacy-schema Llama), then restored."""
  root = tmp_path_factory.mktemp("hf_import")
  out = {}
  sources = [(m, os.path.join(TESTDATA, m)) for m in MODELS]
  sources.append(("llama_legacy", legacy_dir(root, "llama_tiny_gqa")))
  for name, src in sources:
    proc = cli("rope_jax.import_hf", f"--src={src}", f"--out={root / name}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out[name] = rundir.load(str(root / name))
  return out


@pytest.mark.parametrize("name", MODELS)
def test_logits_equal_transformers(imported, name):
  tokens, ref = reference(name)
  restored = imported[name]
  assert restored.imported and restored.metadata["import"]["architecture"] == name.split("_")[0]
  logits = np.asarray(restored.model(jnp.asarray(tokens)).logits)
  err = rel_error(logits, ref)
  print(f"{name}: max relative logit error {err.max():.2e}")
  assert err.max() <= TOLERANCE, err


def test_llama3_scaling_matters_where_compared(imported):
  """The same weights with unscaled RoPE miss transformers' logits by far more than the tolerance
  at every position from 8 on, so the comparison above checks the scaling there."""
  restored = imported["llama_tiny_gqa"]
  cfg = restored.model_config
  assert cfg.rope.type == "llama3"
  assert cfg.num_kv_heads < cfg.num_heads and not cfg.tie_embeddings
  tokens, ref = reference("llama_tiny_gqa")
  plain = model_lib.Transformer(
      dataclasses.replace(cfg, rope=RopeConfig(theta=cfg.rope.theta)), rngs=nnx.Rngs(0))
  nnx.update(plain, nnx.state(restored.model, nnx.Param))
  err = rel_error(np.asarray(plain(jnp.asarray(tokens)).logits), ref)
  assert err[8:].min() > 100 * TOLERANCE, err


def test_legacy_and_new_schema_give_one_model(imported):
  new = hf_checkpoint.model_fields(os.path.join(TESTDATA, "llama_tiny_gqa"))
  legacy_hf = json.load(open(os.path.join(TESTDATA, "llama_tiny_gqa", "config_legacy.json")))
  assert "rope_parameters" not in legacy_hf and legacy_hf["rope_scaling"]["rope_type"] == "llama3"
  assert new == (hf_config.architecture(legacy_hf), hf_config.model_fields(legacy_hf))
  a, b = imported["llama_tiny_gqa"], imported["llama_legacy"]
  assert a.model_config == b.model_config
  tokens, _ = reference("llama_tiny_gqa")
  np.testing.assert_array_equal(a.model(jnp.asarray(tokens)).logits,
                                b.model(jnp.asarray(tokens)).logits)


def test_legacy_type_key_and_linear():
  hf = json.load(open(os.path.join(TESTDATA, "mistral_tiny_mqa", "config_legacy.json")))
  hf["rope_scaling"] = {"type": "linear", "factor": 4.0}  # transformers 4.3x spelling.
  rope = RopeConfig(**hf_config.model_fields(hf)["rope"])
  assert rope.theta == 1e6
  assert (rope.type, rope.factor) == ("linear", 4.0)


def test_gemma_through_import_hf(tmp_path):
  """import_hf takes Gemma too (the transformers checkpoint of tests/test_gemma_import.py)."""
  from rope_jax import import_hf  # pylint: disable=g-import-not-at-top
  src = os.path.join(TESTDATA, "gemma_tiny_mqa", "hf")
  family, _, _ = import_hf.import_run(src, str(tmp_path / "gemma"))
  restored = rundir.load(str(tmp_path / "gemma"))
  assert family == "gemma" and restored.model_config.norm_plus_one
  with np.load(os.path.join(TESTDATA, "gemma_tiny_mqa", "reference_logits.npz")) as z:
    tokens, ref = z["tokens"], z["logits"]
  assert rel_error(np.asarray(restored.model(jnp.asarray(tokens)).logits), ref).max() <= TOLERANCE


def test_sliding_window_is_a_named_caveat():
  hf = {**_config("mistral_tiny_mqa"), "sliding_window": 32}
  assert hf_config.model_fields(hf) == hf_config.model_fields(_config("mistral_tiny_mqa"))
  (note,) = hf_config.caveats(hf)
  assert "sliding_window=32" in note
  assert not hf_config.caveats({**hf, "sliding_window": 128})


@pytest.mark.parametrize("rope, top, want", [
    # YaRN without a factor stretches to max_position_embeddings (DeepSeek-V3 style).
    (dict(rope_type="yarn", original_max_position_embeddings=32), {},
     dict(type="yarn", factor=4.0, original_max_position_embeddings=32)),
    # llama3 without original_max_position_embeddings: transformers takes max_position_embeddings;
    # a top-level one (Phi-3 style) wins over the parameters'.
    (dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0), {},
     dict(type="llama3", original_max_position_embeddings=128)),
    (dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
          original_max_position_embeddings=64), dict(original_max_position_embeddings=16),
     dict(original_max_position_embeddings=16)),
    # dynamic NTK stretches from max_position_embeddings whatever the parameters say.
    (dict(rope_type="dynamic", factor=2.0, original_max_position_embeddings=8), {},
     dict(type="dynamic", factor=2.0, original_max_position_embeddings=128)),
    # p-RoPE with a linear factor.
    (dict(rope_type="proportional", partial_rotary_factor=0.25, factor=2.0), {},
     dict(fraction=0.25, type="linear", factor=2.0)),
])
def test_transformers_context_lengths(rope, top, want):
  hf = {**_config(), **top, "rope_parameters": dict(rope_theta=1e4, **rope)}
  got = hf_config.model_fields(hf)["rope"]
  assert {k: got.get(k) for k in want} == want


def _config(name: str = "llama_tiny_gqa") -> dict:
  return json.load(open(os.path.join(TESTDATA, name, "config.json")))


@pytest.mark.parametrize("change, named", [
    (dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2"), "Qwen2ForCausalLM"),
    (dict(rope_parameters=dict(rope_type="longrope", rope_theta=1e4, factor=2.0)), "longrope"),
    (dict(rope_parameters=dict(rope_type="default", rope_theta=1e4, partial_rotary_factor=0.5)),
     "partial_rotary_factor"),
    (dict(attention_bias=True), "attention_bias"),
    (dict(hidden_act="gelu"), "hidden_act"),
    (dict(rope_parameters=dict(full_attention=dict(rope_type="default", rope_theta=1e4))),
     "per layer type"),
])
def test_refused_by_name(change, named):
  with pytest.raises(BadInputError, match=named):
    hf_config.model_fields({**_config(), **change})


def test_cli_refusal_is_one_line_exit_2(tmp_path):
  src = tmp_path / "qwen"
  shutil.copytree(os.path.join(TESTDATA, "mistral_tiny_mqa"), src)
  json.dump({**_config("mistral_tiny_mqa"), "architectures": ["Qwen2ForCausalLM"]},
            open(src / "config.json", "w"))
  proc = cli("rope_jax.import_hf", f"--src={src}", f"--out={tmp_path / 'run'}")
  assert proc.returncode == 2, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert "Qwen2ForCausalLM" in last and "LlamaForCausalLM" in last and "Traceback" not in \
      proc.stderr
  assert not (tmp_path / "run").exists()


def test_missing_and_misshapen_tensors_named(tmp_path):
  from rope_jax.weights import safetensors_io  # pylint: disable=g-import-not-at-top
  name = "mistral_tiny_mqa"
  src = tmp_path / "bad"
  shutil.copytree(os.path.join(TESTDATA, name), src)
  reader = safetensors_io.SafetensorsReader(str(src))
  tensors = {k: np.array(reader.read(k)) for k in reader.keys()}
  del reader
  cfg = ModelConfig(**{**hf_checkpoint.model_fields(str(src))[1],
                       "rope": RopeConfig(**hf_checkpoint.model_fields(str(src))[1]["rope"])})
  bad = dict(tensors)
  bad["model.layers.1.mlp.up_proj.weight"] = bad["model.layers.1.mlp.up_proj.weight"][:, :-1]
  safetensors_io.save_file(str(src / "model.safetensors"), bad)
  with pytest.raises(BadInputError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
    hf_checkpoint.import_params(str(src), cfg)
  del bad["model.layers.1.mlp.up_proj.weight"]
  safetensors_io.save_file(str(src / "model.safetensors"), bad)
  with pytest.raises(BadInputError, match=r"Missing tensor 'model\.layers\.1\.mlp\.up_proj"):
    hf_checkpoint.import_params(str(src), cfg)


def test_llama_fields_in_the_model():
  """The decoder fields on their own: init values, the lm_head, the embedding scale, the query
  scale (None = head_dim^-0.5)."""
  sizes = dict(vocab_size=32, num_layers=1, embed_dim=16, num_heads=2, num_kv_heads=1,
               head_dim=8, mlp_dim=24)
  llama = ModelConfig(**sizes, mlp_activation="silu", norm_plus_one=False, tie_embeddings=False,
                      embed_scale=False)
  model = model_lib.Transformer(llama, rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(model.final_norm.scale[...], np.ones(16))
  assert model.lm_head.shape == (32, 16)
  assert model_lib.count_params(llama)["embedding"] == 2 * 32 * 16
  ids = jnp.arange(6)[None]
  np.testing.assert_array_equal(model.embedder.encode(ids, jnp.float32)[0],
                                model.embedder.table[...][:6])
  logits = model(ids).logits
  scaled = model_lib.Transformer(dataclasses.replace(llama, query_scale=8**-0.5), rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(scaled(ids).logits, logits)
  doubled = model_lib.Transformer(dataclasses.replace(llama, query_scale=2 * 8**-0.5),
                                  rngs=nnx.Rngs(0))
  assert np.abs(np.asarray(doubled(ids).logits - logits)).max() > 1e-4
  with pytest.raises(ValueError, match="mlp_activation"):
    ModelConfig(**sizes, mlp_activation="relu")
  with pytest.raises(ValueError, match="query_scale"):
    ModelConfig(**sizes, query_scale=0.0)
