"""SentencePiece vocabularies: Gemma's for the paper's data, the shipped one for offline work.

Every vocabulary used here follows Gemma's special ids: pad 0, eos 1, bos 2 (unk 3); loading one
that does not raises. Paths may be local or ``gs://`` (read through ``tf.io.gfile``).
"""

from __future__ import annotations

import functools

import seqio
import tensorflow as tf

from rope_jax.data.packing import BOS_ID, EOS_ID, PAD_ID

GEMMA_VOCAB_HELP = (
    "point data.vocab_path at Gemma's SentencePiece model `tokenizer.model` (256,000 pieces; "
    "it ships with the Gemma weights, e.g. the Kaggle/Hugging Face Gemma releases), as a local "
    "path or gs://bucket/path")
OFFLINE_VOCAB_HELP = (
    "regenerate the offline vocabulary with "
    "`python -m rope_jax.data.offline_corpus --write_vocab PATH` and point data.vocab_path at it")


@functools.lru_cache(maxsize=8)
def load_vocabulary(path: str,
                    help_text: str = OFFLINE_VOCAB_HELP) -> seqio.SentencePieceVocabulary:
  """Loads a SentencePiece model (local or gs://) and checks Gemma's special ids.

  Raises:
    FileNotFoundError: naming ``path`` and ``help_text`` (how to get the file) when it is missing.
    ValueError: when the model's eos/bos/pad ids are not 1/2/0.
  """
  if not path or not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"SentencePiece vocabulary not found at {path!r}: {help_text}.")
  vocab = seqio.SentencePieceVocabulary(path, extra_ids=0)
  ids = {"pad": vocab.pad_id, "eos": vocab.eos_id, "bos": vocab.tokenizer.bos_id()}
  want = {"pad": PAD_ID, "eos": EOS_ID, "bos": BOS_ID}
  if ids != want:
    raise ValueError(f"Vocabulary {path!r} has special ids {ids}; this codebase needs {want}.")
  return vocab
