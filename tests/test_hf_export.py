"""Exporting runs to Hugging Face: transformers loads them and agrees on the logits, export then
import gives the same params bit for bit, and encodings transformers lacks are refused.

The runs are tiny random models saved as a run directory (norm scales drawn away from their
init so that a wrong ``(1 + scale)`` or a dropped ``lm_head`` would show); the reference is
transformers' ``AutoModelForCausalLM`` (PyTorch, CPU) on the exported directory.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rope_jax import export_hf
from rope_jax import import_hf
from rope_jax.checkpoint import rundir
from rope_jax.config import base as config_lib
from rope_jax.data import text
from rope_jax.errors import BadInputError
from rope_jax.model import transformer as model_lib
from rope_jax.weights import hf_config
from rope_jax.weights import safetensors_io
from tests.test_hf_import import TOLERANCE, cli, rel_error

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SIZES = dict(vocab_size=128, num_layers=2, embed_dim=48, num_heads=4, num_kv_heads=2,
             head_dim=16, mlp_dim=64)
LLAMA = dict(mlp_activation="silu", norm_plus_one=False, embed_scale=False, tie_embeddings=False)
LLAMA3 = dict(type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
              original_max_position_embeddings=16)
LENGTH = 40
# name -> (ModelConfig fields, RoPE fields, the transformers class expected)
RUNS = {
    "gemma_rope": ({**SIZES, "vocab_size": 2048}, dict(theta=10_000.0), "GemmaForCausalLM"),
    "gemma_p_rope": (SIZES, dict(fraction=0.25, theta=500.0), "GemmaForCausalLM"),
    "llama_llama3": ({**SIZES, **LLAMA}, dict(theta=10_000.0, **LLAMA3), "LlamaForCausalLM"),
    "llama_yarn": ({**SIZES, **LLAMA, "tie_embeddings": True},
                   dict(theta=10_000.0, type="yarn", factor=4.0,
                        original_max_position_embeddings=16), "LlamaForCausalLM"),
    "llama_dynamic": ({**SIZES, **LLAMA}, dict(theta=10_000.0, type="dynamic", factor=2.0,
                                               original_max_position_embeddings=16),
                      "LlamaForCausalLM"),
}


def make_run(workdir: str, model: dict, rope: dict, seed: int = 0) -> model_lib.Transformer:
  """A run directory holding random params of this model (as a trained run's checkpoint)."""
  config = config_lib.base_config()
  config.model.update(model)
  config.model.rope.update(rope)
  cfg = config_lib.model_config(config)
  m = model_lib.Transformer(cfg, rngs=nnx.Rngs(seed))
  key = jax.random.PRNGKey(seed + 1)
  for path, leaf in nnx.to_flat_state(nnx.state(m, nnx.Param)):
    if path[-1] == "scale":  # Norm scales away from their init value.
      key, sub = jax.random.split(key)
      leaf.set_value((leaf[...] + 0.3 * jax.random.normal(sub, leaf.shape)).astype(leaf.dtype))
  rundir.save_params(workdir, nnx.state(m, nnx.Param),
                          json.loads(config.to_json_best_effort()))
  return m


def tokens(vocab: int) -> np.ndarray:
  return np.random.default_rng(3).integers(3, vocab, (2, LENGTH)).astype(np.int32)


def hf_logits(hf_dir: str, ids: np.ndarray) -> tuple[str, np.ndarray]:
  """``(class name, logits)`` of transformers' AutoModelForCausalLM on the exported directory."""
  hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
  with torch.no_grad():
    return type(hf).__name__, hf(torch.from_numpy(ids.astype(np.int64))).logits.numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple]:
  """name -> (workdir, export directory, model, transformers' class name, its logits)."""
  root = tmp_path_factory.mktemp("hf_export")
  out = {}
  for name, (model, rope, _) in RUNS.items():
    workdir, hf_dir = str(root / name), str(root / f"{name}_hf")
    m = make_run(workdir, model, rope)
    export_hf.export_run(workdir, hf_dir)
    out[name] = (workdir, hf_dir, m, *hf_logits(hf_dir, tokens(m.cfg.vocab_size)))
  return out


@pytest.mark.parametrize("name", RUNS)
def test_transformers_loads_the_export_with_the_same_logits(exported, name):
  _, _, model, cls, ref = exported[name]
  assert cls == RUNS[name][2]
  ids = tokens(model.cfg.vocab_size)
  err = rel_error(np.asarray(model(jnp.asarray(ids)).logits), ref)
  print(f"{name}: max relative logit error vs transformers {err.max():.2e}")
  assert err.max() <= TOLERANCE, err


def test_the_encoding_matters_where_compared(exported):
  """Each exported encoding, swapped for plain RoPE in rope_jax, misses transformers' logits by
  far more than the tolerance: the comparison above checks the encoding, not just the weights."""
  for name in ("gemma_p_rope", "llama_llama3", "llama_yarn", "llama_dynamic"):
    _, _, model, _, ref = exported[name]
    ids = tokens(model.cfg.vocab_size)
    cfg = dataclasses.replace(model.cfg, rope=model_lib.RopeConfig(theta=model.cfg.rope.theta))
    plain = model_lib.Transformer(cfg, rngs=nnx.Rngs(0))
    nnx.update(plain, nnx.state(model, nnx.Param))
    err = rel_error(np.asarray(plain(jnp.asarray(ids)).logits), ref)
    assert err[20:].min() > 100 * TOLERANCE, (name, err)


def test_config_has_both_rope_schemas(exported):
  hf = json.load(open(os.path.join(exported["llama_llama3"][1], "config.json")))
  assert hf["rope_parameters"] == {"rope_theta": 10_000.0, "rope_type": "llama3", "factor": 8.0,
                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 16}
  assert hf["rope_theta"] == 10_000.0
  assert hf["rope_scaling"] == {k: v for k, v in hf["rope_parameters"].items()
                                if k != "rope_theta"}
  legacy = {k: v for k, v in hf.items() if k != "rope_parameters"}
  assert hf_config.model_fields(legacy) == hf_config.model_fields(hf)
  p_rope = json.load(open(os.path.join(exported["gemma_p_rope"][1], "config.json")))
  assert p_rope["rope_parameters"] == {"rope_theta": 500.0, "rope_type": "proportional",
                                       "partial_rotary_factor": 0.25}
  gen = json.load(open(os.path.join(exported["gemma_rope"][1], "generation_config.json")))
  assert (gen["bos_token_id"], gen["eos_token_id"]) == (text.BOS_ID, text.EOS_ID)


@pytest.mark.parametrize("name", RUNS)
def test_export_then_import_gives_the_same_params(exported, tmp_path, name):
  workdir, hf_dir = exported[name][:2]
  import_hf.import_run(hf_dir, str(tmp_path / "back"))
  before, after = rundir.load(workdir), rundir.load(str(tmp_path / "back"))
  assert after.model_config == before.model_config
  a = nnx.to_flat_state(nnx.state(before.model, nnx.Param))
  b = dict(nnx.to_flat_state(nnx.state(after.model, nnx.Param)))
  assert len(a) == len(b)
  for path, leaf in a:
    x, y = np.asarray(leaf[...]), np.asarray(b[path][...])
    assert x.dtype == y.dtype and np.array_equal(x.view(np.uint8), y.view(np.uint8)), path


def test_bfloat16_round_trip(tmp_path):
  """A bfloat16 run exports BF16 tensors (config dtype bfloat16) and imports back bit for bit."""
  workdir, hf_dir = str(tmp_path / "run"), str(tmp_path / "hf")
  make_run(workdir, {**SIZES, **LLAMA, "param_dtype": "bfloat16"}, dict(theta=1e4))
  export_hf.export_run(workdir, hf_dir)
  assert json.load(open(os.path.join(hf_dir, "config.json")))["dtype"] == "bfloat16"
  assert {str(safetensors_io.SafetensorsReader(hf_dir).spec(k)[1])
          for k in safetensors_io.SafetensorsReader(hf_dir).keys()} == {"bfloat16"}
  import_hf.import_run(hf_dir, str(tmp_path / "back"), param_dtype="bfloat16")
  a = nnx.to_flat_state(nnx.state(rundir.load(workdir).model, nnx.Param))
  b = dict(nnx.to_flat_state(nnx.state(rundir.load(str(tmp_path / "back")).model, nnx.Param)))
  for path, leaf in a:
    x, y = np.asarray(leaf[...]), np.asarray(b[path][...])
    assert x.dtype == y.dtype and np.array_equal(x.view(np.uint16), y.view(np.uint16)), path


def test_tokenizer_shipped_and_loaded(exported):
  hf_dir = exported["gemma_rope"][1]
  path, _ = text.vocab_path({"task": "offline"})
  assert open(os.path.join(hf_dir, "tokenizer.model"), "rb").read() == open(path, "rb").read()
  hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
  ours = text.load_sentencepiece(path)
  for sample in ("hello world", "def f(x):\n    return x  # 12345", " two  spaces é"):
    assert hf_tok(sample).input_ids == [text.BOS_ID, *ours.encode(sample)], sample
  assert not os.path.exists(os.path.join(exported["gemma_p_rope"][1], "tokenizer.model"))


def test_sharded_export_through_the_cli(exported, tmp_path):
  workdir, hf_dir, model = exported["llama_llama3"][:3]
  out = tmp_path / "sharded"
  proc = cli("rope_jax.export_hf", f"--workdir={workdir}", f"--out={out}", "--max_shard_mb=0.02")
  assert proc.returncode == 0, proc.stderr[-3000:]
  index = json.load(open(out / safetensors_io.INDEX_FILE))
  files = sorted(set(index["weight_map"].values()))
  assert len(files) > 2 and all((out / f).exists() for f in files)
  single = safetensors_io.SafetensorsReader(hf_dir)
  sharded = safetensors_io.SafetensorsReader(str(out))
  assert sorted(single.keys()) == sorted(sharded.keys())
  for key in single.keys():
    np.testing.assert_array_equal(single.read(key), sharded.read(key))
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  for file in files:  # The safetensors library reads what rope_jax's streaming writer wrote.
    for key, value in load_file(str(out / file)).items():
      assert index["weight_map"][key] == file
      np.testing.assert_array_equal(value, single.read(key))
  ids = tokens(model.cfg.vocab_size)
  _, ref = hf_logits(str(out), ids)
  assert rel_error(np.asarray(model(jnp.asarray(ids)).logits), ref).max() <= TOLERANCE


@pytest.mark.parametrize("model, rope, named", [
    ({}, dict(variant="reversed", fraction=0.5), "variant"),
    ({}, dict(variant="partial", fraction=0.5), "variant"),
    ({}, dict(layout="interleaved"), "layout"),
    ({}, dict(bias="alibi", fraction=0.0), "bias"),
    ({}, dict(type="ntk", factor=2.0), "ntk"),
    ({}, dict(fraction=0.5, type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
              original_max_position_embeddings=16), "p-RoPE"),
    (dict(global_every=2, global_rope=dict(fraction=0.25)), {}, "global_rope"),
    (dict(mlp_activation="silu"), {}, "neither Gemma"),
    (dict(query_scale=0.5), {}, "query_scale"),
    (dict(absolute_encoding="sinusoidal"), {}, "absolute_encoding"),
])
def test_refused_by_name(model, rope, named):
  config = config_lib.base_config()
  config.model.update({**SIZES, **{k: v for k, v in model.items() if k != "global_rope"}})
  config.model.rope.update(rope)
  if "global_rope" in model:
    config.model.global_rope.update(model["global_rope"])
  cfg = config_lib.model_config(config)
  with pytest.raises(BadInputError, match=named):
    hf_config.hf_config(cfg, max_position_embeddings=64)


def test_cli_refusal_is_one_line_exit_2_and_writes_nothing(tmp_path):
  workdir = str(tmp_path / "run")
  make_run(workdir, SIZES, dict(variant="reversed", fraction=0.5))
  proc = cli("rope_jax.export_hf", f"--workdir={workdir}", f"--out={tmp_path / 'hf'}")
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "variant='reversed'" in proc.stderr.strip().splitlines()[-1]
  assert "Traceback" not in proc.stderr and not (tmp_path / "hf").exists()
