"""Experiment configs: the base ConfigDict, config arguments, and strict validation.

A config file under ``configs/`` is data: it starts from :func:`base_config` (every section of
``rope_jax.config.schema`` with its dataclass defaults; no model sizes), sets its sizes, and
calls :func:`apply_arg` with its argument string, big_vision style::

    configs/gemma_2b.py:pe=p_rope,p=0.75,theta=10000

Config arguments (all optional, comma-separated ``key=value``):

* ``pe``: positional encoding preset, one of ``presets.PE_PRESETS``: ``nope`` (p = 0), ``rope``
  (p = 1), ``p_rope`` / ``reversed`` / ``partial`` (fraction ``p``, default 0.75), ``alibi`` /
  ``fire`` (that logit bias on NoPE layers), ``sinusoidal`` (NoPE with sinusoidal absolute
  positions), ``rnope`` (RoPE with every 4th layer NoPE; ``presets.PE_EXTRAS``).
* ``p``: the fraction for ``p_rope`` / ``reversed`` / ``partial``.
* ``theta``: base wavelength θ.
* ``layout``: ``split_half`` or ``interleaved``.
* ``scale``: linear position-interpolation factor (>= 1).
* ``data``: the data task (``config.data.task``), one of ``schema.TASKS``:
  ``offline``, ``wiki``, ``flan_v2``, ``probe_copy``, ``probe_reverse``, ``probe_recall``,
  ``probe_passkey``, ``probe_mqar``, ``probe_flipflop``, ``mixture``.

Then any field can be overridden from the command line (``--config.model.rope.fraction=0.25``);
the returned config is locked, so an unknown key there is an error. :func:`validate` converts
every section into its typed form and fails on unknown keys, wrong types or bad values before
anything is built; it imports nothing above layer 0 (no model, trainer or mesh code).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any

import ml_collections
from ml_collections.config_dict import placeholder

from rope_jax.config import presets
from rope_jax.config import schema
from rope_jax.config import strict

ARG_KEYS = ("pe", "p", "theta", "layout", "scale", "data")


def section_config(section: Any) -> ml_collections.ConfigDict:
  """A section's fields as a ConfigDict: a dataclass's defaults, or an instance's values.

  A field without a default (the model sizes) or with default None becomes a typed placeholder
  (None until a config file sets it); a nested section with default None (``global_rope``)
  becomes a ConfigDict of placeholders whose None values inherit (see ``ModelConfig.from_dict``).
  """
  cls = section if isinstance(section, type) else type(section)
  out = ml_collections.ConfigDict()
  for field in dataclasses.fields(cls):
    hint = strict.field_types(cls)[field.name]
    value = field.default if isinstance(section, type) else getattr(section, field.name)
    sub = strict.section_of(hint)
    if sub is not None and value is None:
      out[field.name] = ml_collections.ConfigDict(
          {name: placeholder(strict.scalar_type(h)) for name, h in strict.field_types(sub).items()})
    elif sub is not None:
      out[field.name] = section_config(value)
    elif value is None or value is dataclasses.MISSING:
      out[field.name] = placeholder(strict.scalar_type(hint))
    else:
      out[field.name] = value
  return out


def base_config() -> ml_collections.ConfigDict:
  """Every section with the schema's defaults; the model sizes are unset placeholders.

  A config file under ``configs/`` sets the sizes (``config.model.update(vocab_size=...)``) and
  whatever else differs from these defaults.
  """
  config = ml_collections.ConfigDict()
  for name, cls in schema.SECTIONS.items():
    config[name] = section_config(cls)
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
    if args["pe"] not in presets.PE_PRESETS:
      raise ValueError(f"Unknown pe={args['pe']!r}; allowed: {tuple(presets.PE_PRESETS)}.")
    variant, fraction = presets.PE_PRESETS[args["pe"]]
    if fraction is not None and "p" in args:
      raise ValueError(f"pe={args['pe']} fixes p={fraction}; drop p={args['p']}.")
    rope.variant = variant
    rope.fraction = fraction if fraction is not None else presets.DEFAULT_P
    for path, value in presets.PE_EXTRAS.get(args["pe"], {}).items():
      *parents, leaf = path.split(".")
      section = config
      for name in parents:
        section = section[name]
      section[leaf] = value
  if "p" in args:
    rope.fraction = _number("p", args["p"])
  if "theta" in args:
    rope.theta = _number("theta", args["theta"])
  if "layout" in args:
    rope.layout = args["layout"]
  if "scale" in args:
    rope.scale_factor = _number("scale", args["scale"])
  if "data" in args:
    schema.check_task(args["data"])
    config.data.task = args["data"]
  config.lock()
  return config


def to_dict(section: Any) -> dict[str, Any]:
  """A ConfigDict (or mapping) as a plain nested dict."""
  return section.to_dict() if hasattr(section, "to_dict") else dict(section)


def validate(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Converts every section to its typed form (``schema.SECTIONS``); imports nothing above it.

  Returns:
    ``{section: typed config}`` (e.g. ``{"model": ModelConfig(...), "data": DataConfig(...)}``).

  Raises:
    ValueError: an unknown section, or a section's unknown key, wrong type or bad value.
  """
  unknown = sorted(set(config.keys()) - set(schema.SECTIONS))
  if unknown:
    raise ValueError(f"Unknown config section(s) {unknown}; known: {sorted(schema.SECTIONS)}.")
  return {name: schema.SECTIONS[name].from_dict(to_dict(config[name])) for name in config.keys()}


def model_config(config: ml_collections.ConfigDict) -> schema.ModelConfig:
  """The validated ``ModelConfig`` of an experiment config."""
  return schema.ModelConfig.from_dict(to_dict(config.model))


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads ``"path/to/config.py[:arg]"`` as ``config_flags`` does (for notebooks and tests).

  A relative path is resolved against the working directory, then against the repo root.
  """
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    repo_path = os.path.join(repo_root, path)
    if not os.path.exists(repo_path):
      raise FileNotFoundError(f"Config file {path!r} not found (looked in {os.getcwd()} and the "
                              "repo root).")
    path = repo_path
  module_spec = importlib.util.spec_from_file_location("rope_jax_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)
