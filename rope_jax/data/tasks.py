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

Tasks are registered in ``seqio.TaskRegistry`` as ``rope_jax.<task>`` (probes as
``rope_jax.probe_<kind>.L<seq_len>``) when first built from a data config; building again with a
different config replaces the registration.
"""

from __future__ import annotations

import functools
from typing import Any

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


def get_task(data_config: ml_collections.ConfigDict, *, seq_len: int | None = None) -> seqio.Task:
  """Builds (and registers) the seqio Task of ``data_config.task``.

  ``seq_len`` is needed only for probes, whose examples are laid out to the row length.
  """
  check_task(data_config.task)
  task = data_config.task
  vocab = get_vocabulary(data_config)
  if task in TFDS_TASKS:
    data_dir = data_config.tfds_data_dir or None
    source = seqio.TfdsDataSource(
        tfds_name(data_config), tfds_data_dir=data_dir, read_only=True,
        splits=holdout_splits(data_config.validation_percent))
    text = _wiki_text if task == "wiki" else _flan_text
    return _register(PREFIX + task, source=source, output_features=_text_features(vocab),
                     preprocessors=[text, *_TOKENIZE],
                     shuffle_buffer_size=data_config.shuffle_buffer_size)
  if task == "offline":
    pct = data_config.validation_percent
    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
      del shuffle_files, seed  # the pipeline permutes documents itself, seeded per epoch
      return tf.data.Dataset.from_tensor_slices(
          {"targets": list(offline_corpus.split_texts(split, pct))})
    source = seqio.FunctionDataSource(dataset_fn, splits=SPLITS)
    return _register(PREFIX + task, source=source, output_features=_text_features(vocab),
                     preprocessors=list(_TOKENIZE), shuffle_buffer_size=None)
  if seq_len is None:
    raise ValueError(f"Probe task {task!r} needs seq_len.")
  return _register(f"{PREFIX}{task}.L{seq_len}", **_probe_task_kwargs(data_config, vocab, seq_len))


def probe_generator(task: str):
  """The module that generates a probe task's rows: ``probes`` or ``long_probes``."""
  kind = task.removeprefix("probe_")
  return long_probes if kind in long_probes.KINDS else probes


def probe_kwargs(data_config: ml_collections.ConfigDict, vocab: seqio.Vocabulary) -> dict[str, int]:
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
  if vocab.vocab_size < need:
    raise ValueError(f"Probe ids need a vocabulary of >= {need} tokens ({how}); "
                     f"{data_config.vocab_path or 'the offline vocabulary'} has "
                     f"{vocab.vocab_size}.")
  return kwargs


def _probe_task_kwargs(data_config: ml_collections.ConfigDict, vocab: seqio.Vocabulary,
                       seq_len: int) -> dict[str, Any]:
  kind = data_config.task.removeprefix("probe_")
  generator = probe_generator(data_config.task)
  kwargs = probe_kwargs(data_config, vocab)
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
