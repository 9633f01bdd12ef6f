"""The offline corpus task: corpus, vocabulary, determinism, process shards, resume, errors."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

import rope_jax.data as data
from rope_jax.data import offline_corpus, packing, tasks


def _config(**overrides):
  cfg = data.default_config()
  cfg.update(overrides)
  return cfg


def _iterator(split="train", global_batch_size=4, seq_len=128, seed=0, process_index=0,
              process_count=1, **overrides):
  return data.make_iterator(_config(**overrides), split=split, global_batch_size=global_batch_size,
                            seq_len=seq_len, seed=seed, process_index=process_index,
                            process_count=process_count)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    for k in data.BATCH_KEYS:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_corpus_is_real_sizeable_and_split_by_document():
  docs = offline_corpus.documents()
  chars = sum(len(d.text) for d in docs)
  assert chars > 2_000_000 and len(docs) > 500
  assert len({d.key for d in docs}) == len(docs)
  assert any("Return" in d.text and " the " in d.text for d in docs[:50])  # English prose
  train, val = offline_corpus.split_texts("train"), offline_corpus.split_texts("validation")
  assert len(train) + len(val) == len(docs) and not set(train) & set(val)
  assert 0.05 < len(val) / len(docs) < 0.15
  # A document's split is a property of its key: holding out more only adds documents.
  held_10 = {d.key for d in docs if offline_corpus.is_validation(d.key, 10)}
  held_20 = {d.key for d in docs if offline_corpus.is_validation(d.key, 20)}
  assert held_10 < held_20


def test_vocabulary_round_trips_and_uses_gemma_special_ids():
  vocab = data.get_vocabulary(_config())
  assert vocab.vocab_size == offline_corpus.VOCAB_SIZE
  assert (vocab.pad_id, vocab.eos_id, vocab.tokenizer.bos_id()) == (0, 1, 2)
  assert os.path.getsize(offline_corpus.DEFAULT_VOCAB_PATH) < 1_000_000
  for text in offline_corpus.split_texts("validation")[:40]:
    ids = vocab.encode(text)
    assert 3 not in ids  # byte fallback: no unknown tokens
    assert vocab.decode(ids) == text
  text = offline_corpus.split_texts("validation")[0]
  assert len(text) / len(vocab.encode(text)) > 2.0  # subwords, not bytes


def test_one_tokenizer_loader_and_one_set_of_special_ids():
  from rope_jax.data import packing, text  # pylint: disable=g-import-not-at-top
  assert (packing.PAD_ID, packing.EOS_ID, packing.BOS_ID, packing.UNK_ID) == (0, 1, 2, 3)
  assert packing.BOS_ID is text.BOS_ID and data.EOS_ID is text.EOS_ID
  tokenizer = text.load_tokenizer()  # No vocab, no config: the shipped offline vocabulary.
  assert tokenizer.path == offline_corpus.DEFAULT_VOCAB_PATH
  assert tokenizer.vocab_size == offline_corpus.VOCAB_SIZE and tokenizer.piece(2) == "<s>"
  vocab = data.get_vocabulary(_config())  # The seqio view of the same file.
  for snippet in offline_corpus.split_texts("validation")[:5]:
    assert tokenizer.encode(snippet) == list(vocab.encode(snippet))
    assert tokenizer.decode(tokenizer.encode(snippet)) == snippet
  assert text.load_tokenizer("bytes").encode("é") == [195, 169]
  with pytest.raises(ValueError, match="Gemma"):
    text.load_tokenizer(config={"data": {"task": "wiki", "vocab_path": ""}})
  with pytest.raises(FileNotFoundError, match="nope.model"):
    text.load_tokenizer("/nonexistent/nope.model")
  prompts = text.encode_prompts(tokenizer, ["def f():"], vocab_size=tokenizer.vocab_size)
  assert prompts[0][0] == text.BOS_ID
  with pytest.raises(ValueError, match="does not fit model.vocab_size=10"):
    text.encode_prompts(tokenizer, ["def f():"], vocab_size=10)


def test_shipped_vocabulary_is_reproducible(tmp_path):
  path = offline_corpus.train_vocabulary(str(tmp_path / "a.model"))
  with open(path, "rb") as f:
    fresh = f.read()
  if offline_corpus.fingerprint() == offline_corpus.VOCAB_CORPUS_FINGERPRINT:
    with open(offline_corpus.DEFAULT_VOCAB_PATH, "rb") as f:
      assert fresh == f.read()
  else:  # another CPython: another corpus; training must still be deterministic
    with open(offline_corpus.train_vocabulary(str(tmp_path / "b.model")), "rb") as f:
      assert fresh == f.read()


def test_batches_are_well_formed_and_tokenized_through_the_seqio_task():
  vocab = data.get_vocabulary(_config())
  batch = next(_iterator(seq_len=256))
  packing.validate_batch(batch, 256)
  assert batch["inputs"].shape == (4, 256)
  assert batch["weights"].mean() > 0.9  # packed
  # The rows are real corpus text: decode a segment and find it in a document.
  row = batch["inputs"][0][batch["segment_ids"][0] == 1]
  snippet = vocab.decode([t for t in row.tolist() if t != data.BOS_ID][:30])
  assert any(snippet in t for t in offline_corpus.split_texts("train"))
  docs = tasks.tokenized_documents(tasks.get_task(_config()), "validation")
  assert all(d[-1] == data.EOS_ID for d in docs)
  assert [d.tolist() for d in docs[:5]] == [
      vocab.encode(t) + [data.EOS_ID] for t in offline_corpus.split_texts("validation")[:5]]


def test_same_seed_same_batches_other_seed_other_batches():
  _assert_same(_take(_iterator(seed=3), 3), _take(_iterator(seed=3), 3))
  a, b = next(_iterator(seed=3)), next(_iterator(seed=4))
  assert not np.array_equal(a["inputs"], b["inputs"])
  # Validation does not depend on the seed.
  _assert_same(_take(_iterator("validation", seed=3), 2), _take(_iterator("validation", seed=4), 2))


@pytest.mark.parametrize("split", ["train", "validation"])
def test_process_shards_are_disjoint_and_cover_the_global_batch(split):
  whole = _take(_iterator(split, global_batch_size=8, seed=1), 2)
  parts = [_take(_iterator(split, global_batch_size=8, seed=1, process_index=p, process_count=4), 2)
           for p in range(4)]
  for step in range(2):
    for k in data.BATCH_KEYS:
      np.testing.assert_array_equal(np.concatenate([p[step][k] for p in parts]), whole[step][k])
    rows = {p[step]["inputs"][i].tobytes() for p in parts for i in range(2)}
    assert len(rows) == 8  # no two processes got the same row


def test_resume_equals_uninterrupted_across_epochs():
  # Long rows, so that an epoch is a few steps and the run crosses epoch boundaries.
  kwargs = dict(global_batch_size=32, seq_len=4096, seed=5)
  uninterrupted = _take(_iterator(**kwargs), 12)
  it = _iterator(**kwargs)
  _take(it, 5)
  state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
  assert state["epoch"] >= 0 and state["step"] == 5
  resumed = _iterator(**kwargs)
  resumed.set_state(state)
  _assert_same(_take(resumed, 7), uninterrupted[5:])
  assert resumed.get_state()["epoch"] >= 1


def test_restore_is_cheap():
  it = _iterator(seq_len=256)
  state = {**it.get_state(), "step": 10**7, "epoch": 5_000, "row": 17}
  start = time.perf_counter()
  it.set_state(state)
  packing.validate_batch(next(it), 256)
  assert time.perf_counter() - start < 2.0  # packs one epoch, never replays 10^7 steps
  assert it.get_state()["step"] == 10**7 + 1


def test_a_state_is_refused_on_other_documents():
  from rope_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  common = dict(shuffle=True, pack=True, task="offline", split="train", global_batch_size=2,
                seq_len=8, seed=0, process_index=0, process_count=1)
  docs = tuple(np.arange(3, 3 + n, dtype=np.int32) for n in (5, 9, 4))
  state = pipeline.InMemoryIterator(docs, **common).get_state()
  with pytest.raises(ValueError, match="documents"):
    pipeline.InMemoryIterator(docs[:2], **common).set_state(state)
  pipeline.InMemoryIterator(docs, **{**common, "process_count": 2}).set_state(state)


@pytest.mark.parametrize("seq_len", [256, 512, 1024])
def test_validation_at_longer_eval_lengths(seq_len):
  batch = next(_iterator("validation", global_batch_size=8, seq_len=seq_len))
  packing.validate_batch(batch, seq_len)
  assert batch["positions"].max() >= seq_len // 2  # long documents reach far positions


def test_unpacked_rows_hold_one_segment():
  batch = next(_iterator(pack=False, seq_len=64))
  packing.validate_batch(batch, 64)
  assert batch["segment_ids"].max() == 1


def test_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="known tasks: offline, wiki, flan_v2, probe_copy"):
    _iterator(task="wikipedia")
  with pytest.raises(ValueError, match="known tasks"):
    data.get_vocabulary(_config(task="c4"))
  missing = str(tmp_path / "nope.model")
  with pytest.raises(FileNotFoundError, match=f"{missing}.*--write_vocab"):
    _iterator(vocab_path=missing)
  with pytest.raises(ValueError, match="multiple of process_count 3"):
    _iterator(global_batch_size=8, process_count=3)
  with pytest.raises(ValueError, match="split"):
    _iterator(split="test")
  it = _iterator(seed=1)
  with pytest.raises(ValueError, match="seed"):
    it.set_state({**it.get_state(), "seed": 2})


def test_validate_accepts_the_default_and_rejects_bad_sections():
  cfg = data.default_config()
  assert data.validate(cfg) == cfg and data.validate(cfg.to_dict()) == cfg
  bad = [({"shuffle_bufer_size": 10}, "Unknown key.*shuffle_bufer_size"),
         ({"task": "c4"}, "known tasks"),
         ({"validation_percent": 0}, "validation_percent"),
         ({"pack": 1}, "pack must be a bool"),
         ({"vocab_path": None}, "vocab_path must be a string")]
  for override, message in bad:
    section = cfg.to_dict()
    section.update(override)
    with pytest.raises(ValueError, match=message):
      data.validate(section)
  section = cfg.to_dict()
  section["probe"]["num_keys"] = 0
  with pytest.raises(ValueError, match="probe.num_keys"):
    data.validate(section)
  del section["probe"]
  with pytest.raises(ValueError, match="Missing key.*probe"):
    data.validate(section)
