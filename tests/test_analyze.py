"""Restoring runs for analysis, the analysis CLI and the side-by-side comparison.

A training checkpoint (``{"params", "opt_state", "step"}`` + config metadata, exactly the
trainer's layout) is written by a subprocess on an 8-device fake-CPU mesh (fsdp=4 x data=2), with
the logits that mesh computes; analysis restores its parameters only onto one CPU device here and
must give the same logits. The CLI runs as a subprocess (its one-line errors included).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib import image as mpimg

from rope_jax import errors
from rope_jax.analysis import measure
from rope_jax.analysis import report
from rope_jax.checkpoint import manager as checkpoint
from rope_jax.config import base as config_lib
from rope_jax.config import presets
from rope_jax.checkpoint import rundir as restore
from tests import fake_devices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP = 3

# Runs in a subprocess with 8 fake CPU devices: writes <workdir>/checkpoints/<STEP> as the trainer
# does (state from train_lib.make_setup, so the optimizer state is there too) and the logits the
# 8-device mesh computes for fixed tokens.
_WRITE_SHARDED_RUN = r"""
import json, os, sys
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from rope_jax import sharding
from rope_jax.checkpoint import manager as checkpoint
from rope_jax.config import base as config_lib
from rope_jax.training import train_lib
workdir, step, arg = sys.argv[1], int(sys.argv[2]), sys.argv[3]
assert jax.device_count() == 8, jax.devices()
config = config_lib.load_config("configs/tiny.py:" + arg)
config.unlock()
config.model.num_layers = 2
config.train.update(data_source="synthetic", global_batch_size=8, seq_len=32, num_steps=10,
                    warmup_steps=1)
config.mesh.update(fsdp=4, data=2)
sections = config_lib.validate(config)
setup = train_lib.make_setup(sections["model"], sections["train"], sections["mesh"])
state = setup.init()
# Make every parameter non-trivial (the RMSNorm scales start at 0).
state["params"] = jax.tree.map(
    lambda x: x + 0.05 * jnp.sin(jnp.arange(x.size, dtype=x.dtype).reshape(x.shape)),
    state["params"])
table = state["params"]["embedder"]["table"][...]
assert len(table.sharding.device_set) > 1 and not table.sharding.is_fully_replicated
metadata = {"config": json.loads(config.to_json_best_effort()),
            "mesh": {k: int(v) for k, v in setup.mesh.shape.items()}, "process_count": 1}
ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), save_interval_steps=1,
                               max_to_keep=3, async_save=False)
ckpt.save(step, state, data_state={"position": 0}, metadata=metadata, force=True)
ckpt.close()
tokens = (np.arange(8 * 16).reshape(8, 16) * 37 + 5) % config.model.vocab_size
forward = jax.jit(lambda params, tokens: nnx.merge(setup.graphdef, params)(tokens).logits,
                  in_shardings=(setup.param_shardings, setup.batch_sharding))
with sharding.activate(setup.mesh, setup.rules):
  logits = forward(state["params"], jax.device_put(tokens.astype(np.int32), setup.batch_sharding))
np.save(os.path.join(workdir, "tokens.npy"), tokens)
np.save(os.path.join(workdir, "logits_8dev.npy"), np.asarray(logits))
"""


def _env(**extra):
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3",
              **extra)


def _write_sharded_run(workdir, arg="pe=rope"):
  os.makedirs(workdir, exist_ok=True)
  proc = subprocess.run(
      [sys.executable, "-c", _WRITE_SHARDED_RUN, str(workdir), str(STEP), arg], cwd=REPO,
      env=_env(XLA_FLAGS=fake_devices.xla_flags(8)), capture_output=True,
      text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return str(workdir)


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory):
  return _write_sharded_run(tmp_path_factory.mktemp("rope_run"))


def _tiny_config(arg="pe=rope"):
  config = config_lib.load_config(f"configs/tiny.py:{arg}")
  config.unlock()
  config.model.num_layers = 2
  return config


def _save_params_only(workdir, arg, *, metadata=None, config=True, **model_fields):
  """A params-only checkpoint as rope_jax.import_gemma writes it (rundir.save_params);
  ``model_fields`` override the tiny config's model section (e.g. ``num_kv_heads=2``)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from rope_jax.model import transformer as model_lib  # pylint: disable=g-import-not-at-top
  cfg_dict = json.loads(_tiny_config(arg).to_json_best_effort())
  cfg_dict["model"].update(model_fields)
  cfg = model_lib.ModelConfig.from_dict(cfg_dict["model"])
  graphdef, _ = model_lib.abstract_model(cfg)
  params = jax.jit(lambda: nnx.state(model_lib.Transformer(cfg, rngs=nnx.Rngs(1)), nnx.Param))()
  model = nnx.merge(graphdef, params)
  if config:
    restore.save_params(str(workdir), params, cfg_dict, step=STEP, metadata=metadata)
  else:
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), save_interval_steps=1,
                                   max_to_keep=1, async_save=False)
    ckpt.save(STEP, {"params": params}, metadata={"note": "no config"}, force=True)
    ckpt.close()
  return model


# ----------------------------------------------------------------------------------------------
# (a) Restore for analysis.


def test_restore_from_8_device_mesh_gives_same_logits(sharded_run):
  model, config, step = restore.load_model(sharded_run)
  assert step == STEP
  assert config.model.attention_impl == "xla" and config.mesh.fsdp == 4
  cpu = jax.devices("cpu")[0]
  leaves = jax.tree.leaves(nnx_state(model))
  assert leaves and all(x.sharding.device_set == {cpu} for x in leaves)
  tokens = np.load(os.path.join(sharded_run, "tokens.npy"))
  expected = np.load(os.path.join(sharded_run, "logits_8dev.npy"))
  logits = _logits(model, tokens)
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def nnx_state(model):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  return nnx.state(model, nnx.Param)


def _logits(model, tokens):
  """``model(tokens)`` compiled once (eager would compile every op separately)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  graphdef, state = nnx.split(model)
  return np.asarray(jax.jit(lambda s, t: nnx.merge(graphdef, s)(t).logits)(
      state, jnp.asarray(tokens, jnp.int32)))


def test_restore_params_skips_optimizer_state(sharded_run):
  """Checkpointer.restore_params returns the params subtree only (opt_state never read)."""
  cfg = restore.read_config(sharded_run)[1]
  _, target = restore.abstract_params(cfg)
  ckpt = checkpoint.Checkpointer.for_reading(os.path.join(sharded_run, "checkpoints"))
  step, params, metadata = ckpt.restore_params(target, STEP)
  ckpt.close()
  assert step == STEP and metadata["mesh"]["fsdp"] == 4
  assert jax.tree.structure(params) == jax.tree.structure(target)


def test_restore_imported_params_only_checkpoint(tmp_path):
  """The importer's layout ({"params": nnx.State}, no optimizer) restores the same way."""
  model = _save_params_only(tmp_path, "pe=p_rope,p=0.25", metadata={"import": {"src": "x"}})
  restored = restore.load(str(tmp_path))
  assert restored.imported and restored.step == STEP
  assert presets.describe(restored.model_config) == "0.25-RoPE θ=10k"
  tokens = jnp.arange(12, dtype=jnp.int32)[None]
  np.testing.assert_allclose(_logits(restored.model, tokens), _logits(model, tokens),
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="imported weights.*--vocab_path"):
    measure.run_tokenizer(restored)


def test_restore_errors(tmp_path, sharded_run):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    restore.load_model(str(tmp_path / "missing"))
  with pytest.raises(FileNotFoundError, match="has no checkpoints/"):
    restore.load_model(str(tmp_path))
  (tmp_path / "checkpoints").mkdir()
  with pytest.raises(FileNotFoundError, match="No committed checkpoint"):
    restore.load_model(str(tmp_path))
  with pytest.raises(FileNotFoundError, match=rf"step 7 .*available steps: \[{STEP}\]"):
    restore.load_model(sharded_run, step=7)
  no_config = tmp_path / "no_config"
  _save_params_only(no_config, "pe=rope", config=False)
  with pytest.raises(ValueError, match="has no config metadata"):
    restore.load_model(str(no_config))


@pytest.mark.parametrize("arg,name", [("pe=nope", "NoPE"), ("pe=rope,theta=500000", "RoPE θ=500k"),
                                      ("pe=reversed,p=0.75", "0.75-RoPE reversed θ=10k"),
                                      ("pe=partial,p=0.75", "partial rotary 0.75 θ=10k")])
def test_describe_positional_encoding(arg, name):
  cfg = config_lib.model_config(config_lib.load_config(f"configs/tiny.py:{arg}"))
  assert presets.describe(cfg) == name


def test_analyze_argument_errors(sharded_run):
  with pytest.raises(ValueError, match="unknown analysis 'bogus'; valid: frequency_usage"):
    report.parse_analyses("heads,bogus")
  with pytest.raises(ValueError, match="--layer=5 is out of range: the model has 2 layers"):
    report.analyze(sharded_run, "frequency_usage", "/nonexistent", layer=5)
  with pytest.raises(ValueError, match="--head=4 is out of range"):
    report.analyze(sharded_run, "patterns", "/nonexistent", head=4)


def test_measure_does_not_depend_on_batching(sharded_run):
  """Token- / query-weighted means over all prompts, whatever the batch size."""
  model = restore.load_model(sharded_run)[0]
  rng = np.random.default_rng(0)
  prompts = [[2, *rng.integers(3, 2048, size=n).tolist()] for n in (3, 9, 5, 12, 1)]
  one = measure.measure(model, prompts, batch_size=16, prompt_index=3)
  many = measure.measure(model, prompts, batch_size=2, prompt_index=3)
  assert one.num_tokens == many.num_tokens == sum(len(p) for p in prompts)
  assert one.num_queries == sum(len(p) - 1 for p in prompts)
  for name in ("q", "k", "v"):
    np.testing.assert_allclose(one.usage[name], many.usage[name], rtol=1e-5)
  for kind in ("diagonal", "previous_token"):
    np.testing.assert_allclose(one.scores[kind], many.scores[kind], rtol=1e-5, atol=1e-7)
  assert one.attention.shape == (2, 4, 13, 13)
  np.testing.assert_allclose(one.attention, many.attention, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# (b) The CLI writes its figures and numbers.


def _cli(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", "rope_jax.analyze", *args], cwd=REPO, env=_env(),
                        capture_output=True, text=True, timeout=timeout)


def _check_png(path):
  image = mpimg.imread(path)
  assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, path


def test_cli_writes_every_analysis(sharded_run, tmp_path):
  out = tmp_path / "out"
  proc = _cli(f"--workdir={sharded_run}", "--analysis=frequency_usage,heads,patterns",
              "--layer=1", "--head=2", "--prompt_index=3", f"--out={out}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  num_layers, heads, kv_heads, chunks = 2, 4, 1, 32  # configs/tiny.py: MQA, head_dim 64.

  usage = json.loads((out / "frequency_usage.json").read_text())
  assert usage["step"] == STEP and usage["positional_encoding"] == "RoPE θ=10k"
  assert usage["num_prompts"] == 10 and usage["num_tokens"] > 10 * 5
  assert np.shape(usage["q"]) == (num_layers, heads, chunks)
  assert np.shape(usage["k"]) == np.shape(usage["v"]) == (num_layers, kv_heads, chunks)
  assert len(usage["chunk_frequencies"]) == chunks
  assert usage["chunk_frequencies"][0] == 1.0  # High -> low frequency.
  assert np.all(np.diff(usage["chunk_frequencies"]) < 0)
  assert np.all(np.asarray(usage["q"]) > 0)
  lines = (out / "frequency_usage.csv").read_text().splitlines()
  assert lines[0].startswith("activation,layer,head,chunk")
  assert len(lines) == 1 + num_layers * chunks * (heads + 2 * kv_heads)

  scores = json.loads((out / "positional_heads.json").read_text())
  for kind in ("diagonal", "previous_token"):
    values = np.asarray(scores[kind])
    assert values.shape == (num_layers, heads) and np.all((values >= 0) & (values <= 1))
    assert len(scores["top"][kind]) == 3
    assert len(scores["top"][kind][0]["q_usage"]) == chunks
    assert isinstance(scores["heads_above"][kind], list)
    strict = np.asarray(scores["strict"][kind])  # The paper's definition: min over queries.
    assert strict.shape == values.shape and np.all(strict <= values + 1e-6)
    assert isinstance(scores["heads_strict"][kind], list)
  lines = (out / "positional_heads.csv").read_text().splitlines()
  assert len(lines) == 1 + num_layers * heads
  assert lines[0] == "layer,head,diagonal,previous_token,diagonal_strict,previous_token_strict"

  pattern = json.loads((out / "attention_L1_prompt3.json").read_text())
  p = len(pattern["tokens"])
  assert pattern["heads"] == [2] and np.shape(pattern["attention"]) == (1, p, p)
  attn = np.asarray(pattern["attention"][0])
  np.testing.assert_allclose(attn.sum(-1), 1.0, atol=1e-3)
  assert np.all(np.triu(attn, 1) == 0)  # Causal.
  assert pattern["tokens"][0] == "<s>"

  for name in ("frequency_usage_layers.png", "frequency_usage_layer1_heads.png",
               "positional_heads.png", "positional_heads_strict.png",
               "positional_heads_top_frequency_usage.png",
               "attention_L1H2_prompt3.png"):
    _check_png(out / name)
  assert "Wrote 12 files" in proc.stdout


# ----------------------------------------------------------------------------------------------
# (c) CLI errors: one line, the exit code of rope_jax.errors, no traceback.


def test_cli_errors(sharded_run, tmp_path):
  cases = {
      "missing_workdir": ([f"--workdir={tmp_path / 'nope'}", "--analysis=heads"],
                          "does not exist", errors.EXIT_NO_CHECKPOINT),
      "bad_step": ([f"--workdir={sharded_run}", "--step=99", "--analysis=heads"],
                   f"No checkpoint for step 99 in .* available steps: \\[{STEP}\\]",
                   errors.EXIT_NO_CHECKPOINT),
      "bad_analysis": ([f"--workdir={sharded_run}", "--analysis=frequency,heads"],
                       "unknown analysis 'frequency'; valid: frequency_usage, heads, patterns",
                       errors.EXIT_BAD_INPUT),
      "bad_layer": ([f"--workdir={sharded_run}", "--analysis=heads", "--layer=5"],
                    "--layer=5 is out of range: the model has 2 layers", errors.EXIT_BAD_INPUT),
  }
  procs = {name: subprocess.Popen(
      [sys.executable, "-m", "rope_jax.analyze", *args, f"--out={tmp_path / name}"], cwd=REPO,
      env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for name, (args, _, _) in cases.items()}
  import re  # pylint: disable=g-import-not-at-top
  for name, proc in procs.items():
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == cases[name][2], (name, proc.returncode, stderr)
    assert "Traceback" not in stderr, (name, stderr)
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and re.search(cases[name][1], lines[0]), (name, stderr)
    assert not (tmp_path / name).exists()


# ----------------------------------------------------------------------------------------------
# experiments/frequency_usage_compare.py


def test_compare_runs_side_by_side(sharded_run, tmp_path):
  from experiments import frequency_usage_compare  # pylint: disable=g-import-not-at-top
  nope = tmp_path / "nope"
  _save_params_only(nope, "pe=nope")
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("# two prompts\nTo be, or not to be.\n\nThe course of true love.\n")
  out = tmp_path / "cmp"
  paths = frequency_usage_compare.compare([sharded_run, str(nope)], str(out),
                                          prompts=str(prompts))
  assert all(os.path.exists(p) for p in paths)
  for name in ("frequency_usage_compare.png", "positional_heads_compare.png",
               "frequency_usage_profiles.png",
               "nope/frequency_usage_layers.png", "nope/positional_heads.png"):
    _check_png(out / name)
  bands = (out / "frequency_usage_bands.csv").read_text().splitlines()
  assert len(bands) == 1 + 2 * 2  # Two runs x (q, k).
  assert bands[1].startswith("rope_run") and "k 0-7: " in bands[1]
  shares = [float(cell.split(": ")[1]) for cell in bands[1].split(",")[3:]]
  assert sum(shares) == pytest.approx(1.0, abs=2e-3)
  assert (out / "frequency_usage_bands.md").read_text().startswith("| run |")
  result = json.loads((out / "frequency_usage_compare.json").read_text())
  assert [r["positional_encoding"] for r in result["runs"]] == ["RoPE θ=10k", "NoPE"]
  assert result["runs"][1]["chunk_frequencies"] == [0.0] * 32
  assert np.shape(result["runs"][0]["frequency_usage_per_layer"]["k"]) == (2, 32)
  assert np.shape(result["runs"][1]["previous_token"]) == (2, 4)


def test_importing_the_cli_defines_no_flag_and_the_library_no_matplotlib():
  code = ("import sys; from absl import flags; import rope_jax.analysis.measure; "
          "assert 'matplotlib' not in sys.modules, 'measure imports matplotlib'; "
          "import rope_jax.analyze, rope_jax.sample; assert 'analysis' not in flags.FLAGS; "
          "import experiments.frequency_usage_compare, experiments.gemma7b_analysis; "
          "assert 'workdirs' not in flags.FLAGS")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
