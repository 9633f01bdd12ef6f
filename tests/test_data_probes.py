"""Synthetic probes: their answers, determinism, eval lengths, shards, resume, accuracy."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import rope_jax.data as data
from rope_jax.data import packing, probes, tasks

KW = dict(num_symbols=64, num_keys=1024, num_queries=4)


def _iterator(kind, split="train", global_batch_size=4, seq_len=64, seed=0, process_index=0,
              process_count=1, **probe):
  cfg = data.default_config()
  cfg.task = f"probe_{kind}"
  cfg.probe.update(probe)
  return data.make_iterator(cfg, split=split, global_batch_size=global_batch_size,
                            seq_len=seq_len, seed=seed, process_index=process_index,
                            process_count=process_count)


def _answers(row):
  m = row["weights"] > 0
  return row["targets"][m]


@pytest.mark.parametrize("seq_len", [32, 65, 256])
def test_copy_and_reverse_answers(seq_len):
  for kind in ("copy", "reverse"):
    row = probes.make_example(kind, 7, seed=1, split="train", seq_len=seq_len, **KW)
    n = (seq_len - 1) // 2
    x = row["inputs"][1:n + 1]
    assert row["inputs"][0] == probes.BOS_ID and row["inputs"][n + 1] == probes.SEP_ID
    np.testing.assert_array_equal(_answers(row), x if kind == "copy" else x[::-1])
    assert ((x >= probes.FIRST_SYMBOL_ID) & (x < probes.FIRST_SYMBOL_ID + 64)).all()
    assert len(np.unique(x)) < len(x)  # repeated symbols: content alone is ambiguous


@pytest.mark.parametrize("seq_len", [32, 256, 1024])
def test_recall_answers_are_the_values_bound_to_the_queried_keys(seq_len):
  row = probes.make_example("recall", 3, seed=2, split="train", seq_len=seq_len, **KW)
  n = int(row["segment_ids"].sum())
  s = np.concatenate([row["inputs"][:n], row["targets"][n - 1:n]])
  sep = int(np.flatnonzero(s == probes.SEP_ID)[0])
  keys, values = s[1:sep:2], s[2:sep:2]
  real = keys != probes.FILLER_ID
  assert np.all(values[~real] == probes.FILLER_ID)
  keys, values = keys[real], values[real]
  assert len(set(keys.tolist())) == len(keys) == min(1024, (seq_len - 10) // 2)
  binding = dict(zip(keys.tolist(), values.tolist()))
  m = row["weights"] > 0
  queried = row["inputs"][m]
  assert len(queried) == 4
  np.testing.assert_array_equal(row["targets"][m], [binding[k] for k in queried.tolist()])


def test_recall_spreads_a_fixed_number_of_pairs_over_longer_rows():
  """With fewer keys than slots, a 4x longer row holds the same pairs 4x further apart."""
  spans = {}
  for seq_len in (128, 512):
    row = probes.make_example("recall", 0, seed=0, split="validation", seq_len=seq_len,
                              num_symbols=16, num_keys=32, num_queries=4)
    context = row["inputs"][1:int(np.flatnonzero(row["inputs"] == probes.SEP_ID)[0])]
    real = np.flatnonzero(context[::2] != probes.FILLER_ID)
    assert len(real) == 32
    spans[seq_len] = real[-1] - real[0]
  assert spans[512] > 3 * spans[128]


@pytest.mark.parametrize("kind", probes.KINDS)
def test_batches_are_deterministic_by_seed_and_well_formed(kind):
  a, b = next(_iterator(kind, seed=5)), next(_iterator(kind, seed=5))
  packing.validate_batch(a, 64)
  for k in data.BATCH_KEYS:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a["inputs"], next(_iterator(kind, seed=6))["inputs"])
  # Validation is a fixed set, whatever the training seed.
  np.testing.assert_array_equal(next(_iterator(kind, "validation", seed=5))["inputs"],
                                next(_iterator(kind, "validation", seed=6))["inputs"])
  assert not np.array_equal(a["inputs"], next(_iterator(kind, "validation", seed=5))["inputs"])


@pytest.mark.parametrize("kind", probes.KINDS)
def test_longer_eval_lengths_give_longer_probes(kind):
  lengths = []
  for seq_len in (64, 128, 256):
    batch = next(_iterator(kind, "validation", seq_len=seq_len))
    packing.validate_batch(batch, seq_len)
    lengths.append(batch["segment_ids"].sum(1).min())
    assert lengths[-1] >= seq_len - 3
  assert lengths[0] < lengths[1] < lengths[2]


def test_process_shards_are_disjoint_and_cover_the_global_batch():
  whole = next(_iterator("recall", global_batch_size=8))
  parts = [next(_iterator("recall", global_batch_size=8, process_index=p, process_count=2))
           for p in range(2)]
  for k in data.BATCH_KEYS:
    np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])


def test_resume_is_o1_and_equals_uninterrupted():
  it = _iterator("copy")
  straight = [next(it) for _ in range(6)]
  it = _iterator("copy")
  for _ in range(4):
    next(it)
  state = it.get_state()
  resumed = _iterator("copy")
  resumed.set_state(state)
  for expected in straight[4:]:
    np.testing.assert_array_equal(next(resumed)["inputs"], expected["inputs"])
  far = _iterator("copy")
  far.set_state({**state, "step": 10**12})
  packing.validate_batch(next(far), 64)


def test_seqio_probe_task_yields_the_iterator_examples():
  cfg = data.default_config()
  cfg.task = "probe_reverse"
  task = tasks.get_task(cfg, seq_len=32)
  assert task.name == "rope_jax.probe_reverse.L32"
  examples = list(task.get_dataset(None, split="train", shuffle=False, seed=9,
                                   try_in_mem_cache=False).take(4).as_numpy_iterator())
  batch = next(_iterator("reverse", seq_len=32, seed=9))
  for i, ex in enumerate(examples):
    for k in data.BATCH_KEYS:
      np.testing.assert_array_equal(ex[k], batch[k][i])


def test_probe_ids_must_fit_the_vocabulary():
  with pytest.raises(ValueError, match=">= 3005"):
    _iterator("recall", num_keys=2936)
  with pytest.raises(ValueError, match="too short"):
    _iterator("recall", seq_len=8)


def test_accuracy_counts_exact_answers_only():
  batch = next(_iterator("copy", seq_len=32))
  targets = batch["targets"]
  n = batch["weights"].sum()
  assert float(probes.accuracy(targets, batch)) == 1.0
  logits = jax.nn.one_hot(targets, 128)  # [B, L, V]
  assert float(probes.accuracy(logits, batch)) == 1.0
  wrong = targets.copy()
  wrong[batch["weights"] == 0] = 99  # errors off the answers do not count
  assert float(probes.accuracy(wrong, batch)) == 1.0
  r, c = np.argwhere(batch["weights"] > 0)[0]
  wrong[r, c] += 1
  assert float(probes.accuracy(wrong, batch)) == pytest.approx((n - 1) / n)
  assert float(probes.example_accuracy(wrong, batch)) == pytest.approx(3 / 4)
  assert float(jax.jit(probes.accuracy)(wrong, batch)) == pytest.approx((n - 1) / n)
