"""Hugging Face ``config.json`` <-> rope_jax ``ModelConfig`` fields, both directions.

Architectures (``config.json`` ``architectures[0]`` or ``model_type``):

* ``GemmaForCausalLM``: GeGLU (tanh-GELU), RMSNorm ``(1 + scale)``, tied output, √D embedding
  scale (``GEMMA_FIELDS``);
* ``LlamaForCausalLM``, ``MistralForCausalLM``: SwiGLU (SiLU), RMSNorm ``scale``, tied or untied
  output (``lm_head``), no embedding scale (``LLAMA_FIELDS``).

All three use split-half RoPE on Hugging Face's q/k weight layout (``rotate_half``), queries
scaled by ``head_dim^-0.5``, no biases, GQA with any ``head_dim``.

RoPE settings are read from either schema: ``rope_parameters`` (transformers >= 5:
``{"rope_type", "rope_theta", <type's parameters>}``) or the legacy ``rope_theta`` +
``rope_scaling`` (``{"rope_type" or "type", <parameters>}``); both are written on export.
Scaling types and their parameter names are ``rope_jax.rope_scaling``'s (the HF names).
p-RoPE is transformers' ``"proportional"`` rope type (Gemma 4): the ladder over the full head
dimension with the slowest ``1 - partial_rotary_factor`` of the pairs made identity.

Every unsupported value raises ``BadInputError`` naming it and what is allowed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from rope_jax import rope_scaling
from rope_jax.config.schema import MODEL_SIZES, ModelConfig, RopeConfig
from rope_jax.errors import BadInputError

# HF architecture class -> model_type.
ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "GemmaForCausalLM": "gemma"}
MODEL_TYPES: dict[str, str] = {v: k for k, v in ARCHITECTURES.items()}
# config.json field -> ModelConfig field (the sizes and ε).
SIZE_FIELDS: dict[str, str] = {
    "vocab_size": "vocab_size", "num_hidden_layers": "num_layers", "hidden_size": "embed_dim",
    "num_attention_heads": "num_heads", "num_key_value_heads": "num_kv_heads",
    "head_dim": "head_dim", "intermediate_size": "mlp_dim", "rms_norm_eps": "norm_eps",
}
# Decoder choices of each family (ModelConfig fields); Llama's output layer may also be tied.
GEMMA_FIELDS: dict[str, Any] = dict(mlp_activation="gelu_tanh", norm_plus_one=True,
                                    embed_scale=True, tie_embeddings=True)
LLAMA_FIELDS: dict[str, Any] = dict(mlp_activation="silu", norm_plus_one=False,
                                    embed_scale=False)
FAMILY_FIELDS: dict[str, dict[str, Any]] = {
    "gemma": GEMMA_FIELDS, "llama": LLAMA_FIELDS, "mistral": LLAMA_FIELDS}
# HF activation names that are each of ours.
ACTIVATIONS: dict[str, tuple[str, ...]] = {
    "gelu_tanh": ("gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu"),  # HF Gemma: all tanh.
    "silu": ("silu", "swish"),
}
HF_ACTIVATION = {"gelu_tanh": "gelu_pytorch_tanh", "silu": "silu"}
# rope_jax encodings transformers has: the scaling types (rope_jax.rope_scaling) and p-RoPE.
PROPORTIONAL = "proportional"
SCALING_TYPES = ("default", "linear", "dynamic", "yarn", "llama3")
ROPE_TYPE_KEYS = ("rope_type", "type")


def architecture(hf: Mapping[str, Any]) -> str:
  """The family (``"llama"``, ``"mistral"``, ``"gemma"``) of a ``config.json``."""
  names = list(hf.get("architectures") or [])
  for name in names:
    if name in ARCHITECTURES:
      return ARCHITECTURES[name]
  model_type = hf.get("model_type")
  if not names and model_type in MODEL_TYPES:
    return model_type
  raise BadInputError(
      f"config.json architecture {names or model_type!r} is not supported; supported: "
      f"{', '.join(ARCHITECTURES)}.")


def _rope_source(hf: Mapping[str, Any]) -> tuple[float, str, dict[str, Any], str]:
  """``(theta, rope_type, parameters, schema)`` from either config schema."""
  params = hf.get("rope_parameters")
  if params:
    params = dict(params)
    if "rope_theta" not in params and any(isinstance(v, Mapping) for v in params.values()):
      raise BadInputError("config.json rope_parameters is given per layer type "
                          f"({sorted(params)}); only one encoding for all layers is supported.")
    schema = "rope_parameters"
    theta = params.pop("rope_theta", hf.get("rope_theta", 10_000.0))
  else:
    params = dict(hf.get("rope_scaling") or {})
    schema = "rope_theta/rope_scaling"
    theta = hf.get("rope_theta", 10_000.0)
  rope_type = "default"
  for key in ROPE_TYPE_KEYS:
    if key in params:
      rope_type = params.pop(key)
  if "partial_rotary_factor" in hf and "partial_rotary_factor" not in params:
    params["partial_rotary_factor"] = hf["partial_rotary_factor"]
  return float(theta), str(rope_type), params, schema


def rope_fields(hf: Mapping[str, Any]) -> dict[str, Any]:
  """The ``RopeConfig`` fields of a ``config.json``'s RoPE (either schema)."""
  theta, rope_type, params, schema = _rope_source(hf)
  fraction = float(params.pop("partial_rotary_factor", 1.0))
  where = f"config.json {schema}"
  if rope_type == PROPORTIONAL:
    rope_type = "default"
  elif fraction != 1.0:
    raise BadInputError(
        f"{where}: partial_rotary_factor={fraction} with rope type {rope_type!r} rotates a "
        "re-spread ladder over part of the head, which these architectures do not apply; "
        f"p-RoPE is rope type {PROPORTIONAL!r}.")
  if rope_type not in SCALING_TYPES:
    raise BadInputError(f"{where}: rope type {rope_type!r} is not supported; supported: "
                        f"{', '.join(SCALING_TYPES + (PROPORTIONAL,))}.")
  params = _hf_lengths(hf, rope_type, params)
  if rope_type == "default" and params.get("factor") not in (None, 1, 1.0):  # proportional
    rope_type = "linear"
  elif rope_type == "default":
    params.pop("factor", None)
  fields: dict[str, Any] = dict(variant="p_rope", fraction=fraction, theta=theta,
                                layout="split_half")
  fields.update(scaling_fields(rope_type, params, where))
  return fields


def _hf_lengths(hf: Mapping[str, Any], rope_type: str, params: dict[str, Any]) -> dict[str, Any]:
  """The context lengths transformers actually uses, made explicit.

  ``llama3``/``yarn``: ``original_max_position_embeddings`` from the top level (Phi-3 style),
  else the parameters, else ``max_position_embeddings``; YaRN without ``factor`` stretches to
  ``max_position_embeddings``. ``dynamic`` stretches from ``max_position_embeddings`` whatever
  the parameters say (``_compute_dynamic_ntk_parameters``).
  """
  params = dict(params)
  max_pos = hf.get("max_position_embeddings")
  if rope_type in ("llama3", "yarn"):
    original = hf.get("original_max_position_embeddings") or params.get(
        "original_max_position_embeddings") or max_pos
    params["original_max_position_embeddings"] = original
    if rope_type == "yarn" and params.get("factor") is None and max_pos and original:
      params["factor"] = max_pos / original
  elif rope_type == "dynamic":
    params["original_max_position_embeddings"] = max_pos
  return params


def scaling_fields(rope_type: str, params: Mapping[str, Any], where: str) -> dict[str, Any]:
  """A scaling type and its HF parameters as ``RopeConfig`` fields (``type`` and the same
  names, ``rope_jax.rope_scaling``); BadInputError naming a parameter it does not take."""
  params = {k: v for k, v in params.items() if v is not None}
  required, optional = rope_scaling.PARAMETERS[rope_type]
  known = set(required) | set(optional)
  dropped = sorted(set(params) - known)
  if dropped:
    raise BadInputError(f"{where}: rope type {rope_type!r} parameter(s) {dropped} are not "
                        f"supported; it takes {sorted(known)}.")
  try:
    rope_scaling.validate_rope_scaling(rope_type, params)
  except ValueError as e:
    raise BadInputError(f"{where}: {e}") from None
  return dict(type=rope_type, **params)


def model_fields(hf: Mapping[str, Any]) -> dict[str, Any]:
  """``ModelConfig`` fields (a dict, ``rope`` a dict) of a ``config.json``; checks it maps."""
  family = architecture(hf)
  missing = [k for k in ("vocab_size", "num_hidden_layers", "hidden_size", "num_attention_heads",
                         "intermediate_size") if k not in hf]
  if missing:
    raise BadInputError(f"config.json lacks {missing} (a {MODEL_TYPES[family]} config has them).")
  fields = {ours: hf[theirs] for theirs, ours in SIZE_FIELDS.items()
            if hf.get(theirs) is not None}
  fields.setdefault("num_kv_heads", fields["num_heads"])
  fields.setdefault("head_dim", fields["embed_dim"] // fields["num_heads"])
  fields.update(FAMILY_FIELDS[family])
  act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
  if act not in ACTIVATIONS[fields["mlp_activation"]]:
    raise BadInputError(f"config.json hidden_act {act!r} is not supported for {family}; "
                        f"supported: {ACTIVATIONS[fields['mlp_activation']]}.")
  if family != "gemma":
    fields["tie_embeddings"] = bool(hf.get("tie_word_embeddings", False))
  elif hf.get("tie_word_embeddings") is False:
    raise BadInputError("config.json tie_word_embeddings is false for gemma; Gemma ties them.")
  for flag in ("attention_bias", "mlp_bias", "use_bidirectional_attention"):
    if hf.get(flag):
      raise BadInputError(f"config.json {flag} is true; rope_jax's decoder is causal and has no "
                          "biases.")
  if hf.get("pretraining_tp", 1) not in (1, None):
    raise BadInputError(f"config.json pretraining_tp={hf['pretraining_tp']}; only 1 is "
                        "supported.")
  if hf.get("attention_dropout"):
    raise BadInputError(f"config.json attention_dropout={hf['attention_dropout']}; only 0.")
  fields["rope"] = rope_fields(hf)
  return fields


def caveats(hf: Mapping[str, Any]) -> list[str]:
  """What of a ``config.json`` the import keeps but rope_jax does not reproduce everywhere."""
  out = []
  window, max_pos = hf.get("sliding_window"), hf.get("max_position_embeddings")
  if window and (not max_pos or window < max_pos):
    out.append(f"config.json sliding_window={window}: rope_jax attends to the whole context, so "
               f"logits equal the checkpoint's only for sequences up to {window} tokens.")
  return out


# ------------------------------------------------------------------------------------ export


def export_family(cfg: ModelConfig) -> str:
  """The HF family a ``ModelConfig`` is exactly (``"gemma"`` or ``"llama"``), else refuses."""
  mine = {k: getattr(cfg, k) for k in ("mlp_activation", "norm_plus_one", "embed_scale",
                                      "tie_embeddings")}
  if all(mine[k] == v for k, v in GEMMA_FIELDS.items()):
    family = "gemma"
  elif all(mine[k] == v for k, v in LLAMA_FIELDS.items()):
    family = "llama"
  else:
    raise BadInputError(
        f"The run's decoder {mine} is neither Gemma's {GEMMA_FIELDS} nor Llama's "
        f"{LLAMA_FIELDS}; transformers has no class for it.")
  handled = set(MODEL_SIZES) | set(GEMMA_FIELDS) | {
      "rope", "global_rope", "global_every", "norm_eps", "dtype", "param_dtype",
      "attention_impl", "remat", "query_scale"}
  for f in dataclasses.fields(ModelConfig):
    if f.name not in handled and f.default is not dataclasses.MISSING and \
        getattr(cfg, f.name) != f.default:
      raise BadInputError(f"model.{f.name}={getattr(cfg, f.name)!r} has no transformers "
                          f"equivalent in {MODEL_TYPES[family]}; not exported.")
  if cfg.query_scale is not None and cfg.query_scale != cfg.head_dim**-0.5:
    raise BadInputError(f"model.query_scale={cfg.query_scale} differs from head_dim^-0.5, which "
                        f"{MODEL_TYPES[family]} applies.")
  return family


# RopeConfig fields the export maps; any other field must keep its default.
_EXPORTED_ROPE_FIELDS = ("theta", "fraction", "scale_factor", "type")


def _export_rope(cfg: ModelConfig, proportional_ok: bool) -> dict[str, Any]:
  """``rope_parameters`` (with ``rope_theta``) of the run's one encoding, or refuses."""
  rope = cfg.rope
  if cfg.global_rope is not None and cfg.global_rope != cfg.rope:
    raise BadInputError("The run uses a second encoding on every "
                        f"{cfg.global_every}th layer (model.global_rope); transformers' "
                        "Llama/Gemma apply one encoding to all layers.")
  scaling = rope.scaling_params()
  default = RopeConfig()
  for f in dataclasses.fields(RopeConfig):
    if f.name in _EXPORTED_ROPE_FIELDS or f.name in scaling:
      continue
    if getattr(rope, f.name) != getattr(default, f.name):
      raise BadInputError(
          f"model.rope.{f.name}={getattr(rope, f.name)!r} has no transformers equivalent for "
          f"Llama/Gemma (they rotate split-half pairs with variant='p_rope' and add no logit "
          f"bias); not exported.")
  params: dict[str, Any] = {"rope_theta": float(rope.theta)}
  rope_type = rope.type
  if rope.scale_factor != 1.0:
    rope_type, scaling = "linear", {"factor": float(rope.scale_factor)}
  if rope_type not in SCALING_TYPES:
    raise BadInputError(f"model.rope.type={rope_type!r} has no transformers rope type; exported "
                        f"are {SCALING_TYPES}.")
  if rope.fraction != 1.0:
    if not proportional_ok:
      raise BadInputError(
          f"model.rope.fraction={rope.fraction} (p-RoPE) needs transformers' "
          f"{PROPORTIONAL!r} rope type, which the installed transformers does not register.")
    if rope_type not in ("default", "linear"):
      raise BadInputError(f"p-RoPE (fraction {rope.fraction}) with rope type {rope_type!r} has "
                          f"no transformers equivalent ({PROPORTIONAL!r} takes only a linear "
                          "factor).")
    rope_type = PROPORTIONAL
    scaling = {**scaling, "partial_rotary_factor": float(rope.fraction)}
  params["rope_type"] = rope_type
  params.update(scaling)
  return params


def hf_config(cfg: ModelConfig, *, max_position_embeddings: int, dtype: str = "float32",
              proportional_ok: bool = True, special_ids: Mapping[str, int] | None = None,
              ) -> tuple[dict[str, Any], dict[str, Any]]:
  """``(config.json, generation_config.json)`` of a run, RoPE in both schemas."""
  family = export_family(cfg)
  rope = _export_rope(cfg, proportional_ok)
  if rope["rope_type"] == "dynamic":  # transformers stretches from max_position_embeddings.
    max_position_embeddings = rope.pop("original_max_position_embeddings")
  legacy = {k: v for k, v in rope.items() if k != "rope_theta"}
  config: dict[str, Any] = {
      "architectures": [MODEL_TYPES[family]], "model_type": family,
      **{theirs: getattr(cfg, ours) for theirs, ours in SIZE_FIELDS.items()},
      "hidden_act": HF_ACTIVATION[cfg.mlp_activation],
      "max_position_embeddings": int(max_position_embeddings),
      "tie_word_embeddings": bool(cfg.tie_embeddings),
      "attention_bias": False, "attention_dropout": 0.0,
      "initializer_range": 0.02, "use_cache": True,
      "rope_parameters": rope,
      "rope_theta": rope["rope_theta"],
      "rope_scaling": None if legacy == {"rope_type": "default"} else legacy,
      "dtype": dtype, "torch_dtype": dtype,
  }
  if family == "gemma":
    config["hidden_activation"] = config["hidden_act"]
  else:
    config["mlp_bias"] = False
    config["pretraining_tp"] = 1
  ids = dict(special_ids or {})
  for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
    if name in ids:
      config[name] = int(ids[name])
  generation = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")
                if k in config}
  return config, generation
