"""Hugging Face ``LlamaForCausalLM`` / ``MistralForCausalLM`` / ``GemmaForCausalLM`` checkpoints
in and out of rope_jax params, one tensor at a time.

Import: ``config.json`` gives the ``ModelConfig`` (``rope_jax.weights.hf_config``), the tensors
are read by ``rope_jax.weights.safetensors_io`` (memory-mapped) and placed by
``rope_jax.weights.gemma.load_plan``, so peak host memory is one copy of the params plus about
one tensor. The three families share the tensor names and layouts (PyTorch ``Linear`` weights
``[out, in]``; Hugging Face's q/k rows are already in split-half order, ``rotate_half``).

Export: the inverse transposes and reshapes (no arithmetic, so export -> import is bit for bit),
written as ``model.safetensors`` or, above ``max_shard_bytes``, as
``model-0000i-of-0000n.safetensors`` shards with ``model.safetensors.index.json``; plus
``config.json`` and ``generation_config.json`` (``hf_config.hf_config``) and, for a run whose
tokenizer is a SentencePiece model, ``tokenizer.model`` with ``tokenizer_config.json`` and
``special_tokens_map.json``.

Shapes: D model width, N query heads, K kv heads, H head dim, F MLP width, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from flax import nnx
from jax.sharding import Mesh

from rope_jax.config.schema import ModelConfig, RopeConfig
from rope_jax.errors import BadInputError
from rope_jax.weights import gemma
from rope_jax.weights import hf_config
from rope_jax.weights import safetensors_io

CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
SINGLE_FILE = "model.safetensors"
# Shard above this many bytes of tensors (transformers' save_pretrained default is 5 GB).
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3
TOKENIZER_FILE = "tokenizer.model"
TOKENIZER_CLASSES = {"llama": "LlamaTokenizer", "gemma": "GemmaTokenizer"}
# rope_jax's special ids (rope_jax.data.text) by transformers' name.
SPECIAL_IDS = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}
# config.json fields an imported run carries to its export.
CARRIED = ("bos_token_id", "eos_token_id", "pad_token_id", "max_position_embeddings")

Path = tuple[Any, ...]


# ------------------------------------------------------------------------------------ import


def read_config(src: str) -> dict[str, Any]:
  """``<src>/config.json``; BadInputError when the directory or the file is missing."""
  if not os.path.isdir(src):
    raise BadInputError(f"--src {src!r} is not a directory (want a Hugging Face checkpoint "
                        "directory with config.json and *.safetensors).")
  path = os.path.join(src, CONFIG_FILE)
  if not os.path.exists(path):
    raise BadInputError(f"{src!r} has no {CONFIG_FILE}; the architecture is read from it.")
  with open(path) as f:
    try:
      return json.load(f)
    except ValueError as e:
      raise BadInputError(f"{path}: not JSON ({e}).") from None


def model_fields(src: str) -> tuple[str, dict[str, Any]]:
  """``(family, ModelConfig fields)`` of a checkpoint directory (``rope`` as a dict)."""
  hf = read_config(src)
  return hf_config.architecture(hf), hf_config.model_fields(hf)


def carried_fields(src: str) -> dict[str, Any]:
  """The ``config.json`` fields an export of the imported run writes back (special token ids,
  ``max_position_embeddings``), kept in the import metadata."""
  hf = read_config(src)
  return {k: hf[k] for k in CARRIED if hf.get(k) is not None}


def check_config(cfg: ModelConfig, fields: Mapping[str, Any]) -> None:
  """BadInputError naming the first checkpoint field that disagrees with ``cfg``."""
  for name, value in fields.items():
    ours = getattr(cfg, name)
    if name == "rope":
      theirs = RopeConfig(**value)
      bad = [f.name for f in dataclasses.fields(RopeConfig)
             if getattr(theirs, f.name) != getattr(ours, f.name)]
      if bad or cfg.global_rope is not None:
        raise BadInputError(
            f"The checkpoint's RoPE {value} disagrees with model.rope "
            f"({ {b: getattr(ours, b) for b in bad} }"
            f"{'; model.global_rope is set' if cfg.global_rope is not None else ''}).")
    elif not (np.isclose(value, ours, rtol=1e-6) if name == "norm_eps" else value == ours):
      raise BadInputError(f"The checkpoint's {name} = {value!r} disagrees with the rope_jax "
                          f"config model.{name} = {ours!r}.")


def import_params(src: str, cfg: ModelConfig, *, mesh: Mesh | None = None,
                  rules: Sequence[tuple[str, Any]] | None = None) -> nnx.State:
  """Reads a Hugging Face checkpoint directory into the ``nnx.State`` of ``Transformer(cfg)``.

  ``cfg`` must be the checkpoint's (``model_fields``; checked first, nothing read before).
  ``mesh``/``rules`` lay each parameter out while reading, as ``gemma.load_plan``.
  """
  _, fields = model_fields(src)
  check_config(cfg, fields)
  try:
    source = safetensors_io.SafetensorsReader(src)
  except ValueError as e:
    raise BadInputError(str(e)) from None
  embed = "model.embed_tokens.weight"
  vocab_rows = source.spec(embed)[0][0] if embed in source.keys() else cfg.vocab_size
  plan = gemma.hf_plan(cfg, vocab_rows)
  ignored = {key for key in source.keys() if gemma.HF_IGNORED.search(key)} - {
      s.key for s in plan}
  try:
    gemma.check_plan(source, plan, cfg, src, ignored)
  except ValueError as e:
    raise BadInputError(str(e)) from None
  return gemma.load_plan(source, plan, cfg, mesh=mesh, rules=rules)


# ------------------------------------------------------------------------------------ export


def _q_out(w: np.ndarray) -> np.ndarray:
  """``[D, N, H]`` -> ``[N*H, D]``."""
  return w.reshape(w.shape[0], -1).T


def _o_out(w: np.ndarray) -> np.ndarray:
  """``[N, H, D]`` -> ``[D, N*H]``."""
  return w.reshape(-1, w.shape[-1]).T


def _same(w: np.ndarray) -> np.ndarray:
  return w


def _t(w: np.ndarray) -> np.ndarray:
  return w.T


def export_plan(cfg: ModelConfig) -> list[tuple[str, Path, Callable[[np.ndarray], np.ndarray]]]:
  """``(HF name, params path, params -> HF array)`` of every tensor, in the checkpoint's order."""
  plan: list[tuple[str, Path, Callable[[np.ndarray], np.ndarray]]] = [
      ("model.embed_tokens.weight", ("embedder", "table"), _same)]
  for i in range(cfg.num_layers):
    p, b = f"model.layers.{i}", ("blocks", i)
    plan += [
        (f"{p}.input_layernorm.weight", b + ("pre_attention_norm", "scale"), _same),
        (f"{p}.self_attn.q_proj.weight", b + ("attn", "q_proj"), _q_out),
        (f"{p}.self_attn.k_proj.weight", b + ("attn", "k_proj"), _q_out),
        (f"{p}.self_attn.v_proj.weight", b + ("attn", "v_proj"), _q_out),
        (f"{p}.self_attn.o_proj.weight", b + ("attn", "o_proj"), _o_out),
        (f"{p}.post_attention_layernorm.weight", b + ("pre_ffw_norm", "scale"), _same),
        (f"{p}.mlp.gate_proj.weight", b + ("mlp", "gate"), _t),
        (f"{p}.mlp.up_proj.weight", b + ("mlp", "up"), _t),
        (f"{p}.mlp.down_proj.weight", b + ("mlp", "down"), _t),
    ]
  plan.append(("model.norm.weight", ("final_norm", "scale"), _same))
  if not cfg.tie_embeddings:
    plan.append(("lm_head.weight", ("lm_head",), _same))
  return plan


def _get(tree: Any, path: Path) -> Any:
  for p in path:
    tree = tree[p]
  return tree


def write_safetensors(out: str, params: Mapping[str, Any], cfg: ModelConfig, *,
                      max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> list[str]:
  """Writes the params (a pure dict, ``nnx.to_pure_dict``) as HF tensors; returns the files.

  One tensor is converted at a time (``safetensors_io.save_file_streamed``). Tensors go to
  shards in order, a new shard starting when the next tensor would pass ``max_shard_bytes``.
  """
  plan = export_plan(cfg)
  specs: dict[str, tuple[tuple[int, ...], np.dtype, Path, Callable]] = {}
  for name, path, fn in plan:
    leaf = _get(params, path)
    shape = fn(np.empty(leaf.shape, dtype=np.uint8)).shape  # A view: nothing is copied.
    specs[name] = (shape, np.dtype(leaf.dtype), path, fn)
  shards: list[list[str]] = [[]]
  size = 0
  for name, (shape, dtype, _, _) in specs.items():
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if shards[-1] and size + nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(name)
    size += nbytes
  files = ([SINGLE_FILE] if len(shards) == 1 else
           [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
  os.makedirs(out, exist_ok=True)

  def make(name: str) -> np.ndarray:
    _, _, path, fn = specs[name]
    return fn(np.asarray(_get(params, path)))

  for file, names in zip(files, shards):
    safetensors_io.save_file_streamed(
        os.path.join(out, file), {n: specs[n][:2] for n in names}, make,
        metadata={"format": "pt"})
  if len(files) > 1:
    total = sum(int(np.prod(s[0])) * s[1].itemsize for s in specs.values())
    index = {"metadata": {"total_size": total},
             "weight_map": {n: f for f, names in zip(files, shards) for n in names}}
    with open(os.path.join(out, safetensors_io.INDEX_FILE), "w") as f:
      json.dump(index, f, indent=2)
    files.append(safetensors_io.INDEX_FILE)
  return files


def proportional_registered() -> bool:
  """Whether the installed transformers (if any) knows the ``"proportional"`` rope type."""
  try:
    from transformers import modeling_rope_utils  # pylint: disable=g-import-not-at-top
  except ImportError:
    return True  # Nothing to ask: written for transformers >= 5 (Gemma 4 registers it).
  return hf_config.PROPORTIONAL in modeling_rope_utils.ROPE_INIT_FUNCTIONS


def check_vocab(vocab_file: str, vocab_size: int) -> None:
  """BadInputError unless ``vocab_file`` is a SentencePiece model that fits ``vocab_size``."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(vocab_file):
    raise BadInputError(f"SentencePiece vocabulary {vocab_file!r} does not exist.")
  pieces = spm.SentencePieceProcessor(model_file=vocab_file).get_piece_size()
  if pieces > vocab_size:
    raise BadInputError(f"The vocabulary {vocab_file!r} has {pieces} pieces, more than the "
                        f"model's vocab_size={vocab_size}: not the run's tokenizer.")


def write_tokenizer(out: str, vocab_file: str, family: str) -> list[str]:
  """Copies a SentencePiece model as ``tokenizer.model`` with its transformers configs."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  processor = spm.SentencePieceProcessor(model_file=vocab_file)
  piece = {name: processor.id_to_piece(i) for name, i in SPECIAL_IDS.items()}
  unk = processor.id_to_piece(processor.unk_id())
  shutil.copyfile(vocab_file, os.path.join(out, TOKENIZER_FILE))
  special = {"bos_token": piece["bos_token_id"], "eos_token": piece["eos_token_id"],
             "pad_token": piece["pad_token_id"], "unk_token": unk}
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top
  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(processor.serialized_model_proto())
  tokenizer_config = {"tokenizer_class": TOKENIZER_CLASSES[family], "add_bos_token": True,
                      "add_eos_token": False, "legacy": False, "model_max_length": 1 << 20,
                      # transformers' default adds a "▁" before the text; the model says.
                      "add_prefix_space": bool(proto.normalizer_spec.add_dummy_prefix),
                      "sp_model_kwargs": {}, **special}
  for name, content in (("tokenizer_config.json", tokenizer_config),
                        ("special_tokens_map.json", special)):
    with open(os.path.join(out, name), "w") as f:
      json.dump(content, f, indent=2)
  return [TOKENIZER_FILE, "tokenizer_config.json", "special_tokens_map.json"]


def export(out: str, params: Mapping[str, Any], cfg: ModelConfig, *, max_position_embeddings: int,
           vocab_file: str | None = None, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
           special_ids: Mapping[str, int] | None = None) -> list[str]:
  """Writes a transformers checkpoint directory of a run; returns the files written.

  ``special_ids``: ``bos_token_id`` etc. (default: rope_jax's own, ``SPECIAL_IDS``).
  Refuses (BadInputError, before writing anything) a run with no exact transformers
  equivalent: ``hf_config.hf_config`` names the field.
  """
  dtypes = {str(np.dtype(leaf.dtype)) for leaf in jax_leaves(params)}
  if len(dtypes) != 1:
    raise BadInputError(f"The run's params mix dtypes {sorted(dtypes)}; export needs one.")
  config, generation = hf_config.hf_config(
      cfg, max_position_embeddings=max_position_embeddings, dtype=dtypes.pop(),
      proportional_ok=proportional_registered(),
      special_ids=SPECIAL_IDS if special_ids is None else special_ids)
  if os.path.exists(out) and os.listdir(out):
    raise BadInputError(f"--out {out!r} exists and is not empty; give a new directory.")
  if vocab_file:
    check_vocab(vocab_file, cfg.vocab_size)
  files = write_safetensors(out, params, cfg, max_shard_bytes=max_shard_bytes)
  for name, content in ((CONFIG_FILE, config), (GENERATION_CONFIG_FILE, generation)):
    with open(os.path.join(out, name), "w") as f:
      json.dump(content, f, indent=2)
    files.append(name)
  if vocab_file:
    files += write_tokenizer(out, vocab_file, config["model_type"])
  return files


def jax_leaves(tree: Any) -> list[Any]:
  """The array leaves of a pure-dict params tree."""
  if isinstance(tree, Mapping):
    return [leaf for v in tree.values() for leaf in jax_leaves(v)]
  return [tree]
