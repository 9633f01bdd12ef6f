"""Experiment configs: the base ConfigDict, config arguments, and strict validation.

A config file under ``configs/`` is data: it starts from :func:`base_config`, sets its sizes, and
calls :func:`apply_arg` with its argument string, big_vision style::

    configs/gemma_2b.py:pe=p_rope,p=0.75,theta=10000

Config arguments (all optional, comma-separated ``key=value``):

* ``pe``: positional encoding preset, one of ``PE_PRESETS``: ``nope`` (p = 0), ``rope``
  (p = 1), ``p_rope`` / ``reversed`` / ``partial`` (fraction ``p``, default 0.75).
* ``p``: the fraction for ``p_rope`` / ``reversed`` / ``partial``.
* ``theta``: base wavelength θ.
* ``layout``: ``split_half`` or ``interleaved``.
* ``scale``: linear position-interpolation factor (>= 1).
* ``data``: the data task (``config.data.task``), one of ``rope_jax.data.config.TASKS``:
  ``offline``, ``wiki``, ``flan_v2``, ``probe_copy``, ``probe_reverse``, ``probe_recall``.

Then any field can be overridden from the command line (``--config.model.rope.fraction=0.25``);
the returned config is locked, so an unknown key there is an error. :func:`validate` converts
every section into its typed form and fails on unknown or unused keys before anything is built.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Callable

import ml_collections
from ml_collections.config_dict import placeholder

from rope_jax.model import transformer as model_lib
from rope_jax import rope as rope_lib

# name -> (variant, fraction or None for "take p from the argument").
PE_PRESETS: dict[str, tuple[str, float | None]] = {
    "nope": ("p_rope", 0.0),
    "rope": ("p_rope", 1.0),
    "p_rope": ("p_rope", None),
    "reversed": ("reversed", None),
    "partial": ("partial", None),
}
DEFAULT_P = 0.75
ARG_KEYS = ("pe", "p", "theta", "layout", "scale", "data")

# Validators of the top-level sections other modules own: section -> callable(ConfigDict).
# Each raises ValueError on a bad or unknown key. Registered by the owning module at import.
SECTION_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "model": lambda c: model_lib.ModelConfig.from_dict(to_dict(c)),
    # Training sections (typed dataclasses in rope_jax.training.train_lib / rope_jax.sharding; imported
    # lazily so that loading a config stays light).
    "train": lambda c: _train_lib().TrainConfig.from_dict(to_dict(c)),
    "eval": lambda c: _train_lib().EvalConfig.from_dict(to_dict(c)),
    "checkpoint": lambda c: _train_lib().CheckpointConfig.from_dict(to_dict(c)),
    "mesh": lambda c: _sharding_lib().MeshConfig.from_dict(to_dict(c)),
    "data": lambda c: _validate_data(c),
}


def _train_lib():
  from rope_jax.training import train_lib  # pylint: disable=g-import-not-at-top
  return train_lib


def _sharding_lib():
  from rope_jax import sharding  # pylint: disable=g-import-not-at-top
  return sharding


def _validate_data(section: Any) -> Any:
  """The data section's own validator (``rope_jax.data.config.validate``)."""
  from rope_jax.data import config as data_config  # pylint: disable=g-import-not-at-top
  return data_config.validate(section)


def rope_config_dict(**overrides: Any) -> ml_collections.ConfigDict:
  """The ``RopeConfig`` fields as a ConfigDict (defaults: full RoPE, θ = 10,000, split-half)."""
  d = dict(variant="p_rope", fraction=1.0, theta=rope_lib.DEFAULT_THETA, scale_factor=1.0,
           layout="split_half")
  d.update(overrides)
  return ml_collections.ConfigDict(d)


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by every experiment; size-specific files override the model shape."""
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(dict(
      vocab_size=256_128,
      num_layers=18,
      embed_dim=2048,
      num_heads=8,
      num_kv_heads=1,
      head_dim=256,
      mlp_dim=16_384,
      rope=rope_config_dict(),
      # None = inherit the value of model.rope; set fields (and global_every) for Gemma-4 style
      # global layers, e.g. --config.model.global_every=6 --config.model.global_rope.fraction=0.25
      global_rope=ml_collections.ConfigDict(dict(
          variant=placeholder(str), fraction=placeholder(float), theta=placeholder(float),
          scale_factor=placeholder(float), layout=placeholder(str))),
      global_every=0,
      norm_eps=1e-6,
      dtype="float32",
      param_dtype="float32",
      attention_impl="xla",
      remat="none",
  ))
  # Training (rope_jax.training.train_lib): optimizer, schedule, batch, loss, logging.
  config.train = ml_collections.ConfigDict(dict(
      seed=0,
      data_source="data",  # "data" (rope_jax.data, the `data` section) or "synthetic".
      global_batch_size=8,
      # Gradient accumulation: A microbatches of global_batch_size / A per optimizer step.
      grad_accum_steps=1,
      seq_len=128,
      num_steps=300,
      learning_rate=1e-3,
      warmup_steps=20,
      end_learning_rate_fraction=0.1,
      weight_decay=0.01,
      adam_b1=0.9,
      adam_b2=0.95,
      adam_eps=1e-8,
      grad_clip_norm=1.0,
      z_loss=0.0,
      log_every_steps=10,
      peak_tflops_per_device=placeholder(float),  # None: accelerator table / measured on CPU.
  ))
  # Validation loss at multiples of the training length (length generalisation).
  config.eval = ml_collections.ConfigDict(dict(
      every_steps=100,
      num_batches=2,
      global_batch_size=placeholder(int),  # None: train.global_batch_size.
      length_multipliers=(1, 2, 4),
  ))
  config.checkpoint = ml_collections.ConfigDict(dict(
      enabled=True,
      save_every_steps=1000,
      max_to_keep=3,
      async_save=True,
      # "<workdir>[:step]": a fresh run starts from that run's params (training/warm_start.py).
      init_from="",
  ))
  # Device mesh (rope_jax.sharding): ICI sizes per axis (one may be -1 = the rest), DCN sizes
  # (slices) per axis, and the logical-axis rules that map parameter / activation names onto it.
  from rope_jax import sharding  # pylint: disable=g-import-not-at-top
  config.mesh = ml_collections.ConfigDict(dict(
      data=-1, fsdp=1, tensor=1,
      dcn_data=1, dcn_fsdp=1, dcn_tensor=1,
      logical_axis_rules=sharding.DEFAULT_RULES,
  ))
  from rope_jax.data import config as data_config  # pylint: disable=g-import-not-at-top
  config.data = data_config.default_config()
  return config


def apply_paper_schedule(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The paper's Table 2 training setup (SPEC.md §2g), shared by the Gemma-sized configs.

  Batch 512 x 8,192 tokens for 10,000 steps on Wikipedia. The paper does not state the
  optimizer, learning rate, warmup or decay: learning_rate / warmup_steps are our choice for a
  ~2B model. Eval runs at 1x/2x/4x the training length, where the full 512-row batch at 32k
  tokens would need ~1 TB of logits per v5p-32 chip; 64 rows divide any data-parallel size up
  to 64.
  """
  config.train.update(global_batch_size=512, seq_len=8192, num_steps=10_000,
                      learning_rate=3e-4, warmup_steps=1000)
  config.eval.update(every_steps=1000, global_batch_size=64)
  config.checkpoint.save_every_steps = 500
  config.data.task = "wiki"
  return config


def parse_arg(arg: str | None) -> dict[str, str]:
  """``"pe=p_rope,p=0.75"`` -> ``{"pe": "p_rope", "p": "0.75"}``; unknown keys are errors."""
  out: dict[str, str] = {}
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    if "=" not in item:
      raise ValueError(f"Config argument {item!r} is not key=value; allowed keys: {ARG_KEYS}.")
    key, value = (s.strip() for s in item.split("=", 1))
    if key not in ARG_KEYS:
      raise ValueError(f"Unknown config argument {key!r} in {arg!r}; allowed: {ARG_KEYS}.")
    out[key] = value
  return out


def _number(key: str, value: str) -> float:
  try:
    return float(value)
  except ValueError:
    raise ValueError(f"Config argument {key}={value!r} is not a number.") from None


def apply_arg(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Applies a config argument string to ``config.model.rope`` (and ``data=`` to
  ``config.data.task``) and locks the config."""
  args = parse_arg(arg)
  rope = config.model.rope
  if "pe" in args:
    if args["pe"] not in PE_PRESETS:
      raise ValueError(f"Unknown pe={args['pe']!r}; allowed: {tuple(PE_PRESETS)}.")
    variant, fraction = PE_PRESETS[args["pe"]]
    if fraction is not None and "p" in args:
      raise ValueError(f"pe={args['pe']} fixes p={fraction}; drop p={args['p']}.")
    rope.variant = variant
    rope.fraction = fraction if fraction is not None else DEFAULT_P
  if "p" in args:
    rope.fraction = _number("p", args["p"])
  if "theta" in args:
    rope.theta = _number("theta", args["theta"])
  if "layout" in args:
    rope.layout = args["layout"]
  if "scale" in args:
    rope.scale_factor = _number("scale", args["scale"])
  if "data" in args:
    from rope_jax.data import config as data_config  # pylint: disable=g-import-not-at-top
    data_config.check_task(args["data"])
    config.data.task = args["data"]
  config.lock()
  return config


def to_dict(section: Any) -> dict[str, Any]:
  """A ConfigDict (or mapping) as a plain nested dict."""
  return section.to_dict() if hasattr(section, "to_dict") else dict(section)


def validate(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Converts every section to its typed form; unknown sections or keys raise ValueError.

  Returns:
    ``{section: typed config}`` (e.g. ``{"model": ModelConfig(...)}``).
  """
  unknown = sorted(set(config.keys()) - set(SECTION_VALIDATORS))
  if unknown:
    raise ValueError(f"Unknown config section(s) {unknown}; known: {sorted(SECTION_VALIDATORS)}.")
  return {name: SECTION_VALIDATORS[name](config[name]) for name in config.keys()}


def model_config(config: ml_collections.ConfigDict) -> model_lib.ModelConfig:
  """The validated ``ModelConfig`` of an experiment config."""
  return model_lib.ModelConfig.from_dict(to_dict(config.model))


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads ``"path/to/config.py[:arg]"`` as ``config_flags`` does (for notebooks and tests).

  A relative path is resolved against the working directory, then against the repo root.
  """
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    repo_path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), path)
    if not os.path.exists(repo_path):
      raise FileNotFoundError(f"Config file {path!r} not found (looked in {os.getcwd()} and the "
                              "repo root).")
    path = repo_path
  module_spec = importlib.util.spec_from_file_location("rope_jax_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)
