"""data.task = "mixture": fixed rows per component task, deterministic, resumable."""

from __future__ import annotations

import numpy as np
import pytest

from rope_jax import data
from rope_jax.data import config as data_config


def _cfg(mixture="probe_copy:2,probe_recall:4"):
  cfg = data.default_config()
  cfg.task, cfg.mixture = "mixture", mixture
  return data.validate(cfg)


def test_rows_come_from_each_component_in_order():
  it = data.make_iterator(_cfg(), split="train", global_batch_size=6, seq_len=32, seed=0,
                          process_index=0, process_count=1)
  batch = next(it)
  copy = next(data.make_iterator(_component("probe_copy"), split="train",
                                 global_batch_size=2, seq_len=32, seed=0, process_index=0,
                                 process_count=1))
  recall = next(data.make_iterator(_component("probe_recall"), split="train",
                                   global_batch_size=4, seq_len=32, seed=0, process_index=0,
                                   process_count=1))
  for key in data.BATCH_KEYS:
    np.testing.assert_array_equal(batch[key], np.concatenate([copy[key], recall[key]]))


def _component(task):
  cfg = data.default_config()
  cfg.task = task
  return cfg


def test_resume_equals_uninterrupted_and_processes_split_rows():
  make = lambda **kw: data.make_iterator(_cfg(), split="train", global_batch_size=6, seq_len=32,
                                         seed=3, **kw)
  straight = make(process_index=0, process_count=1)
  batches = [next(straight) for _ in range(4)]
  first = make(process_index=0, process_count=1)
  next(first), next(first)
  resumed = make(process_index=0, process_count=1)
  resumed.set_state(first.get_state())
  for want in batches[2:]:
    got = next(resumed)
    for key in data.BATCH_KEYS:
      np.testing.assert_array_equal(got[key], want[key])
  p0 = next(data.make_iterator(_cfg(), split="train", global_batch_size=6, seq_len=32, seed=3,
                               process_index=0, process_count=2))
  p1 = next(data.make_iterator(_cfg(), split="train", global_batch_size=6, seq_len=32, seed=3,
                               process_index=1, process_count=2))
  rows = np.concatenate([p0["inputs"][:1], p1["inputs"][:1], p0["inputs"][1:], p1["inputs"][1:]])
  np.testing.assert_array_equal(rows, batches[0]["inputs"])


@pytest.mark.parametrize("mixture, match", [
    ("offline:2,bogus:1", "Bad data.mixture entry 'bogus:1'"),
    ("offline:x", "Bad data.mixture entry"),
    ("offline:2,offline:2", "each component task once"),
    ("", "each component task once"),
])
def test_bad_mixture_specs(mixture, match):
  with pytest.raises(ValueError, match=match):
    _cfg(mixture)


def test_rows_must_add_up_and_mixture_needs_its_task():
  with pytest.raises(ValueError, match="has 6 rows per batch but the global batch size is 8"):
    data.make_iterator(_cfg(), split="train", global_batch_size=8, seq_len=32, seed=0,
                       process_index=0, process_count=1)
  cfg = data.default_config()
  cfg.mixture = "offline:4"
  with pytest.raises(ValueError, match="set task='mixture' to use it"):
    data.validate(cfg)
  assert "mixture" in data_config.TASKS
