"""The config schema (rope_jax.config.schema): one strict from_dict for every section, defaults
generated from the dataclasses, and validation that never loads the model, trainer or mesh."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import pytest

from rope_jax.config import base as config_lib
from rope_jax.config import presets
from rope_jax.config import schema

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = dict(vocab_size=64, num_layers=2, embed_dim=16, num_heads=2, num_kv_heads=1, head_dim=8,
             mlp_dim=32)
# A valid mapping per section (the model needs its sizes, the data section every key).
VALID = {
    "model": SIZES,
    "train": {},
    "eval": {},
    "checkpoint": {},
    "mesh": {},
    "data": dataclasses.asdict(schema.DataConfig()),
}


def test_every_config_section_is_a_schema_dataclass():
  assert set(schema.SECTIONS) == set(config_lib.base_config().keys()) == set(VALID)
  for name, cls in schema.SECTIONS.items():
    assert dataclasses.is_dataclass(cls) and cls.WHERE == name


@pytest.mark.parametrize("section", sorted(schema.SECTIONS))
def test_unknown_key_names_it_and_the_allowed_keys(section):
  cls = schema.SECTIONS[section]
  with pytest.raises(ValueError) as e:
    cls.from_dict({**VALID[section], "bogus_knob": 1})
  message = str(e.value)
  assert f"Unknown key(s) ['bogus_knob'] in {section}; allowed: " in message
  for field in dataclasses.fields(cls):
    assert repr(field.name) in message


@pytest.mark.parametrize("where, mapping, cls", [
    ("model.rope", {**SIZES, "rope": {"fractoin": 0.5}}, schema.ModelConfig),
    ("model.global_rope", {**SIZES, "global_every": 2, "global_rope": {"thta": 1.0}},
     schema.ModelConfig),
    ("data.probe", {**VALID["data"], "probe": {"num_symbols": 4, "num_keys": 4,
                                               "num_queries": 1, "num_values": 3}},
     schema.DataConfig),
])
def test_unknown_nested_key_names_its_section(where, mapping, cls):
  with pytest.raises(ValueError, match=rf"Unknown key\(s\) \['\w+'\] in {where}; allowed: "):
    cls.from_dict(mapping)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("section, key", [
    ("train", "learning_rate"), ("train", "adam_eps"), ("train", "peak_tflops_per_device"),
    ("model", "norm_eps")])
def test_non_finite_floats_are_rejected(section, key, bad):
  with pytest.raises(ValueError, match=rf"{section}\.{key} must be a finite number"):
    schema.SECTIONS[section].from_dict({**VALID[section], key: bad})
  # Built directly, the section checks the same types.
  if section == "train":
    with pytest.raises(ValueError, match=rf"train\.{key} must be a finite number"):
      schema.TrainConfig(**{key: bad})


def test_learning_rate_nan_is_caught_by_config_validation():
  config = config_lib.load_config("configs/tiny.py")
  config.train.learning_rate = float("nan")
  with pytest.raises(ValueError, match=r"train\.learning_rate must be a finite number, got nan"):
    config_lib.validate(config)
  config = config_lib.load_config("configs/tiny.py")
  config.model.rope.theta = float("inf")
  with pytest.raises(ValueError, match=r"model\.rope\.theta must be a finite number, got inf"):
    config_lib.validate(config)


@pytest.mark.parametrize("section, key, value, match", [
    ("train", "seed", "zero", r"train\.seed must be an int, got 'zero'"),
    ("train", "num_steps", 3.0, r"train\.num_steps must be an int"),
    ("train", "learning_rate", True, r"train\.learning_rate must be a finite number, got True"),
    ("eval", "global_batch_size", "8", r"eval\.global_batch_size must be an int or None"),
    ("eval", "length_multipliers", (1, 2.5), r"eval\.length_multipliers must be a tuple of"),
    ("checkpoint", "enabled", 1, r"checkpoint\.enabled must be a bool, got 1"),
    ("mesh", "tensor", "2", r"mesh\.tensor must be an int"),
    ("model", "dtype", 32, r"model\.dtype must be a string"),
    ("data", "pack", 1, r"data\.pack must be a bool"),
])
def test_wrong_types_are_rejected(section, key, value, match):
  with pytest.raises(ValueError, match=match):
    schema.SECTIONS[section].from_dict({**VALID[section], key: value})


def test_lists_become_tuples_and_numpy_scalars_pass():
  import numpy as np  # pylint: disable=g-import-not-at-top
  ev = schema.EvalConfig.from_dict({"length_multipliers": [1, 8]})
  assert ev.length_multipliers == (1, 8) and hash(ev)
  train = schema.TrainConfig.from_dict({"seed": np.int64(3), "learning_rate": np.float32(0.5)})
  assert train.seed == 3 and train.learning_rate == 0.5
  mesh = schema.MeshConfig.from_dict({"logical_axis_rules": [["batch", ["data", "fsdp"]]]})
  assert mesh.logical_axis_rules == (("batch", ("data", "fsdp")),)


def test_base_config_defaults_are_the_dataclass_defaults():
  config = config_lib.base_config()
  for name, cls in schema.SECTIONS.items():
    section = config[name].to_dict()
    for field in dataclasses.fields(cls):
      value = section[field.name]
      if field.default is dataclasses.MISSING:  # The model sizes: set by configs/*.py.
        assert value is None, (name, field.name)
      elif dataclasses.is_dataclass(field.default):
        assert value == dataclasses.asdict(field.default), (name, field.name)
      elif field.default is None and field.name == "global_rope":
        assert set(value) == {f.name for f in dataclasses.fields(schema.RopeConfig)}
        assert all(v is None for v in value.values())
      else:
        assert value == field.default, (name, field.name)
  # Concrete values, written out independently of the schema.
  assert config.train.learning_rate == 1e-3 and config.train.num_steps == 300
  assert config.train.peak_tflops_per_device is None
  assert config.eval.length_multipliers == (1, 2, 4)
  assert config.checkpoint.save_every_steps == 1000
  assert config.mesh.data == -1 and config.mesh.logical_axis_rules[0] == ("batch", ("data", "fsdp"))
  assert config.model.rope.theta == 10_000.0 and config.model.remat == "none"
  assert config.data.task == "offline" and config.data.probe.num_keys == 1024


def test_base_config_has_no_model_sizes_and_the_configs_own_them():
  config = config_lib.base_config()
  assert all(config.model[k] is None for k in schema.MODEL_SIZES)
  with pytest.raises(ValueError, match=r"model\.vocab_size must be a positive int, got None"):
    config_lib.model_config(config)
  config.model.update(SIZES)  # Typed placeholders take the sizes.
  assert config_lib.model_config(config).embed_dim == 16
  gemma = config_lib.load_config("configs/gemma_2b.py").model
  assert (gemma.vocab_size, gemma.num_layers, gemma.embed_dim, gemma.mlp_dim) == (
      256_128, 18, 2048, 16_384)


def test_data_config_module_uses_the_schema():
  from rope_jax.data import config as data_config  # pylint: disable=g-import-not-at-top
  assert data_config.TASKS is schema.TASKS and data_config.DataConfig is schema.DataConfig
  assert data_config.default_config() == config_lib.base_config().data
  section = data_config.default_config().to_dict()
  del section["probe"]["num_keys"]
  with pytest.raises(ValueError, match=r"Missing key\(s\) \['num_keys'\] in data\.probe"):
    data_config.validate(section)


def test_the_sections_are_re_exported_where_call_sites_use_them():
  from rope_jax import sharding  # pylint: disable=g-import-not-at-top
  from rope_jax.model import transformer as model_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.training import train_lib  # pylint: disable=g-import-not-at-top
  assert model_lib.ModelConfig is schema.ModelConfig and model_lib.RopeConfig is schema.RopeConfig
  assert train_lib.TrainConfig is schema.TrainConfig
  assert train_lib.EvalConfig is schema.EvalConfig
  assert train_lib.CheckpointConfig is schema.CheckpointConfig
  assert sharding.MeshConfig is schema.MeshConfig
  assert sharding.DEFAULT_RULES is schema.DEFAULT_RULES
  # The model maps every remat name of the schema, and only those, to a jax.checkpoint policy.
  assert tuple(model_lib.REMAT_POLICIES) == schema.REMAT_NAMES


@pytest.mark.parametrize("arg, name", [
    ("pe=nope", "NoPE"), ("pe=rope,theta=500000", "RoPE θ=500k"),
    ("pe=p_rope,p=0.25", "0.25-RoPE θ=10k"), ("pe=reversed,p=0.75", "0.75-RoPE reversed θ=10k"),
    ("pe=partial,p=0.5", "partial rotary 0.5 θ=10k"),
    ("pe=rope,layout=interleaved,scale=4", "RoPE θ=10k scale 4 interleaved")])
def test_describe_inverts_the_presets(arg, name):
  cfg = config_lib.model_config(config_lib.load_config(f"configs/tiny.py:{arg}"))
  assert cfg.rope.variant == presets.PE_PRESETS[arg.split(",")[0].removeprefix("pe=")][0]
  assert presets.describe(cfg) == name
  glob = dataclasses.replace(cfg, global_every=6, global_rope=schema.RopeConfig(fraction=0.25))
  assert presets.describe(glob) == f"{name}; every 6th layer 0.25-RoPE θ=10k"


def test_config_validation_imports_nothing_above_layer_0():
  code = (
      "import sys\n"
      "from rope_jax.config import base\n"
      "sections = base.validate(base.load_config('configs/tiny.py:pe=p_rope,p=0.75'))\n"
      "assert sections['model'].rope.fraction == 0.75\n"
      "above = sorted(m for m in sys.modules if m.split('.')[:2] in (\n"
      "    ['rope_jax', 'training'], ['rope_jax', 'model'], ['rope_jax', 'sharding'],\n"
      "    ['rope_jax', 'data'], ['rope_jax', 'checkpoint'], ['rope_jax', 'analysis']))\n"
      "print('ABOVE', above)\n"
      "assert 'rope_jax.config.schema' in sys.modules\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=240, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "ABOVE []" in out.stdout, out.stdout
