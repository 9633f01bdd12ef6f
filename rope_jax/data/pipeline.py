"""Batch iterators: ``make_iterator(data_config, ...)`` for every task, with save/restore.

A batch is this process's share of the global batch, a dict of numpy arrays ``[B_local, L]``
(``B_local = global_batch_size // process_count``): ``inputs``, ``targets`` (int32 token ids),
``weights`` (float32 loss weights), ``segment_ids`` and ``positions`` (int32); see
``packing.py`` for the layout.

Three iterators behind one interface (``__next__``, ``get_state``, ``set_state``):

* **offline** (in memory): the corpus is tokenized once per process through its seqio Task. The
  global stream of rows is epoch after epoch of packed documents, train documents permuted by
  ``(seed, epoch)``; validation in corpus order. Batch ``i`` is global rows
  ``[i*G, (i+1)*G)`` across epoch boundaries (nothing dropped) and process ``p`` takes rows
  ``[p*B_local, (p+1)*B_local)`` of it. The state is (step, epoch, row): restoring packs one epoch.
* **probes**: example ``i*G + p*B_local + j`` is generated from ``(seed, split, index)``, so
  restoring is O(1).
* **wiki / flan_v2** (streaming): the seqio Task's documents, sharded per process with
  ``seqio.ShardInfo(process_index, process_count)`` (files when there are enough, else examples),
  shuffled (train: files and a ``shuffle_buffer_size`` buffer, seeded), repeated, packed by each
  process into its own ``B_local`` rows. The state is the step; restoring replays the pipeline
  for that many batches (deterministic, O(step)).

Train iterators repeat forever; validation iterators do too, unshuffled and independent of the
seed (take the first N batches for a fixed evaluation set). Any ``seq_len`` works, so the trainer
can evaluate at 1x, 2x and 4x the training length with the same data.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import ml_collections
import numpy as np
import seqio
import tensorflow as tf

from rope_jax.data import config as config_lib
from rope_jax.data import packing
from rope_jax.data import probes
from rope_jax.data import tasks

# The input pipeline runs on the host CPU: keep TensorFlow off any accelerator JAX uses.
try:
  tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # TensorFlow's devices were already initialised elsewhere
  pass

Batch = packing.Batch
# What TFDS says about a dataset that is not prepared: as_dataset / info.splits (seqio sharding).
_TFDS_NOT_PREPARED = ("could not find data", "has not been generated")
State = dict[str, Any]


class DataIterator:
  """This process's batches; ``get_state()`` is JSON-serialisable, ``set_state`` restores it.

  A state holds the pipeline's identity (task, split, seed, seq_len, global_batch_size, plus
  per-iterator fields) and its position (``step``, and ``epoch``/``row`` in memory);
  ``set_state`` refuses a state whose identity differs, naming the field.
  """

  def __init__(self, *, task: str, split: str, global_batch_size: int, seq_len: int, seed: int,
               process_index: int, process_count: int):
    self.task = task
    self.split = split
    self.global_batch_size = global_batch_size
    self.seq_len = seq_len
    self.seed = seed
    self.process_index = process_index
    self.process_count = process_count
    self.local_batch_size = global_batch_size // process_count
    self.step = 0

  def __iter__(self) -> DataIterator:
    return self

  def __next__(self) -> Batch:
    batch = self._next_batch()
    self.step += 1
    return batch

  def _next_batch(self) -> Batch:
    raise NotImplementedError

  def _identity(self) -> State:
    """What a state must match to be restored here (the pipeline's definition)."""
    return {"task": self.task, "split": self.split, "seed": self.seed, "seq_len": self.seq_len,
            "global_batch_size": self.global_batch_size}

  def get_state(self) -> State:
    return {**self._identity(), "step": self.step}

  def set_state(self, state: State) -> None:
    for key, value in self._identity().items():
      if state.get(key) != value:
        raise ValueError(f"Cannot restore data state: its {key}={state.get(key)!r} but this "
                         f"iterator has {key}={value!r}.")
    self._restore(state)

  def _restore(self, state: State) -> None:
    raise NotImplementedError


class InMemoryIterator(DataIterator):
  """Packed rows of an in-memory document list (the offline corpus); restore packs one epoch."""

  def __init__(self, documents: tuple[np.ndarray, ...], *, shuffle: bool, pack: bool, **kwargs):
    super().__init__(**kwargs)
    if not documents:
      raise ValueError(f"Task {self.task!r} split {self.split!r} has no documents.")
    self._documents = documents
    self._fingerprint = _fingerprint(documents)
    self._shuffle = shuffle
    self._pack = pack
    self.epoch = 0
    self.row = 0  # global row offset of the next batch within self.epoch
    self._cache: tuple[int, list[list[packing.Chunk]]] | None = None

  def _epoch_rows(self, epoch: int) -> list[list[packing.Chunk]]:
    if self._cache is None or self._cache[0] != epoch:
      order = range(len(self._documents))
      if self._shuffle:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self._documents))
      rows = packing.pack_documents((self._documents[i] for i in order), self.seq_len,
                                    bos_id=packing.BOS_ID, pack=self._pack)
      self._cache = (epoch, rows)
    return self._cache[1]

  def _next_batch(self) -> Batch:
    lo = self.process_index * self.local_batch_size
    hi = lo + self.local_batch_size
    local = []
    for g in range(self.global_batch_size):
      rows = self._epoch_rows(self.epoch)
      if lo <= g < hi:
        local.append(rows[self.row])
      self.row += 1
      if self.row == len(rows):
        self.epoch, self.row = self.epoch + 1, 0
    return packing.rows_to_batch(local, self.seq_len)

  def _identity(self) -> State:
    # The same tokens: a resume on another CPython (another corpus) or vocabulary is refused.
    # Process layout is not part of it: the state is global, any process count may restore it.
    return {**super()._identity(), "pack": self._pack, "documents": self._fingerprint}

  def get_state(self) -> State:
    return {**super().get_state(), "epoch": self.epoch, "row": self.row}

  def _restore(self, state: State) -> None:
    self.step, self.epoch, self.row = int(state["step"]), int(state["epoch"]), int(state["row"])


class ProbeIterator(DataIterator):
  """Synthetic probe rows, example ``step*G + process_index*B_local + j``; O(1) restore."""

  def __init__(self, kind: str, probe_kwargs: dict[str, int], generator: Any = probes,
               **kwargs):
    super().__init__(**kwargs)
    self._kind = kind
    self._probe_kwargs = probe_kwargs
    self._generator = generator  # probes or long_probes: make_example / make_batch by kind
    generator.make_example(kind, 0, seed=self.seed, split=self.split, seq_len=self.seq_len,
                           **probe_kwargs)  # fail now on a bad length or setting

  def _identity(self) -> State:
    return {**super()._identity(), **self._probe_kwargs}

  def _next_batch(self) -> Batch:
    first = self.step * self.global_batch_size + self.process_index * self.local_batch_size
    return self._generator.make_batch(self._kind, range(first, first + self.local_batch_size),
                                      seed=self.seed, split=self.split, seq_len=self.seq_len,
                                      **self._probe_kwargs)

  def _restore(self, state: State) -> None:
    self.step = int(state["step"])


class StreamingIterator(DataIterator):
  """Packed rows of a streaming seqio Task (TFDS); restore replays ``step`` batches."""

  def __init__(self, task_obj: seqio.Task, data_config: ml_collections.ConfigDict, **kwargs):
    super().__init__(**kwargs)
    self._task_obj = task_obj
    self._tfds_name = tasks.tfds_name(data_config)
    self._data_dir = data_config.tfds_data_dir
    self._pack = data_config.pack
    self._reset()

  def _dataset(self) -> tf.data.Dataset:
    shard_info = None
    if self.process_count > 1:
      shard_info = seqio.ShardInfo(index=self.process_index, num_shards=self.process_count)
    try:
      return self._task_obj.get_dataset(
          None, split=self.split, shuffle=self.split == "train", seed=self.seed,
          shard_info=shard_info, num_epochs=None, try_in_mem_cache=False)
    except (AssertionError, KeyError) as e:
      if not any(m in str(e) for m in _TFDS_NOT_PREPARED):
        raise
      where = self._data_dir or "TFDS's default data_dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
      raise FileNotFoundError(
          f"TFDS dataset {self._tfds_name!r} is not prepared in {where}: "
          f"{tasks.PREPARE_HELP[self.task]}; then set data.tfds_data_dir=DIR (local or gs://). "
          f"TFDS said: {e}") from e

  def _reset(self) -> None:
    self._examples = self._dataset().as_numpy_iterator()
    self._packer = packing.Packer(self.seq_len, bos_id=packing.BOS_ID, pack=self._pack)
    self._ready: list[list[packing.Chunk]] = []
    self.step = 0

  def _next_batch(self) -> Batch:
    while len(self._ready) < self.local_batch_size:
      self._ready.extend(self._packer.add(next(self._examples)["targets"]))
    rows, self._ready = self._ready[: self.local_batch_size], self._ready[self.local_batch_size:]
    return packing.rows_to_batch(rows, self.seq_len)

  def _identity(self) -> State:
    # Each process packs its own shard, so a state belongs to one process layout.
    return {**super()._identity(), "pack": self._pack, "process_index": self.process_index,
            "process_count": self.process_count}

  def _restore(self, state: State) -> None:
    self._reset()
    for _ in range(int(state["step"])):
      next(self)


class MixtureIterator(DataIterator):
  """Fixed rows per component task in every global batch (``data.mixture``), in order.

  Component ``k`` with ``r_k`` rows is its own iterator with global batch ``r_k`` (so each is
  deterministic and resumable on its own); this process's rows are the concatenation of each
  component's local rows. The state nests the components' states.
  """

  def __init__(self, parts: dict[str, DataIterator], **kwargs):
    super().__init__(**kwargs)
    self._parts = parts

  def _next_batch(self) -> Batch:
    batches = [next(it) for it in self._parts.values()]
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

  def _identity(self) -> State:
    return {**super()._identity(), "parts": list(self._parts)}

  def get_state(self) -> State:
    return {**super().get_state(), "part_states": {k: it.get_state()
                                                   for k, it in self._parts.items()}}

  def _restore(self, state: State) -> None:
    self.step = int(state["step"])
    for name, it in self._parts.items():
      it.set_state(state["part_states"][name])


def _fingerprint(documents: tuple[np.ndarray, ...]) -> str:
  """sha256 (16 hex digits) of a tokenized document list."""
  h = hashlib.sha256()
  for d in documents:
    h.update(np.int64(len(d)).tobytes())
    h.update(np.ascontiguousarray(d, np.int32).tobytes())
  return h.hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def _offline_documents(vocab_path: str, validation_percent: int,
                       split: str) -> tuple[np.ndarray, ...]:
  """The offline corpus split tokenized through its seqio Task (once per process)."""
  cfg = config_lib.default_config()
  cfg.task, cfg.vocab_path, cfg.validation_percent = "offline", vocab_path, validation_percent
  return tuple(tasks.tokenized_documents(tasks.get_task(cfg), split))


def make_iterator(data_config: ml_collections.ConfigDict, *, split: str, global_batch_size: int,
                  seq_len: int, seed: int, process_index: int | None = None,
                  process_count: int | None = None) -> DataIterator:
  """This process's iterator over ``data_config.task``'s ``split`` (see module doc).

  Args:
    data_config: ``rope_jax.data.default_config()``-shaped ConfigDict.
    split: "train" or "validation".
    global_batch_size: rows per step over all processes; divisible by ``process_count``.
    seq_len: row length L in tokens (any length: eval at 2x/4x the training length works).
    seed: shuffling / probe seed (train only; validation never depends on it).
    process_index, process_count: default to ``jax.process_index()`` / ``jax.process_count()``.

  Returns:
    An iterator of batches, dicts of ``[global_batch_size // process_count, seq_len]`` arrays.
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  tasks.check_task(data_config.task)
  tasks.check_split(split)
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, process_count={process_count}).")
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(f"global_batch_size {global_batch_size} must be a positive multiple of "
                     f"process_count {process_count}.")
  if seq_len < 1:
    raise ValueError(f"seq_len must be >= 1, got {seq_len}.")
  common = dict(task=data_config.task, split=split, global_batch_size=global_batch_size,
                seq_len=seq_len, seed=int(seed), process_index=process_index,
                process_count=process_count)
  if data_config.task == "mixture":
    parts = config_lib.parse_mixture(data_config.mixture)
    total = sum(rows for _, rows in parts)
    if total != global_batch_size:
      raise ValueError(f"data.mixture {data_config.mixture!r} has {total} rows per batch but the "
                       f"global batch size is {global_batch_size}; make them equal.")
    sub = {}
    for task, rows in parts:
      part_config = ml_collections.ConfigDict(data_config.to_dict())
      part_config.task, part_config.mixture = task, ""
      sub[task] = make_iterator(part_config, split=split, global_batch_size=rows,
                                seq_len=seq_len, seed=seed, process_index=process_index,
                                process_count=process_count)
    return MixtureIterator(sub, **common)
  if data_config.task in tasks.PROBE_TASKS:
    kwargs = tasks.probe_kwargs(data_config, tasks.get_vocabulary(data_config))
    return ProbeIterator(data_config.task.removeprefix("probe_"), kwargs,
                         tasks.probe_generator(data_config.task), **common)
  if data_config.task == "offline":
    tasks.get_vocabulary(data_config)  # a clear error for a missing vocabulary, before TF
    docs = _offline_documents(data_config.vocab_path, data_config.validation_percent, split)
    return InMemoryIterator(docs, shuffle=split == "train", pack=data_config.pack, **common)
  return StreamingIterator(tasks.get_task(data_config), data_config, **common)
