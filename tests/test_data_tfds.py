"""wiki and flan_v2 through their real seqio/TFDS code paths, on tfds.testing.mock_data and on a
tiny FLAN export prepared with the repo's TFDS builder. Nothing is downloaded."""

from __future__ import annotations

import gzip
import json
import os

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

import rope_jax.data as data
from rope_jax.data import flan_v2, offline_corpus, packing, tasks

WIKI = tasks.DEFAULT_TFDS_NAMES["wiki"]
N_MOCK = 40


def _config(task, **overrides):
  cfg = data.default_config()
  # Gemma's vocabulary is not available offline; any Gemma-convention SentencePiece model works.
  cfg.update({"task": task, "vocab_path": offline_corpus.DEFAULT_VOCAB_PATH,
              "shuffle_buffer_size": 64, **overrides})
  return cfg


def _iterator(cfg, split="train", global_batch_size=4, seq_len=64, seed=0, process_index=0,
              process_count=1):
  return data.make_iterator(cfg, split=split, global_batch_size=global_batch_size,
                            seq_len=seq_len, seed=seed, process_index=process_index,
                            process_count=process_count)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _rows(batches):
  """(targets of each row's first segment) for unpacked batches, as tuples."""
  out = []
  for b in batches:
    for i in range(b["targets"].shape[0]):
      out.append(tuple(b["targets"][i][b["segment_ids"][i] == 1].tolist()))
  return out


@pytest.mark.parametrize("task", ["wiki", "flan_v2"])
def test_packed_batches_from_mock_tfds(task):
  cfg = _config(task)
  with tfds.testing.mock_data(num_examples=N_MOCK):
    batches = _take(_iterator(cfg, seq_len=64), 3)
  vocab = data.get_vocabulary(cfg)
  for b in batches:
    packing.validate_batch(b, 64)
    assert b["weights"].mean() > 0.8
  assert max(b["segment_ids"].max() for b in batches) >= 2  # several documents per row
  first = batches[0]["inputs"][0][batches[0]["segment_ids"][0] == 1]
  assert first[0] == data.BOS_ID and "\n\n" in vocab.decode(first[1:].tolist())


def test_unpacked_rows_are_the_tokenized_documents_in_order():
  cfg = _config("wiki", pack=False)
  with tfds.testing.mock_data(num_examples=N_MOCK):
    docs = tasks.tokenized_documents(tasks.get_task(cfg), "validation")
    rows = _rows(_take(_iterator(cfg, "validation", seq_len=256), N_MOCK // 4))
  assert max(len(d) for d in docs) <= 256
  assert rows == [tuple(d.tolist()) for d in docs]  # every token, in order, nothing dropped


def test_wiki_same_seed_same_batches_and_resume():
  cfg = _config("wiki")
  with tfds.testing.mock_data(num_examples=N_MOCK):
    straight = _take(_iterator(cfg, seed=1), 5)
    again = _take(_iterator(cfg, seed=1), 5)
    other = _take(_iterator(cfg, seed=2), 5)
    it = _iterator(cfg, seed=1)
    _take(it, 2)
    state = json.loads(json.dumps(it.get_state()))
    resumed = _iterator(cfg, seed=1)
    resumed.set_state(state)
    after = _take(resumed, 3)
  for a, b in zip(straight, again):
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
  assert any(not np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(straight, other))
  for a, b in zip(straight[2:], after):
    for k in data.BATCH_KEYS:
      np.testing.assert_array_equal(a[k], b[k])


def _write_split_info(data_dir, tfds_name, shard_lengths):
  """Metadata of a generated dataset (no records), so seqio can list its shards under mock_data."""
  builder = tfds.builder(tfds_name.split(":")[0], data_dir=data_dir)
  template = tfds.core.ShardedFileTemplate(data_dir=builder.data_dir, dataset_name=builder.name,
                                           split="train", filetype_suffix="tfrecord")
  builder.info.set_splits(tfds.core.SplitDict([tfds.core.SplitInfo(
      name="train", shard_lengths=shard_lengths, num_bytes=0, filename_template=template)]))
  os.makedirs(builder.data_dir, exist_ok=True)
  builder.info.write_to_directory(builder.data_dir)


def test_each_process_reads_its_own_shard(tmp_path):
  data_dir = str(tmp_path)
  _write_split_info(data_dir, WIKI, [N_MOCK])
  cfg = _config("wiki", pack=False, tfds_data_dir=data_dir)
  with tfds.testing.mock_data(num_examples=N_MOCK, policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=data_dir):
    all_docs = {tuple(d.tolist()) for d in
                tasks.tokenized_documents(tasks.get_task(cfg), "validation")}
    shards = [set(_rows(_take(_iterator(cfg, "validation", seq_len=256, process_index=p,
                                        process_count=2), N_MOCK // 4)))
              for p in range(2)]
  assert shards[0] and shards[1] and not shards[0] & shards[1]
  assert shards[0] | shards[1] == all_docs


@pytest.fixture(scope="module")
def flan_dir(tmp_path_factory):
  """A tiny FLAN v2 export (30 examples, plain and gzipped JSON Lines) prepared as TFDS."""
  root = tmp_path_factory.mktemp("flan")
  manual = root / "export"
  manual.mkdir()
  lines = [json.dumps({"inputs": f"Question {i}: what is {i} plus one?", "targets": f"{i + 1}",
                       "task_name": "arith"}) for i in range(30)]
  (manual / "a.jsonl").write_text("\n".join(lines[:20]) + "\n")
  with gzip.open(manual / "b.jsonl.gz", "wt") as f:
    f.write("\n".join(lines[20:]) + "\n")
  flan_v2.prepare(str(manual), str(root / "tfds"))
  return str(root / "tfds")


def test_flan_v2_prepared_with_the_builder_and_held_out(flan_dir):
  cfg = _config("flan_v2", pack=False, tfds_data_dir=flan_dir, shuffle_buffer_size=1)
  vocab = data.get_vocabulary(cfg)
  def texts(split, steps):
    it = _iterator(cfg, split, global_batch_size=3, seq_len=64, seed=1)
    return [vocab.decode(list(r)[:-1]) for r in _rows(_take(it, steps))]
  want = {f"Question {i}: what is {i} plus one?\n\n{i + 1}" for i in range(30)}
  val, train = texts("validation", 2), set(texts("train", 9))
  assert len(set(val[:3])) == 3 and val[3:] == val[:3]  # 10% of 30, cycling unshuffled
  assert train == want - set(val)  # train is the rest: disjoint, and covers it


def test_missing_data_vocab_and_unknown_task_errors(tmp_path):
  absent = str(tmp_path / "no_tfds")
  with pytest.raises(FileNotFoundError, match=f"{absent}.*python -m rope_jax.data.flan_v2"):
    _iterator(_config("flan_v2", tfds_data_dir=absent))
  with pytest.raises(FileNotFoundError, match=f"{absent}.*tfds build wikipedia"):
    _iterator(_config("wiki", tfds_data_dir=absent), process_count=2)
  with pytest.raises(ValueError, match="Gemma"):
    data.get_vocabulary(_config("wiki", vocab_path=""))
  missing = str(tmp_path / "tokenizer.model")
  with pytest.raises(FileNotFoundError, match=f"{missing}.*Gemma"):
    data.get_vocabulary(_config("wiki", vocab_path=missing))
  with pytest.raises(ValueError, match="known tasks: offline, wiki, flan_v2"):
    _iterator(_config("flan"))


class _Recorder:
  """Wraps a ConfigDict and records which (nested) keys are read."""

  def __init__(self, cfg, seen, prefix=""):
    object.__setattr__(self, "_cfg", cfg)
    object.__setattr__(self, "_seen", seen)
    object.__setattr__(self, "_prefix", prefix)

  def __getattr__(self, name):
    value = getattr(self._cfg, name)
    if isinstance(value, ml_collections.ConfigDict):
      return _Recorder(value, self._seen, f"{self._prefix}{name}.")
    if callable(value):  # A ConfigDict method (e.g. to_dict), not a key.
      return value
    self._seen.add(self._prefix + name)
    return value

  __getitem__ = __getattr__  # section["key"] reads count too.


def _leaves(cfg, prefix=""):
  for k, v in cfg.items():
    if isinstance(v, ml_collections.ConfigDict):
      yield from _leaves(v, f"{prefix}{k}.")
    else:
      yield prefix + k


def test_every_default_config_key_is_consumed():
  seen = set()
  # The long-context probes alone: a mixture's parts read a copy of the config.
  for task in ("offline", "probe_recall", "probe_passkey", "probe_mqar", "probe_flipflop", "wiki",
               "mixture"):
    cfg = data.default_config()
    cfg.task = task
    cfg.shuffle_buffer_size = 8
    if task == "mixture":
      cfg.mixture = "probe_copy:1,probe_recall:1"
    if task == "wiki":
      cfg.vocab_path = offline_corpus.DEFAULT_VOCAB_PATH
    with tfds.testing.mock_data(num_examples=4):
      next(data.make_iterator(_Recorder(cfg, seen), split="train", global_batch_size=2,
                              seq_len=64, seed=0, process_index=0, process_count=1))
  assert seen == set(_leaves(data.default_config()))
