"""rope_jax's data: seqio Tasks (Wikipedia, FlanV2, an offline corpus, probes), packing, iterators.

Public API::

  cfg = rope_jax.data.default_config()            # spliced in as config.data
  vocab = rope_jax.data.get_vocabulary(cfg)       # model.vocab_size must be >= vocab.vocab_size
  it = rope_jax.data.make_iterator(cfg, split="train", global_batch_size=8, seq_len=256, seed=0)
  batch = next(it)                                # dict of [B_local, L] numpy arrays
  state = it.get_state(); it.set_state(state)     # JSON-serialisable resume
  rope_jax.data.probes.accuracy(logits, batch)    # exact match on answer tokens

Modules: ``config`` (defaults, validation), ``tasks`` (seqio Tasks), ``packing`` (rows, segment
ids, positions), ``pipeline`` (iterators), ``probes`` (synthetic tasks, accuracy),
``long_probes`` (passkey, MQAR, flip-flop: train short, test long), ``scoring`` (whole-answer
exact match and its confidence interval), ``offline_corpus`` (CPython's docs + vocabulary),
``flan_v2`` (TFDS builder for a FLAN v2 export), ``text`` (special ids, vocabulary paths, the one
SentencePiece loader, tokenizers).

``import rope_jax.data`` is light (no TensorFlow): the names that need TensorFlow/seqio load
their module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from rope_jax.data.config import TASKS, check_task, default_config, validate
from rope_jax.data.packing import BATCH_KEYS
from rope_jax.data.text import BOS_ID, EOS_ID, PAD_ID

_LAZY = {
    "make_iterator": "pipeline", "DataIterator": "pipeline",
    "get_vocabulary": "tasks", "get_task": "tasks",
}
_SUBMODULES = ("config", "flan_v2", "long_probes", "offline_corpus", "packing", "pipeline",
               "probes", "scoring", "tasks", "text")

__all__ = ["BATCH_KEYS", "BOS_ID", "DataIterator", "EOS_ID", "PAD_ID", "TASKS", "check_task",
           "default_config", "get_task", "get_vocabulary", "make_iterator", "probes", "validate"]


def __getattr__(name: str) -> Any:
  if name in _LAZY:
    return getattr(importlib.import_module(f"rope_jax.data.{_LAZY[name]}"), name)
  if name in _SUBMODULES:
    return importlib.import_module(f"rope_jax.data.{name}")
  raise AttributeError(f"module 'rope_jax.data' has no attribute {name!r}")
