"""The typed config sections: the one place that says what a valid config is.

Layer 0 of the house (beside ``rope.py``): imports nothing of the project but the kernel. Every
section of an experiment config (``model``, ``train``, ``eval``, ``checkpoint``, ``mesh``,
``data``) is a frozen dataclass here whose field defaults are the defaults of the whole house
(``rope_jax.config.base.base_config`` is generated from them). ``Section.from_dict`` builds one
from a mapping through the one strict check (``rope_jax.config.strict.from_dict``: an unknown
key, a value of the wrong type or a non-finite float is a ValueError naming it); each section's
``__post_init__`` checks the same types, then the ranges.

Names only: the model maps ``REMAT_NAMES`` to ``jax.checkpoint`` policies and
``ATTENTION_IMPLS`` to kernels; ``rope_jax.sharding`` builds the mesh from a ``MeshConfig``; the
data pipeline reads the ``data`` section. Shapes: H head dimension.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import numpy as np

from rope_jax import encodings
from rope_jax import rope as rope_lib
from rope_jax import rope_scaling
from rope_jax.config import strict
from rope_jax.config.data_schema import (LONG_PROBE_KINDS, LONG_PROBE_SETTINGS, PROBE_KINDS,
                                         TASKS, TFDS_TASKS, DataConfig, LongProbeConfig,
                                         ProbeConfig, check_task, parse_mixture)
from rope_jax.config.strict import Section, check_fields, from_dict

# Names the sections accept ---------------------------------------------------------------------

ATTENTION_IMPLS = ("xla", "dot_product", "splash")
# Rematerialisation of each block in the backward pass ("full" saves nothing, "dots" saves
# matmul outputs, "dots_no_batch" those without batch dims); rope_jax.model.transformer maps
# each name to its jax.checkpoint policy.
REMAT_NAMES = ("none", "full", "dots", "dots_no_batch")
DTYPES = ("float32", "bfloat16")
MLP_ACTIVATIONS = ("gelu_tanh", "silu")  # GeGLU (Gemma) or SwiGLU (Llama, Mistral).
DATA_SOURCES = ("data", "synthetic")
MESH_AXES = ("data", "fsdp", "tensor")
# MaxText-style defaults: batch over data+fsdp, weights' "embed" dim over fsdp, heads / MLP /
# vocabulary over tensor. Activation names are used by rope_jax.model.transformer via
# rope_jax.sharding.constrain().
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")), ("activation_batch", ("data", "fsdp")),
    ("activation_length", None), ("activation_embed", None), ("activation_heads", "tensor"),
    ("activation_kv_heads", "tensor"), ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"), ("embed", "fsdp"), ("vocab", "tensor"), ("mlp", "tensor"),
    ("q_heads", "tensor"), ("kv_heads", "tensor"), ("head_dim", None), ("norm", None),
)


# Sections ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RopeConfig(Section):
  """The positional encoding of a layer: rotation fields as in ``rope.apply_rope``; ``type``
  and ``factor``..``truncate`` the Hugging Face ``rope_type`` / ``rope_parameters`` of context
  extension (``rope_jax.rope_scaling``; None = unset; ``"dynamic"`` reads the number of key
  slots: L, or the cache size when decoding), e.g. ``--config.model.rope.type=yarn
  --config.model.rope.factor=4 --config.model.rope.original_max_position_embeddings=128``;
  ``bias`` an attention-logit bias, "none", "alibi" or "fire" (learned, per layer), composed
  with the rotation (``fraction=0, bias="alibi"`` is plain ALiBi)."""

  WHERE: ClassVar[str] = "model.rope"

  variant: str = "p_rope"
  fraction: float = 1.0
  theta: float = rope_lib.DEFAULT_THETA
  scale_factor: float = 1.0
  layout: str = "split_half"
  type: str = "default"
  factor: float | None = None
  original_max_position_embeddings: int | None = None
  low_freq_factor: float | None = None
  high_freq_factor: float | None = None
  beta_fast: float | None = None
  beta_slow: float | None = None
  attention_factor: float | None = None
  mscale: float | None = None
  mscale_all_dim: float | None = None
  truncate: bool | None = None
  bias: str = "none"

  def __post_init__(self):
    check_fields(self)

  def scaling_params(self) -> dict[str, Any]:
    """The HF-named parameters of ``type`` that are set (``rope_scaling.PARAMETER_NAMES``)."""
    return {name: getattr(self, name) for name in rope_scaling.PARAMETER_NAMES
            if getattr(self, name) is not None}

  def kernel_kwargs(self) -> dict[str, Any]:
    """The keyword arguments of ``rope_jax.rope.apply_rope`` (all but ``layout``)."""
    return dict(theta=self.theta, fraction=self.fraction, variant=self.variant,
                scale_factor=self.scale_factor, rope_type=self.type,
                rope_params=self.scaling_params())

  def validate(self, head_dim: int) -> None:
    rope_lib.validate_rope_args(head_dim, layout=self.layout, **self.kernel_kwargs())
    if self.bias not in encodings.LOGIT_BIASES:
      raise ValueError(f"model.rope.bias must be one of {encodings.LOGIT_BIASES}, got "
                       f"{self.bias!r}.")

  def logit_scale(self) -> float:
    """What the logits are multiplied by on top of ``H^-0.5``: YaRN's attention factor squared
    (queries and keys each carry one factor, as in HF), else 1."""
    return rope_scaling.attention_factor(self.type, self.scaling_params()) ** 2

  def apply(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    """Rotates ``x [B, L, N, H]`` at ``positions [B, L]``."""
    return rope_lib.apply_rope(x, positions, layout=self.layout, **self.kernel_kwargs())

  def tables(self, positions: jax.Array, head_dim: int, seq_len: int | None = None):
    """cos/sin tables ``[B, L, 1, R/2]`` at ``positions [B, L]`` (None for NoPE); ``seq_len``
    is the length ``type="dynamic"`` reads (None = L)."""
    return rope_lib.rope_tables(positions, head_dim, seq_len=seq_len, **self.kernel_kwargs())

  def apply_tables(self, x: jax.Array, tables) -> jax.Array:
    """Rotates ``x [B, L, N, H]`` with tables from :meth:`tables`."""
    return rope_lib.apply_rope_tables(x, tables, layout=self.layout)


# What ModelConfig.with_rope_scaling may change on a trained model (nothing with parameters).
EVAL_ROPE_FIELDS = ("type", *rope_scaling.PARAMETER_NAMES, "scale_factor")

MODEL_SIZES = ("vocab_size", "num_layers", "embed_dim", "num_heads", "num_kv_heads", "head_dim",
               "mlp_dim")


def _check_sizes(sizes: dict[str, Any]) -> None:
  for name, value in sizes.items():
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
      raise ValueError(f"model.{name} must be a positive int, got {value!r} (the sizes come "
                       "from the config file, e.g. configs/tiny.py).")


@dataclasses.dataclass(frozen=True)
class ModelConfig(Section):
  """Hyperparameters of the decoder (the ``model`` section).

  The sizes (``MODEL_SIZES``) have no default: each ``configs/*.py`` sets them.

  Attributes:
    vocab_size: V, rows of the (tied) embedding table.
    num_layers: number of decoder blocks.
    embed_dim: D, the residual width.
    num_heads: N query heads.
    num_kv_heads: K key/value heads (K = N: MHA, K = 1: MQA, else GQA); N % K == 0.
    head_dim: H, per-head width (independent of D; even).
    mlp_dim: F, hidden width of each gated feed-forward branch.
    rope: positional encoding of every layer not selected by ``global_every``.
    global_rope: positional encoding of the "global" layers (Gemma 4 uses p = 0.25 there);
      None = the same as ``rope``. In a config dict, fields left None inherit ``rope``'s, e.g.
      ``--config.model.global_every=6 --config.model.global_rope.fraction=0.25``.
    global_every: 0 = every layer uses ``rope``; k > 0 = layers l with l % k == k - 1 use
      ``global_rope`` (k = 6 gives Gemma 4's 5 local : 1 global; ``global_every=4`` with
      ``global_rope.fraction=0`` is Llama 4's interleaved RoPE/NoPE, preset ``pe=rnope``). A
      ``global_rope`` setting its own ``type`` inherits none of ``rope``'s scaling parameters.
    absolute_encoding: "none" or "sinusoidal" (Vaswani et al.), added to the embeddings.
    norm_eps: ε of RMSNorm.
    dtype: activation/compute dtype ("float32" or "bfloat16"); params stay ``param_dtype``.
    param_dtype: storage dtype of the parameters.
    attention_impl: "xla" (materialised weights; analysis needs it), "dot_product"
      (``jax.nn.dot_product_attention``: cuDNN flash attention on GPU) or "splash" (the Pallas
      splash-attention kernel, TPU; ``rope_jax.model.attention``).
    remat: rematerialisation policy of each block in the backward pass, one of ``REMAT_NAMES``
      (trades FLOPs for activation memory); True/False (older configs) mean "full"/"none".
    mlp_activation, norm_plus_one, tie_embeddings, embed_scale, query_scale: the decoder family,
      Gemma 1's by default, Llama's in ``rope_jax.weights.hf_config`` (meanings in
      ``rope_jax.model.transformer``; ``query_scale`` None is ``head_dim^-0.5``).
  """

  WHERE: ClassVar[str] = "model"

  vocab_size: int
  num_layers: int
  embed_dim: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  rope: RopeConfig = RopeConfig()
  global_rope: RopeConfig | None = None
  global_every: int = 0
  absolute_encoding: str = "none"
  norm_eps: float = 1e-6
  dtype: str = "float32"
  param_dtype: str = "float32"
  attention_impl: str = "xla"
  remat: str | bool = "none"
  mlp_activation: str = "gelu_tanh"
  norm_plus_one: bool = True
  tie_embeddings: bool = True
  embed_scale: bool = True
  query_scale: float | None = None

  def __post_init__(self):
    _check_sizes({name: getattr(self, name) for name in MODEL_SIZES})
    check_fields(self)
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"model.num_heads ({self.num_heads}) must be divisible by model.num_kv_heads "
          f"({self.num_kv_heads}).")
    if self.head_dim % 2:
      raise ValueError(f"model.head_dim must be even for rotary pairs, got {self.head_dim}.")
    if self.global_every < 0:
      raise ValueError(f"model.global_every must be >= 0, got {self.global_every}.")
    if self.global_every == 0 and self.global_rope is not None:
      raise ValueError(
          "model.global_rope is set but model.global_every=0, so no layer would use it; set "
          "model.global_every=k to apply it to every k-th layer.")
    self.rope.validate(self.head_dim)
    if self.global_rope is not None:
      self.global_rope.validate(self.head_dim)
    if self.dtype not in DTYPES or self.param_dtype not in DTYPES:
      raise ValueError(f"model.dtype/param_dtype must be in {DTYPES}, got "
                       f"{self.dtype!r}/{self.param_dtype!r}.")
    if isinstance(self.remat, (bool, np.bool_)):  # Older configs: remat=True/False.
      object.__setattr__(self, "remat", "full" if self.remat else "none")
    if self.remat not in REMAT_NAMES:
      raise ValueError(f"model.remat must be one of {REMAT_NAMES}, got {self.remat!r}.")
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(
          f"model.attention_impl must be one of {ATTENTION_IMPLS}, got {self.attention_impl!r}.")
    if self.absolute_encoding not in encodings.ABSOLUTE_ENCODINGS:
      raise ValueError(f"model.absolute_encoding must be one of {encodings.ABSOLUTE_ENCODINGS}, "
                       f"got {self.absolute_encoding!r}.")
    if self.absolute_encoding == "sinusoidal" and self.embed_dim % 2:
      raise ValueError(f"model.absolute_encoding='sinusoidal' needs an even model.embed_dim, got "
                       f"{self.embed_dim}.")
    for name, rope in (("rope", self.rope), ("global_rope", self.global_rope)):
      if rope is not None and rope.bias != "none" and self.attention_impl == "splash":
        raise ValueError(f"model.{name}.bias={rope.bias!r} adds to the logits, which model."
                         "attention_impl='splash' cannot take; use 'xla' or 'dot_product'.")
    if self.mlp_activation not in MLP_ACTIVATIONS:
      raise ValueError(f"model.mlp_activation must be one of {MLP_ACTIVATIONS}, got "
                       f"{self.mlp_activation!r}.")
    if self.query_scale is not None and not self.query_scale > 0:
      raise ValueError(f"model.query_scale must be > 0 (or None for head_dim^-0.5), got "
                       f"{self.query_scale!r}.")

  @classmethod
  def from_dict(cls, d: Any, where: str | None = None) -> "ModelConfig":
    """Builds from a nested mapping (a ConfigDict's ``to_dict()``); see ``strict.from_dict``.

    ``global_rope`` fields that are None inherit the ``rope`` value; all None means no
    separate global encoding.
    """
    where = where or cls.WHERE
    d = strict.plain(d)
    _check_sizes({name: d.get(name) for name in MODEL_SIZES})
    if "rope" in d and not isinstance(d["rope"], RopeConfig):
      d["rope"] = from_dict(RopeConfig, d["rope"], f"{where}.rope")
    glob = d.get("global_rope")
    if glob is not None and not isinstance(glob, RopeConfig):
      glob = {k: v for k, v in strict.plain(glob).items() if v is not None}
      rope = dataclasses.asdict(d.get("rope", RopeConfig()))
      if "type" in glob:  # Its own context extension: inherit none of rope's parameters.
        rope = {k: v for k, v in rope.items() if k not in rope_scaling.PARAMETER_NAMES}
      d["global_rope"] = (from_dict(RopeConfig, {**rope, **glob}, f"{where}.global_rope")
                          if glob else None)
    return from_dict(cls, d, where)

  def with_rope_scaling(self, overrides: Any) -> "ModelConfig":
    """The same model with another context extension on every layer (evaluation time):
    ``overrides`` (``EVAL_ROPE_FIELDS`` only, else a ValueError naming them) replace the layers'
    scaling fields, e.g. ``{"type": "yarn", "factor": 4.0, "original_max_position_embeddings":
    128}``. No parameter changes, so a trained checkpoint restores unchanged."""
    overrides = strict.plain(overrides)
    bad = sorted(set(overrides) - set(EVAL_ROPE_FIELDS))
    if bad:
      raise ValueError(f"Cannot override {bad} of model.rope at evaluation time (they change "
                       f"the model or its parameters); allowed: {list(EVAL_ROPE_FIELDS)}.")
    cleared = {name: None for name in rope_scaling.PARAMETER_NAMES}
    cleared.update(type="default", scale_factor=1.0)

    def swap(rope: RopeConfig | None) -> RopeConfig | None:
      if rope is None:
        return None
      return from_dict(RopeConfig, {**dataclasses.asdict(rope), **cleared, **overrides})

    return dataclasses.replace(self, rope=swap(self.rope), global_rope=swap(self.global_rope))

  def layer_rope(self, layer: int) -> RopeConfig:
    """The positional encoding of layer ``layer``."""
    if self.global_rope is not None and layer % self.global_every == self.global_every - 1:
      return self.global_rope
    return self.rope


@dataclasses.dataclass(frozen=True)
class TrainConfig(Section):
  """The ``train`` section (``rope_jax.training``): optimizer, schedule, batch, loss, logging.

  Attributes:
    seed: parameter init and data order.
    data_source: "data" (``rope_jax.data.make_iterator`` with the ``data`` section) or
      "synthetic" (``rope_jax.data.synthetic``: the deterministic fallback/test source).
    global_batch_size: sequences per step over all devices and processes.
    grad_accum_steps: A, gradient accumulation (microbatching): each step runs forward and
      backward on A microbatches of ``global_batch_size / A`` sequences one after another
      (``jax.lax.scan``) and applies ONE optimizer update with their exact full-batch gradient,
      so the activations (and the ``[B, L, V]`` logits) of only one microbatch are live at a
      time. ``global_batch_size`` must be divisible by A × the data-parallel mesh size.
    seq_len: training sequence length L (tokens).
    num_steps: total optimizer steps (the cosine schedule ends here).
    learning_rate: peak learning rate, reached after ``warmup_steps`` (linear from lr/warmup).
    warmup_steps: linear warmup length.
    end_learning_rate_fraction: cosine decay ends at ``learning_rate`` times this.
    weight_decay: AdamW decoupled weight decay, on matrices only (not the norm scales).
    adam_b1, adam_b2, adam_eps: AdamW moments.
    grad_clip_norm: clip the global gradient norm to this (0 = off).
    z_loss: coefficient of ``log(Z)²`` added to the loss (0 = off; PaLM used 1e-4).
    log_every_steps: progress line / metrics cadence.
    peak_tflops_per_device: MFU denominator override; None = known-accelerator table, or the
      measured matmul rate on CPU.
  """

  WHERE: ClassVar[str] = "train"

  seed: int = 0
  data_source: str = "data"
  global_batch_size: int = 8
  grad_accum_steps: int = 1
  seq_len: int = 128
  num_steps: int = 300
  learning_rate: float = 1e-3
  warmup_steps: int = 20
  end_learning_rate_fraction: float = 0.1
  weight_decay: float = 0.01
  adam_b1: float = 0.9
  adam_b2: float = 0.95
  adam_eps: float = 1e-8
  grad_clip_norm: float = 1.0
  z_loss: float = 0.0
  log_every_steps: int = 10
  peak_tflops_per_device: float | None = None

  def __post_init__(self):
    check_fields(self)
    if self.data_source not in DATA_SOURCES:
      raise ValueError(f"train.data_source must be one of {DATA_SOURCES}, got "
                       f"{self.data_source!r}.")
    for name in ("global_batch_size", "seq_len", "num_steps", "log_every_steps"):
      if getattr(self, name) <= 0:
        raise ValueError(f"train.{name} must be positive, got {getattr(self, name)}.")
    if self.grad_accum_steps < 1:
      raise ValueError(f"train.grad_accum_steps must be >= 1, got {self.grad_accum_steps}.")
    if self.global_batch_size % self.grad_accum_steps:
      raise ValueError(
          f"train.global_batch_size={self.global_batch_size} is not divisible by "
          f"train.grad_accum_steps={self.grad_accum_steps}.")
    if self.warmup_steps < 0 or self.warmup_steps > self.num_steps:
      raise ValueError(f"train.warmup_steps must be in [0, num_steps={self.num_steps}], got "
                       f"{self.warmup_steps}.")
    if self.learning_rate <= 0:
      raise ValueError(f"train.learning_rate must be positive, got {self.learning_rate}.")
    if not 0 <= self.end_learning_rate_fraction <= 1:
      raise ValueError("train.end_learning_rate_fraction must be in [0, 1], got "
                       f"{self.end_learning_rate_fraction}.")
    for name in ("weight_decay", "grad_clip_norm", "z_loss"):
      if getattr(self, name) < 0:
        raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}.")


@dataclasses.dataclass(frozen=True)
class EvalConfig(Section):
  """The ``eval`` section: validation loss at multiples of the training length.

  Attributes:
    every_steps: validation cadence (0 = only at the end of training).
    num_batches: validation batches per length (the same batches every time).
    global_batch_size: sequences per eval batch; None = ``train.global_batch_size``.
    length_multipliers: evaluate at these multiples of ``train.seq_len`` (length
      generalisation of NoPE / RoPE / p-RoPE); 1 = the training length.
  """

  WHERE: ClassVar[str] = "eval"

  every_steps: int = 100
  num_batches: int = 2
  global_batch_size: int | None = None
  length_multipliers: tuple[int, ...] = (1, 2, 4)

  def __post_init__(self):
    check_fields(self)
    if self.every_steps < 0:
      raise ValueError(f"eval.every_steps must be >= 0, got {self.every_steps}.")
    if self.num_batches < 0:
      raise ValueError(f"eval.num_batches must be >= 0, got {self.num_batches}.")
    if self.global_batch_size is not None and self.global_batch_size <= 0:
      raise ValueError(f"eval.global_batch_size must be positive, got {self.global_batch_size}.")
    if any(m < 1 for m in self.length_multipliers):
      raise ValueError(f"eval.length_multipliers must be ints >= 1, got "
                       f"{self.length_multipliers}.")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig(Section):
  """The ``checkpoint`` section (saved under ``<workdir>/checkpoints``).

  Attributes:
    enabled: save and resume at all.
    save_every_steps: save every N steps (and always at the end and on SIGTERM).
    max_to_keep: keep the last K checkpoints.
    async_save: write in a background thread while training continues.
    init_from: "" or "<workdir>[:step]": a run with no checkpoint of its own starts from that
      run's parameters, with a fresh optimizer state and step (``rope_jax.training.warm_start``);
      e.g. continued pre-training with another positional encoding.
  """

  WHERE: ClassVar[str] = "checkpoint"

  enabled: bool = True
  save_every_steps: int = 1000
  max_to_keep: int = 3
  async_save: bool = True
  init_from: str = ""

  def __post_init__(self):
    check_fields(self)
    if self.save_every_steps <= 0:
      raise ValueError(f"checkpoint.save_every_steps must be positive, got "
                       f"{self.save_every_steps}.")
    if self.max_to_keep <= 0:
      raise ValueError(f"checkpoint.max_to_keep must be positive, got {self.max_to_keep}.")


def normalize_rules(rules: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
  """Rules as ``((name, (mesh_axis, ...)), ...)``; checks names against ``MESH_AXES``."""
  out = []
  seen = set()
  for rule in rules:
    if len(rule) != 2 or not isinstance(rule[0], str):
      raise ValueError(f"A logical axis rule must be (name, mesh_axes), got {rule!r}.")
    name, axes = rule
    if axes is None:
      axes = ()
    elif isinstance(axes, str):
      axes = (axes,)
    axes = tuple(axes)
    for a in axes:
      if a not in MESH_AXES:
        raise ValueError(f"Logical axis rule {name!r} -> {a!r}: unknown mesh axis; "
                         f"allowed: {MESH_AXES}.")
    if name in seen:
      raise ValueError(f"Logical axis {name!r} has two rules; give each name one rule.")
    seen.add(name)
    out.append((name, axes))
  return tuple(out)


@dataclasses.dataclass(frozen=True)
class MeshConfig(Section):
  """The ``mesh`` section (``rope_jax.sharding``).

  Attributes:
    data, fsdp, tensor: ICI parallelism per axis (devices within one slice); exactly one may be
      -1, meaning "all remaining devices".
    dcn_data, dcn_fsdp, dcn_tensor: DCN parallelism per axis (number of slices along it; all 1
      on one slice). The product is the number of slices.
    logical_axis_rules: ``((logical_name, mesh_axis | (mesh_axes...) | None), ...)``.
  """

  WHERE: ClassVar[str] = "mesh"

  data: int = -1
  fsdp: int = 1
  tensor: int = 1
  dcn_data: int = 1
  dcn_fsdp: int = 1
  dcn_tensor: int = 1
  logical_axis_rules: tuple[tuple[str, Any], ...] = DEFAULT_RULES

  def __post_init__(self):
    check_fields(self)
    ici = self.ici_shape
    if sum(1 for s in ici if s == -1) > 1:
      raise ValueError(f"At most one of mesh.data/fsdp/tensor may be -1, got {ici}.")
    for name, s in zip(MESH_AXES, ici):
      if s == 0 or s < -1 or isinstance(s, bool) or not isinstance(s, (int, np.integer)):
        raise ValueError(f"mesh.{name} must be a positive int or -1, got {s!r}.")
    for name, s in zip(MESH_AXES, self.dcn_shape):
      if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
        raise ValueError(f"mesh.dcn_{name} must be a positive int, got {s!r}.")
    object.__setattr__(self, "logical_axis_rules", normalize_rules(self.logical_axis_rules))

  @property
  def ici_shape(self) -> tuple[int, int, int]:
    return (self.data, self.fsdp, self.tensor)

  @property
  def dcn_shape(self) -> tuple[int, int, int]:
    return (self.dcn_data, self.dcn_fsdp, self.dcn_tensor)


# Every top-level section of an experiment config: name -> its dataclass.
SECTIONS: dict[str, type] = {"model": ModelConfig, "train": TrainConfig, "eval": EvalConfig,
                             "checkpoint": CheckpointConfig, "mesh": MeshConfig,
                             "data": DataConfig}
