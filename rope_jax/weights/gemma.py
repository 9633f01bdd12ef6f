"""Official Gemma 1 weights (2B, 7B) as rope_jax params, streamed one tensor at a time.

Two source layouts:

* ``"hf"``: Hugging Face ``google/gemma-2b`` / ``google/gemma-7b`` (``*.safetensors``, possibly
  sharded with ``model.safetensors.index.json``, plus ``config.json``). PyTorch ``Linear``
  weights are ``[out, in]``: ``q_proj [N·H, D]``, ``k_proj``/``v_proj [K·H, D]``,
  ``o_proj [D, N·H]``, ``gate_proj``/``up_proj [F, D]``, ``down_proj [D, F]``.
* ``"flax"``: the gemma library's Orbax params (``gemma.params.load_params``):
  ``transformer/embedder/input_embedding [V, D]``; per layer ``attn/q_einsum/w [N, D, H]`` and
  ``attn/kv_einsum/w [2, K, D, H]`` (MQA/GQA) or ``attn/qkv_einsum/w [3, N, D, H]`` (MHA),
  ``attn/attn_vec_einsum/w [N, H, D]``, ``mlp/gating_einsum/w [2, D, F]`` (gate, up; the
  ``[2, F, D]`` orientation of ``transpose_gating_einsum`` checkpoints is recognised),
  ``mlp/linear/w [F, D]``, ``pre_attention_norm/scale``, ``pre_ffw_norm/scale``; and
  ``transformer/final_norm/scale``.

Both store RMSNorm scales for ``(1 + scale)`` and the un-scaled embedding table, as rope_jax
does, and both use split-half RoPE, so no head-dim permutation is needed (unlike the Llama
conversion); the equivalence tests against Hugging Face's PyTorch Gemma check exactly this.

Memory: the target model is built abstractly (``model.abstract_model``: nothing allocated), then
each parameter is created from one source tensor (memory-mapped for safetensors) with
``jax.make_array_from_callback`` straight into its ``NamedSharding`` when a mesh is given, and
the host copy is dropped before the next one. Peak host memory is one copy of the params plus
about one tensor (measured by ``benchmarks/import_memory.py``).

Every mismatch raises ``ValueError`` naming the offending checkpoint key and rope_jax config
field: a missing tensor, a wrong shape, a tensor the model has no place for, an unknown layout,
or a checkpoint config that disagrees with the chosen ``ModelConfig``.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
from typing import Any, Callable, Protocol, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, SingleDeviceSharding

from rope_jax import rope as rope_lib
from rope_jax.checkpoint import manager as checkpoint_lib
from rope_jax.model import transformer as model_lib
from rope_jax import sharding as sharding_lib
from rope_jax.weights import safetensors_io

LAYOUTS = ("hf", "flax")
HF_CONFIG_FILE = "config.json"
# config.json field -> ModelConfig field.
HF_CONFIG_FIELDS = {
    "vocab_size": "vocab_size", "num_hidden_layers": "num_layers", "hidden_size": "embed_dim",
    "num_attention_heads": "num_heads", "num_key_value_heads": "num_kv_heads",
    "head_dim": "head_dim", "intermediate_size": "mlp_dim", "rms_norm_eps": "norm_eps",
}
HF_GELU_TANH = ("gelu", "gelu_pytorch_tanh", "gelu_new", "gelu_fast")  # All tanh-GELU in HF Gemma.
# Source tensors the model legitimately has no place for.
_HF_IGNORED = re.compile(r"^lm_head\.weight$|\.rotary_emb\.inv_freq$")

Path = tuple[Any, ...]  # A key path into the params pure dict, e.g. ("blocks", 0, "attn", "q_proj").


class TensorSource(Protocol):
  """Read access to a checkpoint's tensors by name, one at a time."""

  def keys(self) -> list[str]: ...

  def spec(self, name: str) -> tuple[tuple[int, ...], np.dtype]: ...

  def read(self, name: str) -> np.ndarray: ...


class OrbaxParamsReader:
  """The tensors of an Orbax PyTree checkpoint, named by their ``/``-joined tree path.

  The gemma library saves ``{"transformer/layer_0/attn/q_einsum": {"w": ...}, ...}``, so the
  names are ``"transformer/layer_0/attn/q_einsum/w"`` (a fully nested tree gives the same).
  ``read`` restores that single leaf as a numpy array, through ``checkpoint.manager.open_tree``
  (the one module that talks to Orbax).
  """

  def __init__(self, path: str):
    self.path = os.path.abspath(path)
    self._tree = checkpoint_lib.open_tree(self.path)
    self._leaves = {"/".join(keys): keys for keys in self._tree.leaves}

  def keys(self) -> list[str]:
    return list(self._leaves)

  def spec(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
    leaf = self._tree.leaves[self._leaves[name]]
    return tuple(leaf.shape), np.dtype(leaf.dtype)

  def read(self, name: str) -> np.ndarray:
    return self._tree.read(self._leaves[name])


# ----------------------------------------------------------------------------------- layouts


def detect_layout(path: str) -> str:
  """``"hf"`` or ``"flax"`` from the files at ``path``; ValueError when it is neither."""
  if os.path.isfile(path) and (path.endswith(".safetensors") or path.endswith(".index.json")):
    return "hf"
  if os.path.isdir(path):
    if glob.glob(os.path.join(path, "*.safetensors")) or os.path.exists(
        os.path.join(path, safetensors_io.INDEX_FILE)):
      return "hf"
    if any(os.path.exists(os.path.join(path, f))
           for f in ("_METADATA", "_CHECKPOINT_METADATA", "checkpoint")):
      return "flax"
  raise ValueError(
      f"Unknown checkpoint layout at {path!r}: expected a Hugging Face checkpoint (a directory "
      f"with *.safetensors or {safetensors_io.INDEX_FILE}, and config.json) or the gemma "
      f"library's Orbax params directory (with _METADATA). Pass layout= one of {LAYOUTS}.")


def open_source(path: str, layout: str = "auto") -> tuple[str, TensorSource]:
  """``(layout, reader)`` for a checkpoint path; ``layout="auto"`` detects it."""
  if layout == "auto":
    layout = detect_layout(path)
  if layout not in LAYOUTS:
    raise ValueError(f"Unknown checkpoint layout {layout!r}; known: {LAYOUTS} (or 'auto').")
  if not os.path.exists(path):
    raise ValueError(f"Checkpoint path {path!r} does not exist.")
  if layout == "hf":
    return layout, safetensors_io.SafetensorsReader(path)
  return layout, OrbaxParamsReader(path)


@dataclasses.dataclass(frozen=True)
class SourceTensor:
  """One checkpoint tensor and the rope_jax params it fills.

  Attributes:
    key: the checkpoint's name for it.
    shape: its expected shape.
    dims: the expected shape in words, for error messages (``"[N*H, D]"``).
    targets: ``(params path, transform)`` pairs; ``transform`` maps the source array to the
      parameter's shape (a view where possible: transposes and reshapes copy nothing).
  """

  key: str
  shape: tuple[int, ...]
  dims: str
  targets: tuple[tuple[Path, Callable[[np.ndarray], np.ndarray]], ...]


def _identity(w: np.ndarray) -> np.ndarray:
  return w


def _t(w: np.ndarray) -> np.ndarray:
  return w.T


def _pad_rows(rows: int) -> Callable[[np.ndarray], np.ndarray]:
  """Zero-pads a ``[V_src, D]`` table to ``rows`` rows (Gemma's HF vocab is 256000, Flax 256128)."""
  def pad(w: np.ndarray) -> np.ndarray:
    if w.shape[0] == rows:
      return w
    return np.concatenate([w, np.zeros((rows - w.shape[0],) + w.shape[1:], w.dtype)])
  return pad


def hf_plan(cfg: model_lib.ModelConfig, vocab_rows: int) -> list[SourceTensor]:
  """The Hugging Face tensors of a Gemma 1 ``cfg`` and where each goes."""
  d, n, k, h, f = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
  plan = [SourceTensor("model.embed_tokens.weight", (vocab_rows, d), "[vocab_size, D]",
                       ((("embedder", "table"), _pad_rows(cfg.vocab_size)),))]
  for i in range(cfg.num_layers):
    p, b = f"model.layers.{i}", ("blocks", i)
    plan += [
        SourceTensor(f"{p}.input_layernorm.weight", (d,), "[D]",
                     ((b + ("pre_attention_norm", "scale"), _identity),)),
        SourceTensor(f"{p}.self_attn.q_proj.weight", (n * h, d), "[N*H, D]",
                     ((b + ("attn", "q_proj"), lambda w: w.T.reshape(d, n, h)),)),
        SourceTensor(f"{p}.self_attn.k_proj.weight", (k * h, d), "[K*H, D]",
                     ((b + ("attn", "k_proj"), lambda w: w.T.reshape(d, k, h)),)),
        SourceTensor(f"{p}.self_attn.v_proj.weight", (k * h, d), "[K*H, D]",
                     ((b + ("attn", "v_proj"), lambda w: w.T.reshape(d, k, h)),)),
        SourceTensor(f"{p}.self_attn.o_proj.weight", (d, n * h), "[D, N*H]",
                     ((b + ("attn", "o_proj"), lambda w: w.T.reshape(n, h, d)),)),
        SourceTensor(f"{p}.post_attention_layernorm.weight", (d,), "[D]",
                     ((b + ("pre_ffw_norm", "scale"), _identity),)),
        SourceTensor(f"{p}.mlp.gate_proj.weight", (f, d), "[F, D]", ((b + ("mlp", "gate"), _t),)),
        SourceTensor(f"{p}.mlp.up_proj.weight", (f, d), "[F, D]", ((b + ("mlp", "up"), _t),)),
        SourceTensor(f"{p}.mlp.down_proj.weight", (d, f), "[D, F]", ((b + ("mlp", "down"), _t),)),
    ]
  plan.append(SourceTensor("model.norm.weight", (d,), "[D]",
                           ((("final_norm", "scale"), _identity),)))
  return plan


def _kth(i: int, fn: Callable[[np.ndarray], np.ndarray] = _identity):
  return lambda w: fn(w[i])


def _heads_last(w: np.ndarray) -> np.ndarray:
  """gemma's ``[N, D, H]`` -> rope_jax's ``[D, N, H]``."""
  return w.transpose(1, 0, 2)


def flax_plan(cfg: model_lib.ModelConfig, source: TensorSource, prefix: str,
              vocab_rows: int) -> list[SourceTensor]:
  """The gemma-library tensors of a Gemma 1 ``cfg`` and where each goes.

  The attention einsums (``qkv_einsum`` vs ``q_einsum`` + ``kv_einsum``) and the gating
  orientation are taken from what the checkpoint holds.
  """
  d, n, k, h, f = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
  keys = set(source.keys())
  plan = [SourceTensor(f"{prefix}embedder/input_embedding", (vocab_rows, d), "[vocab_size, D]",
                       ((("embedder", "table"), _pad_rows(cfg.vocab_size)),))]
  for i in range(cfg.num_layers):
    a, b = f"{prefix}layer_{i}/", ("blocks", i)
    if f"{a}attn/qkv_einsum/w" in keys or (n == k and f"{a}attn/q_einsum/w" not in keys):
      plan.append(SourceTensor(f"{a}attn/qkv_einsum/w", (3, n, d, h), "[3, N, D, H]", (
          (b + ("attn", "q_proj"), _kth(0, _heads_last)),
          (b + ("attn", "k_proj"), _kth(1, _heads_last)),
          (b + ("attn", "v_proj"), _kth(2, _heads_last)))))
    else:
      plan += [
          SourceTensor(f"{a}attn/q_einsum/w", (n, d, h), "[N, D, H]",
                       ((b + ("attn", "q_proj"), _heads_last),)),
          SourceTensor(f"{a}attn/kv_einsum/w", (2, k, d, h), "[2, K, D, H]", (
              (b + ("attn", "k_proj"), _kth(0, _heads_last)),
              (b + ("attn", "v_proj"), _kth(1, _heads_last)))),
      ]
    gating = f"{a}mlp/gating_einsum/w"
    transposed = (f != d and gating in keys and source.spec(gating)[0] == (2, f, d))
    plan += [
        SourceTensor(f"{a}attn/attn_vec_einsum/w", (n, h, d), "[N, H, D]",
                     ((b + ("attn", "o_proj"), _identity),)),
        SourceTensor(gating, (2, f, d) if transposed else (2, d, f),
                     "[2, F, D]" if transposed else "[2, D, F]", (
                         (b + ("mlp", "gate"), _kth(0, _t if transposed else _identity)),
                         (b + ("mlp", "up"), _kth(1, _t if transposed else _identity)))),
        SourceTensor(f"{a}mlp/linear/w", (f, d), "[F, D]", ((b + ("mlp", "down"), _identity),)),
        SourceTensor(f"{a}pre_attention_norm/scale", (d,), "[D]",
                     ((b + ("pre_attention_norm", "scale"), _identity),)),
        SourceTensor(f"{a}pre_ffw_norm/scale", (d,), "[D]",
                     ((b + ("pre_ffw_norm", "scale"), _identity),)),
    ]
  plan.append(SourceTensor(f"{prefix}final_norm/scale", (d,), "[D]",
                           ((("final_norm", "scale"), _identity),)))
  return plan


def flax_prefix(source: TensorSource) -> str:
  """The path prefix of the gemma params (``"transformer/"`` as the library saves them)."""
  for key in source.keys():
    if key.endswith("embedder/input_embedding"):
      return key[: -len("embedder/input_embedding")]
  raise ValueError("Not a gemma-library params checkpoint: no 'embedder/input_embedding' tensor "
                   f"(tensors: {sorted(source.keys())[:8]}...).")


# ------------------------------------------------------------------------- config inference


def read_hf_config(path: str) -> dict[str, Any] | None:
  """``config.json`` next to a Hugging Face checkpoint, or None when there is none."""
  directory = path if os.path.isdir(path) else os.path.dirname(path)
  file = os.path.join(directory, HF_CONFIG_FILE)
  if not os.path.exists(file):
    return None
  with open(file) as f:
    return json.load(f)


def hf_rope_theta(hf_config: dict[str, Any]) -> float | None:
  """θ from ``rope_theta`` (transformers 4) or ``rope_parameters.rope_theta`` (5)."""
  if "rope_theta" in hf_config:
    return float(hf_config["rope_theta"])
  params = hf_config.get("rope_parameters") or {}
  return float(params["rope_theta"]) if "rope_theta" in params else None


def infer_model_fields(path: str, layout: str = "auto") -> dict[str, Any]:
  """The ``ModelConfig`` sizes (and θ, ε where recorded) of a checkpoint.

  Hugging Face: from ``config.json``. Flax: from the tensor shapes (θ = 10,000, ε = 1e-6 as
  every Gemma 1 model). Returns a dict for ``config.model.update(...)``.
  """
  layout, source = open_source(path, layout)
  if layout == "hf":
    hf = read_hf_config(path)
    if hf is None:
      raise ValueError(f"{path}: no {HF_CONFIG_FILE}; pass a rope_jax config instead.")
    _check_hf_architecture(hf)
    fields = {ours: hf[theirs] for theirs, ours in HF_CONFIG_FIELDS.items() if theirs in hf}
    fields.setdefault("num_kv_heads", fields.get("num_heads"))
    if "head_dim" not in fields:
      fields["head_dim"] = fields["embed_dim"] // fields["num_heads"]
    theta = hf_rope_theta(hf)
    if theta is not None:
      fields["rope"] = dict(theta=theta)
    return fields
  return _flax_fields(source, flax_prefix(source))


def _flax_fields(source: TensorSource, prefix: str) -> dict[str, Any]:
  """``ModelConfig`` sizes from a gemma-library checkpoint's shapes."""
  keys = set(source.keys())
  layers = [int(m.group(1)) for key in keys
            for m in [re.match(re.escape(prefix) + r"layer_(\d+)/", key)] if m]
  if not layers:
    raise ValueError(f"No '{prefix}layer_<i>/...' tensors in this gemma checkpoint.")
  vocab, d = source.spec(f"{prefix}embedder/input_embedding")[0]
  a = f"{prefix}layer_0/attn/"
  if f"{a}qkv_einsum/w" in keys:
    _, n, _, h = source.spec(f"{a}qkv_einsum/w")[0]
    k = n
  elif f"{a}q_einsum/w" in keys and f"{a}kv_einsum/w" in keys:
    n, _, h = source.spec(f"{a}q_einsum/w")[0]
    k = source.spec(f"{a}kv_einsum/w")[0][1]
  else:
    raise ValueError(f"Missing tensor {a}qkv_einsum/w (or {a}q_einsum/w + {a}kv_einsum/w).")
  if f"{prefix}layer_0/mlp/linear/w" not in keys:
    raise ValueError(f"Missing tensor {prefix}layer_0/mlp/linear/w [F, D].")
  mlp = source.spec(f"{prefix}layer_0/mlp/linear/w")[0][0]
  return dict(vocab_size=vocab, num_layers=max(layers) + 1, embed_dim=d, num_heads=n,
              num_kv_heads=k, head_dim=h, mlp_dim=mlp)


def _check_hf_architecture(hf: dict[str, Any]) -> None:
  """Only Gemma 1 maps onto rope_jax's decoder (no post-norms, soft-caps or sliding windows)."""
  model_type = hf.get("model_type", "gemma")
  if model_type != "gemma":
    raise ValueError(f"config.json 'model_type' is {model_type!r}; only Gemma 1 ('gemma') maps "
                     "onto rope_jax's decoder.")
  act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu"
  if act not in HF_GELU_TANH:
    raise ValueError(f"config.json 'hidden_act' is {act!r}; rope_jax's GeGLU uses tanh-GELU "
                     f"(one of {HF_GELU_TANH}).")
  if hf.get("tie_word_embeddings") is False:
    raise ValueError("config.json 'tie_word_embeddings' is false; rope_jax ties the output "
                     "layer to the embedding table.")
  if hf.get("attention_bias"):
    raise ValueError("config.json 'attention_bias' is true; rope_jax's attention has no biases.")


def check_config(cfg: model_lib.ModelConfig, fields: dict[str, Any], *, where: str,
                 names: dict[str, str] | None = None, pad_vocab: bool = False) -> None:
  """Raises ValueError on the first checkpoint field that disagrees with ``cfg``.

  Args:
    cfg: the chosen rope_jax model config.
    fields: checkpoint values by ``ModelConfig`` field (``rope`` as a dict of RoPE fields).
    where: what the checkpoint is, for the message (``"config.json"``).
    names: the checkpoint's own name of each field (``{"embed_dim": "hidden_size"}``).
    pad_vocab: a checkpoint vocabulary smaller than ``cfg.vocab_size`` is allowed (padded).
  """
  names = names or {}
  for field, value in fields.items():
    if field == "rope":
      continue
    ours = getattr(cfg, field)
    ok = (np.isclose(value, ours, rtol=1e-6) if field == "norm_eps" else value == ours)
    if field == "vocab_size" and pad_vocab:
      ok = value <= ours
    if not ok:
      hint = ""
      if field == "vocab_size":
        hint = (f" Set --config.model.vocab_size={value}, or pad_vocab=True (--pad_vocab) to "
                "zero-pad the table when the checkpoint's vocabulary is smaller.")
      raise ValueError(f"Checkpoint {where} {names.get(field, field)!r} = {value} disagrees with "
                       f"the rope_jax config model.{field} = {ours}.{hint}")
  theta = (fields.get("rope") or {}).get("theta", rope_lib.DEFAULT_THETA)
  expected = model_lib.RopeConfig(theta=theta)
  for name, rope in (("rope", cfg.rope), ("global_rope", cfg.global_rope)):
    if rope is None:
      continue
    for f in dataclasses.fields(model_lib.RopeConfig):
      ours, theirs = getattr(rope, f.name), getattr(expected, f.name)
      if ours != theirs:
        raise ValueError(f"Gemma 1 checkpoints use full split-half RoPE (variant='p_rope', "
                         f"fraction=1, theta={theta:g}, scale_factor=1); the rope_jax config has "
                         f"model.{name}.{f.name} = {ours!r}, the checkpoint {theirs!r}.")


# ------------------------------------------------------------------------------------ import


def build_plan(path: str, cfg: model_lib.ModelConfig, *, layout: str = "auto",
               pad_vocab: bool = False) -> tuple[TensorSource, list[SourceTensor]]:
  """Opens a checkpoint, checks it against ``cfg`` and returns ``(source, plan)``.

  Nothing but headers and metadata is read. Raises ValueError naming the key on a config
  mismatch, a missing tensor, a wrong shape or a tensor the model has no place for.
  """
  layout, source = open_source(path, layout)
  keys = set(source.keys())
  if layout == "hf":
    hf = read_hf_config(path)
    if hf is not None:
      _check_hf_architecture(hf)
      fields = {ours: hf[theirs] for theirs, ours in HF_CONFIG_FIELDS.items() if theirs in hf}
      if hf_rope_theta(hf) is not None:
        fields["rope"] = dict(theta=hf_rope_theta(hf))
      check_config(cfg, fields, where=HF_CONFIG_FILE,
                   names={v: k for k, v in HF_CONFIG_FIELDS.items()}, pad_vocab=pad_vocab)
    embed = "model.embed_tokens.weight"
    vocab_rows = source.spec(embed)[0][0] if embed in keys else cfg.vocab_size
    plan = hf_plan(cfg, vocab_rows)
    ignored = {key for key in keys if _HF_IGNORED.search(key)}
  else:
    prefix = flax_prefix(source)
    fields = _flax_fields(source, prefix)
    check_config(cfg, fields, where="tensor shapes", pad_vocab=pad_vocab, names={
        "num_layers": f"{prefix}layer_<i> count", "vocab_size": f"{prefix}embedder rows"})
    vocab_rows = fields["vocab_size"]
    plan = flax_plan(cfg, source, prefix, vocab_rows)
    ignored = set()
  if vocab_rows > cfg.vocab_size or (vocab_rows < cfg.vocab_size and not pad_vocab):
    check_config(cfg, {"vocab_size": vocab_rows}, where="embedding rows", pad_vocab=pad_vocab)
  for src in plan:
    if src.key not in keys:
      raise ValueError(f"Missing tensor {src.key!r} {src.dims} in the checkpoint at {path!r} "
                       f"(needed for rope_jax param {_name(src.targets[0][0])}).")
    shape = source.spec(src.key)[0]
    if shape != src.shape:
      raise ValueError(
          f"Tensor {src.key!r} has shape {shape}, expected {src.shape} = {src.dims} with "
          f"D={cfg.embed_dim}, N={cfg.num_heads}, K={cfg.num_kv_heads}, H={cfg.head_dim}, "
          f"F={cfg.mlp_dim} from the rope_jax config.")
  unused = sorted(keys - {src.key for src in plan} - ignored)
  if unused:
    raise ValueError(f"The checkpoint has {len(unused)} tensor(s) the rope_jax model has no place "
                     f"for (another architecture, or more layers than model.num_layers="
                     f"{cfg.num_layers}?): {unused[:5]}{' ...' if len(unused) > 5 else ''}")
  return source, plan


def _name(path: Path) -> str:
  return ".".join(str(p) for p in path)


def _get(tree: dict, path: Path) -> Any:
  for p in path:
    tree = tree[p]
  return tree


def _set(tree: dict, path: Path, value: Any) -> None:
  for p in path[:-1]:
    tree = tree[p]
  tree[path[-1]] = value


def place(array: np.ndarray, dtype: np.dtype, sharding: jax.sharding.Sharding) -> jax.Array:
  """A host array (or a view of one) as a ``jax.Array`` with ``sharding``, cast to ``dtype``.

  Each device gets only its own slice (``make_array_from_callback``), so on a multi-host mesh
  a process copies only the shards it holds.
  """
  return jax.make_array_from_callback(
      array.shape, sharding, lambda index: np.array(array[index], dtype=dtype, order="C"))


def import_params(
    path: str,
    cfg: model_lib.ModelConfig,
    *,
    layout: str = "auto",
    mesh: Mesh | None = None,
    rules: Sequence[tuple[str, Any]] | None = None,
    pad_vocab: bool = False,
) -> nnx.State:
  """Reads an official Gemma 1 checkpoint into rope_jax params, one tensor at a time.

  Args:
    path: Hugging Face directory / ``.safetensors`` / index file, or gemma Orbax params dir.
    cfg: the rope_jax model config; must match the checkpoint (checked first).
    layout: ``"hf"``, ``"flax"`` or ``"auto"``.
    mesh: lay each parameter out on this mesh (by its logical axis names and ``rules``);
      None puts everything on the first device.
    rules: logical axis rules; default ``sharding.DEFAULT_RULES``.
    pad_vocab: zero-pad a smaller checkpoint vocabulary to ``cfg.vocab_size`` (HF Gemma has
      256,000 rows, the gemma library's tables 256,128).

  Returns:
    The ``nnx.State`` of the model's ``nnx.Param``s (``nnx.merge`` it with the graphdef of
    ``Transformer(cfg)``, or use :func:`import_model`).
  """
  source, plan = build_plan(path, cfg, layout=layout, pad_vocab=pad_vocab)
  return load_plan(source, plan, cfg, mesh=mesh, rules=rules)


def load_plan(source: TensorSource, plan: Sequence[SourceTensor], cfg: model_lib.ModelConfig, *,
              mesh: Mesh | None = None, rules: Sequence[tuple[str, Any]] | None = None
              ) -> nnx.State:
  """Places every tensor of a checked ``plan`` (:func:`build_plan`), one source tensor at a time.

  Returns:
    The ``nnx.State`` of ``Transformer(cfg)``'s ``nnx.Param``s.
  """
  _, state = model_lib.abstract_model(cfg)
  targets = nnx.to_pure_dict(state)
  if mesh is not None:
    rules = sharding_lib.normalize_rules(sharding_lib.DEFAULT_RULES if rules is None else rules)
    shardings = nnx.to_pure_dict(sharding_lib.param_shardings(state, mesh, rules))
  else:
    shardings = jax.tree.map(lambda _: SingleDeviceSharding(jax.local_devices()[0]), targets)
  values = jax.tree.map(lambda _: None, targets)
  for src in plan:
    array = source.read(src.key)
    for target, transform in src.targets:
      spec = _get(targets, target)
      view = transform(array)
      if view.shape != spec.shape:  # The plan's shapes come from cfg, so this is a bug.
        raise AssertionError(f"{src.key} -> {_name(target)}: {view.shape} != {spec.shape}")
      _set(values, target, place(view, spec.dtype, _get(shardings, target)))
      del view
    del array  # Drop the host copy (or mapping) before the next tensor.
  nnx.replace_by_pure_dict(state, values)
  return state


def import_model(path: str, cfg: model_lib.ModelConfig, **kwargs: Any) -> model_lib.Transformer:
  """:func:`import_params` merged into a ``Transformer`` (same keyword arguments)."""
  state = import_params(path, cfg, **kwargs)
  graphdef, _ = model_lib.abstract_model(cfg)
  return nnx.merge(graphdef, state)
