"""Tokenization: the special ids, which vocabulary a run uses, and the one tokenizer loader.

Every vocabulary here follows Gemma's special ids (pad 0, eos 1, bos 2, unk 3); loading one that
does not raises. Paths may be local or ``gs://`` (remote files are read through ``tf.io.gfile``;
local ones need no TensorFlow). ``"bytes"`` stands for UTF-8 bytes as token ids (byte-level runs,
tests).

* :func:`vocab_path`: which SentencePiece file a data config (or an override) names.
* :func:`load_sentencepiece`: the loader (cached): checks the file and its special ids.
* :func:`load_tokenizer`: a run's tokenizer for sampling and analysis (``"bytes"`` or a path,
  else the run config's ``data`` section).
* :func:`seqio_vocabulary`: the same file as a ``seqio`` vocabulary, for the seqio tasks.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from rope_jax.data.config import TFDS_TASKS

# Special token ids (Gemma's convention), shared by every vocabulary and the packer.
PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3
BYTES = "bytes"
OFFLINE_VOCAB_SIZE = 2048
OFFLINE_VOCAB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets",
                             f"offline_sp{OFFLINE_VOCAB_SIZE}.model")

GEMMA_VOCAB_HELP = (
    "point data.vocab_path at Gemma's SentencePiece model `tokenizer.model` (256,000 pieces; "
    "it ships with the Gemma weights, e.g. the Kaggle/Hugging Face Gemma releases), as a local "
    "path or gs://bucket/path")
OFFLINE_VOCAB_HELP = (
    "regenerate the offline vocabulary with "
    "`python -m rope_jax.data.offline_corpus --write_vocab PATH` and point data.vocab_path at it")
OVERRIDE_HELP = "pass a SentencePiece model with Gemma's special ids (pad 0, eos 1, bos 2)"


class Tokenizer(Protocol):
  """What sampling and analysis need of a tokenizer."""

  vocab_size: int

  def encode(self, text: str) -> list[int]: ...

  def decode(self, ids: Sequence[int]) -> str: ...

  def piece(self, token_id: int) -> str: ...


class ByteTokenizer:
  """UTF-8 bytes as token ids; ids >= 256 decode to nothing."""

  vocab_size = 256

  def encode(self, text: str) -> list[int]:
    return list(text.encode("utf-8"))

  def decode(self, ids: Sequence[int]) -> str:
    return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

  def piece(self, token_id: int) -> str:
    return self.decode([token_id])


class SentencePieceTokenizer:
  """A SentencePiece model with Gemma's special ids (``processor``: the sentencepiece object)."""

  def __init__(self, processor: Any, path: str):
    self.processor = processor
    self.path = path
    self.vocab_size = int(processor.vocab_size())

  def encode(self, text: str) -> list[int]:
    return [int(i) for i in self.processor.encode(text)]

  def decode(self, ids: Sequence[int]) -> str:
    return self.processor.decode([int(i) for i in ids])

  def piece(self, token_id: int) -> str:
    """The readable piece of one id (``▁`` marks a word start), e.g. for tick labels."""
    return self.processor.id_to_piece(int(token_id))


def vocab_path(data: Mapping[str, Any] | None, override: str = "") -> tuple[str, str]:
  """``(path, help)``: the SentencePiece file of a data config section and how to get it.

  ``override`` wins; else ``data.vocab_path``; else Gemma's vocabulary is required for the TFDS
  tasks (ValueError) and the shipped offline vocabulary serves the others.
  """
  if override:
    return override, OVERRIDE_HELP
  data = data or {}
  task = data.get("task")
  help_text = GEMMA_VOCAB_HELP if task in TFDS_TASKS else OFFLINE_VOCAB_HELP
  if data.get("vocab_path"):
    return data.get("vocab_path"), help_text
  if task in TFDS_TASKS:
    raise ValueError(f"Task {task!r} needs Gemma's vocabulary: {GEMMA_VOCAB_HELP}.")
  return OFFLINE_VOCAB, help_text


def _exists(path: str) -> bool:
  if "://" not in path:
    return os.path.exists(path)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile.exists(path)


@functools.lru_cache(maxsize=8)
def load_sentencepiece(path: str, help_text: str = OFFLINE_VOCAB_HELP) -> SentencePieceTokenizer:
  """Loads a SentencePiece model (local or gs://) and checks Gemma's special ids.

  Raises:
    FileNotFoundError: naming ``path`` and ``help_text`` (how to get the file) when it is missing.
    ValueError: when the model's pad/eos/bos ids are not 0/1/2.
  """
  if not path or not _exists(path):
    raise FileNotFoundError(f"SentencePiece vocabulary not found at {path!r}: {help_text}.")
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  if "://" in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(path, "rb") as f:
      processor = spm.SentencePieceProcessor(model_proto=f.read())
  else:
    processor = spm.SentencePieceProcessor(model_file=path)
  ids = {"pad": processor.pad_id(), "eos": processor.eos_id(), "bos": processor.bos_id()}
  want = {"pad": PAD_ID, "eos": EOS_ID, "bos": BOS_ID}
  if ids != want:
    raise ValueError(f"Vocabulary {path!r} has special ids {ids}; this codebase needs {want}.")
  return SentencePieceTokenizer(processor, path)


def load_tokenizer(vocab: str = "", config: Mapping[str, Any] | None = None) -> Tokenizer:
  """A run's tokenizer: ``vocab`` (a SentencePiece path, or ``"bytes"``), else the one its
  config's ``data`` section names (:func:`vocab_path`)."""
  if vocab == BYTES:
    return ByteTokenizer()
  data = config.get("data") if config is not None else None
  return load_sentencepiece(*vocab_path(data, vocab))


@functools.lru_cache(maxsize=8)
def seqio_vocabulary(path: str, help_text: str = OFFLINE_VOCAB_HELP) -> Any:
  """The file of :func:`load_sentencepiece` (checked there) as a ``seqio`` vocabulary."""
  load_sentencepiece(path, help_text)
  import seqio  # pylint: disable=g-import-not-at-top
  return seqio.SentencePieceVocabulary(path, extra_ids=0)


def encode_prompts(tokenizer: Tokenizer, texts: Sequence[str], *, add_bos: bool = True,
                   vocab_size: int | None = None, min_tokens: int = 0) -> list[list[int]]:
  """Token ids per text, BOS first.

  Raises:
    ValueError: an id does not fit ``vocab_size`` (the vocabulary is not the model's), or a
      prompt has fewer than ``min_tokens`` tokens.
  """
  prompts = []
  for i, text in enumerate(texts):
    ids = ([BOS_ID] if add_bos else []) + [int(t) for t in tokenizer.encode(text)]
    if len(ids) < min_tokens:
      raise ValueError(f"prompt {i} ({text!r}) has {len(ids)} token(s); at least {min_tokens} "
                       "are needed.")
    if vocab_size is not None:
      bad = [t for t in ids if not 0 <= t < vocab_size]
      if bad:
        raise ValueError(f"Token id {bad[0]} of prompt {i} does not fit model.vocab_size="
                         f"{vocab_size}: the vocabulary does not belong to this model.")
    prompts.append(ids)
  return prompts
