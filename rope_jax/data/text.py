"""Text <-> token ids for sampling and analysis scripts (no TensorFlow needed).

SentencePiece models with Gemma's special ids (pad 0, eos 1, bos 2), or UTF-8 bytes as ids for
byte-level runs. Training data goes through ``rope_jax.data.vocabularies`` instead.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, Sequence

PAD_ID, EOS_ID, BOS_ID = 0, 1, 2
BYTES = "bytes"
OFFLINE_VOCAB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets",
                             "offline_sp2048.model")


class Tokenizer(Protocol):

  def encode(self, text: str) -> list[int]: ...

  def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
  """UTF-8 bytes as token ids; ids >= 256 decode to nothing."""

  def encode(self, text: str) -> list[int]:
    return list(text.encode("utf-8"))

  def decode(self, ids: Sequence[int]) -> str:
    return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


def load_tokenizer(vocab: str = "", config: dict[str, Any] | None = None) -> Tokenizer:
  """``vocab`` (a SentencePiece model path, or ``"bytes"``), else the run config's
  ``data.vocab_path``, else the shipped offline SentencePiece model."""
  if vocab == BYTES:
    return ByteTokenizer()
  path = vocab or ((config or {}).get("data") or {}).get("vocab_path") or OFFLINE_VOCAB
  if not os.path.exists(path):
    raise FileNotFoundError(f"SentencePiece vocabulary {path!r} not found; pass a path "
                            "(Gemma's tokenizer.model for Gemma weights) or 'bytes'.")
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  return spm.SentencePieceProcessor(model_file=path)


def encode_prompts(tokenizer: Tokenizer, texts: Sequence[str], *, add_bos: bool = True,
                   vocab_size: int | None = None) -> list[list[int]]:
  """Token ids per text, BOS first; ValueError if an id does not fit ``vocab_size``."""
  prompts = [([BOS_ID] if add_bos else []) + list(tokenizer.encode(t)) for t in texts]
  if vocab_size is not None:
    for ids in prompts:
      bad = [i for i in ids if not 0 <= i < vocab_size]
      if bad:
        raise ValueError(f"Token id {bad[0]} does not fit model.vocab_size={vocab_size}: the "
                         "vocabulary does not belong to this model.")
  return prompts
