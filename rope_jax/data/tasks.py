"""seqio Tasks for the paper's data (Wikipedia, FlanV2), the offline corpus, and the probes.

Every text task yields documents as one feature, ``targets``: int32 token ids ending with eos
(seqio ``tokenize`` + ``append_eos``), untruncated. Packing into rows (and bos) is
``packing.py``'s job, so all tasks share one packer.

* ``wiki``: TFDS ``wikipedia/20230601.en:1.0.0`` (English Wikipedia; the paper's 6,672,479
  articles, 19.88 GiB). Train is the first 90% of TFDS ``train``, validation the last 10%, as the
  paper held out 10%. Document text: ``title + "\\n\\n" + text``.
* ``flan_v2``: TFDS ``flan_v2:1.0.0``, built by ``flan_v2.py`` from a FLAN v2 export; the same
  90/10 split. Document text: ``inputs + "\\n\\n" + targets``, loss on every token (the paper
  trains a language model on it from scratch and reports perplexity).
* ``offline``: ``offline_corpus.py`` (CPython's docs), a fixed 10% of documents for validation.
* ``probe_*``: ``probes.py`` (copy, reverse, recall) and ``long_probes.py`` (passkey, mqar,
  flipflop); one example per row, already laid out (not packed).

``import rope_jax.data.tasks`` registers every task under a stable name, as seqio / t5x users
expect: ``rope_jax.wiki``, ``rope_jax.flan_v2``, ``rope_jax.offline`` and the probes
``rope_jax.probe_{copy,reverse,recall,passkey,mqar,flipflop}`` (rows of ``DEFAULT_PROBE_LEN``
tokens), with the data defaults of ``rope_jax.data.config``, so ``seqio.get_mixture_or_task("rope_jax.wiki")`` works
from any tool. Vocabularies are resolved lazily (on first encode / decode / size): the offline
and probe tasks use the shipped vocabulary, wiki and flan_v2 Gemma's ``tokenizer.model`` named
by the environment variable ``ROPE_JAX_GEMMA_VOCAB`` (a clear error on first use when unset).
The config-driven path (:func:`get_task`) registers the same names from a data config (probes
as ``rope_jax.probe_<kind>.L<seq_len>``), replacing the import-time registration.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import ml_collections
import numpy as np
import seqio
import tensorflow as tf

from rope_jax.data import config as config_lib
from rope_jax.data import flan_v2
from rope_jax.data import long_probes
from rope_jax.data import offline_corpus
from rope_jax.data import packing
from rope_jax.data import probes
from rope_jax.data import text

TASKS = config_lib.TASKS
TFDS_TASKS = config_lib.TFDS_TASKS
PROBE_TASKS = tuple(t for t in TASKS if t.startswith("probe_"))
check_task = config_lib.check_task
SPLITS = ("train", "validation")

DEFAULT_TFDS_NAMES = {"wiki": "wikipedia/20230601.en:1.0.0", "flan_v2": flan_v2.TFDS_NAME}
PREPARE_HELP = {
    "wiki": "prepare it once with `tfds build wikipedia/20230601.en --data_dir=DIR` (an Apache "
            "Beam job over the Wikimedia dump: run it on Dataflow for the full English dump) or "
            "copy an already prepared copy to DIR",
    "flan_v2": "prepare it once with `python -m rope_jax.data.flan_v2 --manual_dir=JSONL_DIR "
               "--data_dir=DIR` from a JSON Lines export of the FLAN v2 collection "
               "(see rope_jax/data/flan_v2.py)",
}
PREFIX = "rope_jax."
GEMMA_VOCAB_ENV = "ROPE_JAX_GEMMA_VOCAB"
DEFAULT_PROBE_LEN = 128  # Row length of the import-time probe tasks (the tiny config's seq_len).


def check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; known splits: {', '.join(SPLITS)}.")


def get_vocabulary(data_config: ml_collections.ConfigDict) -> seqio.SentencePieceVocabulary:
  """The task's vocabulary (``text.vocab_path``: ``data_config.vocab_path``, or the shipped
  offline one if empty) as a seqio vocabulary.

  Raises:
    FileNotFoundError: the path is missing (the message says how to get the file).
    ValueError: unknown task, or wiki/flan_v2 without a vocab_path (they need Gemma's).
  """
  check_task(data_config.task)
  return text.seqio_vocabulary(*text.vocab_path(data_config))


def tfds_name(data_config: ml_collections.ConfigDict) -> str:
  return data_config.tfds_name or DEFAULT_TFDS_NAMES[data_config.task]


def holdout_splits(validation_percent: int) -> dict[str, str]:
  """Our train/validation as slices of TFDS ``train``: the last N% is held out."""
  if not 0 < validation_percent < 100:
    raise ValueError(f"validation_percent must be in (0, 100), got {validation_percent}.")
  cut = 100 - validation_percent
  return {"train": f"train[:{cut}%]", "validation": f"train[{cut}%:]"}


@seqio.map_over_dataset
def _wiki_text(ex: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  return {"targets": tf.strings.join([ex["title"], ex["text"]], separator="\n\n")}


@seqio.map_over_dataset
def _flan_text(ex: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  return {"targets": tf.strings.join([ex["inputs"], ex["targets"]], separator="\n\n")}


_TOKENIZE = (functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False),
             seqio.preprocessors.append_eos)


def _register(name: str, **kwargs: Any) -> seqio.Task:
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(name, **kwargs)


def _text_features(vocab: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  return {"targets": seqio.Feature(vocab, add_eos=True, dtype=tf.int32)}


def _task_kwargs(data_config: ml_collections.ConfigDict, vocab: seqio.Vocabulary,
                 seq_len: int | None, *, check_vocab: bool = True) -> dict[str, Any]:
  """``seqio.TaskRegistry.add`` keyword arguments of ``data_config.task`` over ``vocab``."""
  task = data_config.task
  if task in TFDS_TASKS:
    data_dir = data_config.tfds_data_dir or None
    source = seqio.TfdsDataSource(
        tfds_name(data_config), tfds_data_dir=data_dir, read_only=True,
        splits=holdout_splits(data_config.validation_percent))
    text = _wiki_text if task == "wiki" else _flan_text
    return dict(source=source, output_features=_text_features(vocab),
                preprocessors=[text, *_TOKENIZE],
                shuffle_buffer_size=data_config.shuffle_buffer_size)
  if task == "offline":
    pct = data_config.validation_percent
    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
      del shuffle_files, seed  # the pipeline permutes documents itself, seeded per epoch
      return tf.data.Dataset.from_tensor_slices(
          {"targets": list(offline_corpus.split_texts(split, pct))})
    source = seqio.FunctionDataSource(dataset_fn, splits=SPLITS)
    return dict(source=source, output_features=_text_features(vocab),
                preprocessors=list(_TOKENIZE), shuffle_buffer_size=None)
  if seq_len is None:
    raise ValueError(f"Probe task {task!r} needs seq_len.")
  return _probe_task_kwargs(data_config, vocab, seq_len, check_vocab=check_vocab)


def get_task(data_config: ml_collections.ConfigDict, *, seq_len: int | None = None) -> seqio.Task:
  """Builds (and registers) the seqio Task of ``data_config.task``.

  ``seq_len`` is needed only for probes, whose examples are laid out to the row length.
  """
  check_task(data_config.task)
  task = data_config.task
  vocab = get_vocabulary(data_config)
  name = PREFIX + task if task in TFDS_TASKS or task == "offline" else f"{PREFIX}{task}.L{seq_len}"
  return _register(name, **_task_kwargs(data_config, vocab, seq_len))


def probe_generator(task: str):
  """The module that generates a probe task's rows: ``probes`` or ``long_probes``."""
  kind = task.removeprefix("probe_")
  return long_probes if kind in long_probes.KINDS else probes


def probe_kwargs(data_config: ml_collections.ConfigDict, vocab: seqio.Vocabulary, *,
                 check_vocab: bool = True) -> dict[str, int]:
  """The probe settings of ``data_config`` (for its task), checked against the vocabulary size."""
  kind = data_config.task.removeprefix("probe_")
  if kind in long_probes.KINDS:
    kwargs = long_probes.settings(kind, data_config.long_probe)
    need = long_probes.min_vocab_size(kind, **kwargs)
    how = f"long probe {kind!r} with data.long_probe settings {kwargs}"
  else:
    p = data_config.probe
    kwargs = {"num_symbols": p.num_symbols, "num_keys": p.num_keys, "num_queries": p.num_queries}
    need = probes.min_vocab_size(p.num_symbols, p.num_keys)
    how = f"{probes.FIRST_SYMBOL_ID} + num_symbols + num_keys"
  if not check_vocab:
    return kwargs
  if vocab.vocab_size < need:
    raise ValueError(f"Probe ids need a vocabulary of >= {need} tokens ({how}); "
                     f"{data_config.vocab_path or 'the offline vocabulary'} has "
                     f"{vocab.vocab_size}.")
  return kwargs


def _probe_task_kwargs(data_config: ml_collections.ConfigDict, vocab: seqio.Vocabulary,
                       seq_len: int, *, check_vocab: bool = True) -> dict[str, Any]:
  kind = data_config.task.removeprefix("probe_")
  generator = probe_generator(data_config.task)
  kwargs = probe_kwargs(data_config, vocab, check_vocab=check_vocab)
  spec = {k: tf.TensorSpec([seq_len], tf.float32 if k == "weights" else tf.int32)
          for k in packing.BATCH_KEYS}

  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    """Examples 0, 1, 2, ... (endless) of the split; the seed matters for train only."""
    del shuffle_files
    def gen():
      i = 0
      while True:
        yield generator.make_example(kind, i, seed=seed or 0, split=split, seq_len=seq_len,
                                     **kwargs)
        i += 1
    return tf.data.Dataset.from_generator(gen, output_signature=spec)

  features = {k: seqio.Feature(vocab, add_eos=False, dtype=tf.int32) for k in ("inputs", "targets")}
  return {"source": seqio.FunctionDataSource(dataset_fn, splits=SPLITS),
          "output_features": features, "preprocessors": [], "shuffle_buffer_size": None}


def tokenized_documents(task: seqio.Task, split: str) -> list[np.ndarray]:
  """All documents of a finite task split, in source order: a list of ``[n_i]`` int32 arrays."""
  ds = task.get_dataset(None, split=split, shuffle=False, num_epochs=1, try_in_mem_cache=False)
  return [ex["targets"] for ex in ds.as_numpy_iterator()]


class DeferredVocabulary(seqio.Vocabulary):
  """A seqio vocabulary whose model is loaded on first use (``load()`` -> a Vocabulary), so a
  task can be registered at import without reading any file."""

  def __init__(self, load: Callable[[], seqio.Vocabulary], name: str):
    super().__init__(extra_ids=0)
    self._load, self._name, self._vocab = load, name, None

  @property
  def vocabulary(self) -> seqio.Vocabulary:
    if self._vocab is None:
      self._vocab = self._load()
    return self._vocab

  @property
  def bos_id(self) -> int | None:
    return self.vocabulary.bos_id

  @property
  def eos_id(self) -> int | None:
    return self.vocabulary.eos_id

  @property
  def unk_id(self) -> int | None:
    return self.vocabulary.unk_id

  @property
  def pad_id(self) -> int:
    return self.vocabulary.pad_id

  @property
  def _base_vocab_size(self) -> int:
    return self.vocabulary.vocab_size

  def _encode(self, s: str) -> Any:
    return self.vocabulary.encode(s)

  def _decode(self, ids: Any) -> str:
    return self.vocabulary.decode(ids)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    return self.vocabulary.encode_tf(s)

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    return self.vocabulary.decode_tf(ids)

  def __eq__(self, other: Any) -> bool:
    return self is other or (isinstance(other, DeferredVocabulary) and
                             self._name == other._name)

  def __hash__(self) -> int:
    return hash(self._name)

  def __repr__(self) -> str:
    return f"DeferredVocabulary({self._name})"


def default_data_config(task: str) -> ml_collections.ConfigDict:
  """The data defaults for ``task`` as registered at import (wiki / flan_v2 read Gemma's
  vocabulary path from ``$ROPE_JAX_GEMMA_VOCAB``)."""
  cfg = config_lib.default_config()
  cfg.task = task
  if task in TFDS_TASKS:
    cfg.vocab_path = os.environ.get(GEMMA_VOCAB_ENV, "")
  return cfg


def _gemma_vocabulary(cfg: ml_collections.ConfigDict) -> seqio.Vocabulary:
  if not cfg.vocab_path:
    raise FileNotFoundError(f"Task rope_jax.{cfg.task} needs Gemma's vocabulary: set "
                            f"${GEMMA_VOCAB_ENV} to its tokenizer.model, or build the task from a "
                            f"config with data.vocab_path ({text.GEMMA_VOCAB_HELP}).")
  return get_vocabulary(cfg)


def register_defaults() -> tuple[str, ...]:
  """Registers every task under its stable name (lazy vocabularies); returns the names. Names
  already registered (e.g. from a config) are kept."""
  names = []
  for task in (*TFDS_TASKS, "offline", *PROBE_TASKS):
    cfg = default_data_config(task)
    load = functools.partial(_gemma_vocabulary if task in TFDS_TASKS else get_vocabulary, cfg)
    vocab = DeferredVocabulary(load, f"{PREFIX}{task}")
    name = PREFIX + task
    if name not in seqio.TaskRegistry.names():
      seqio.TaskRegistry.add(name, **_task_kwargs(cfg, vocab, DEFAULT_PROBE_LEN,
                                                  check_vocab=False))
    names.append(name)
  return tuple(names)


STABLE_TASK_NAMES = register_defaults()
