"""Long-context probes (passkey, MQAR, flip-flop): answers per definition, determinism, layout."""

from __future__ import annotations

import numpy as np
import pytest

import rope_jax.data as data
from rope_jax.data import config as data_config
from rope_jax.data import long_probes as lp
from rope_jax.data import packing

KW = {"passkey": dict(digits=5, depth=-1.0),
      "mqar": dict(num_pairs=8, num_keys=64, num_values=64, power_a=0.01),
      "flipflop": dict(p_ignore=0.8)}


def _sequence(row):
  """The row's token sequence s (inputs then the last target)."""
  n = int((row["segment_ids"] > 0).sum())
  return np.concatenate([row["inputs"][:n], row["targets"][n - 1:n]])


def _iterator(kind, split="train", global_batch_size=4, seq_len=64, seed=0, **settings):
  cfg = data.default_config()
  cfg.task = f"probe_{kind}"
  cfg.long_probe.update(settings)
  return data.make_iterator(cfg, split=split, global_batch_size=global_batch_size,
                            seq_len=seq_len, seed=seed, process_index=0, process_count=1)


@pytest.mark.parametrize("kind", lp.KINDS)
def test_examples_are_deterministic_by_seed_split_and_index(kind):
  make = lambda **k: lp.make_example(kind, **{**dict(index=3, seed=1, split="train",
                                                     seq_len=96), **KW[kind], **k})
  a, b = make(), make()
  for k in packing.BATCH_KEYS:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a["inputs"], make(seed=2)["inputs"])
  assert not np.array_equal(a["inputs"], make(index=4)["inputs"])
  # Validation ignores the run's seed (a fixed evaluation set).
  np.testing.assert_array_equal(make(split="validation", seed=1)["inputs"],
                                make(split="validation", seed=9)["inputs"])


@pytest.mark.parametrize("kind", lp.KINDS)
@pytest.mark.parametrize("seq_len", [64, 257])
def test_rows_fill_the_length_with_the_packer_layout(kind, seq_len):
  batch = lp.make_batch(kind, range(6), seed=0, split="train", seq_len=seq_len, **KW[kind])
  packing.validate_batch(batch, seq_len)
  assert (batch["weights"].sum(-1) >= 1).all()
  assert set(np.unique(batch["weights"])) <= {0.0, 1.0}
  # One segment per row that covers it all but at most one trailing pad (odd lengths).
  assert (batch["segment_ids"][:, : seq_len - 1] == 1).all()
  assert ((batch["inputs"] > 0) == (batch["segment_ids"] > 0)).all()


@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("seq_len", [64, 512])
def test_passkey_answer_is_the_hidden_number_at_its_depth(depth, seq_len):
  row = lp.make_example("passkey", 5, seed=0, split="validation", seq_len=seq_len, digits=5,
                        depth=depth)
  s = _sequence(row)
  assert len(s) == seq_len + 1 and s[0] == lp.BOS_ID
  marks = np.flatnonzero(s == lp.MARK_ID)
  assert len(marks) == 2 and marks[1] == seq_len - 5
  filler = seq_len - 12
  assert marks[0] == 1 + round(depth * filler)  # depth = fraction of the filler before it
  key = s[marks[0] + 1: marks[0] + 6]
  assert ((key >= lp.FIRST_SYMBOL_ID) & (key < lp.FIRST_SYMBOL_ID + 10)).all()
  np.testing.assert_array_equal(row["targets"][row["weights"] > 0], key)
  np.testing.assert_array_equal(s[-5:], key)
  # Everything else is the periodic filler, in phase across the needle.
  rest = np.delete(s[1:marks[1]], np.arange(marks[0] - 1, marks[0] + 5))
  np.testing.assert_array_equal(rest, lp.FIRST_SYMBOL_ID + 10 + np.arange(filler) % 24)
  if depth == 1.0:
    assert marks[0] + 6 == marks[1]  # right before the question
  if depth == 0.0:
    assert marks[0] == 1  # right after bos


def test_passkey_random_depth_covers_the_context():
  starts = [np.flatnonzero(_sequence(lp.make_example(
      "passkey", i, seed=0, split="train", seq_len=256, digits=3, depth=-1.0)) == lp.MARK_ID)[0]
            for i in range(200)]
  assert min(starts) < 25 and max(starts) > 225


@pytest.mark.parametrize("seq_len", [32, 128, 1024])
def test_mqar_answers_are_the_values_bound_to_the_queried_keys(seq_len):
  kw = dict(num_pairs=8, num_keys=64, num_values=32, power_a=0.01)
  for index in range(5):
    row = lp.make_example("mqar", index, seed=3, split="train", seq_len=seq_len, **kw)
    s = _sequence(row)
    keys, values = s[1:17:2], s[2:17:2]
    assert len(set(keys.tolist())) == 8
    assert ((keys >= 5) & (keys < 5 + 64)).all() and ((values >= 69) & (values < 69 + 32)).all()
    binding = dict(zip(keys.tolist(), values.tolist()))
    m = row["weights"] > 0
    queried = row["inputs"][m]
    assert sorted(queried.tolist()) == sorted(keys.tolist())  # every key queried once
    np.testing.assert_array_equal(row["targets"][m], [binding[k] for k in queried.tolist()])
    # Queries sit at the first token of a two-token slot; everything else there is noise.
    q = np.flatnonzero(m)  # index j: inputs[j] is the key, targets[j] = s[j + 1] its value
    assert ((q - 17) % 2 == 0).all()  # s[17 + 2x] for slot x
    tail = s[17:]
    noise = np.ones(len(tail), bool)
    noise[np.concatenate([q - 17, q - 16])] = False
    assert ((tail[noise] >= 5 + 64 + 32) & (tail[noise] < 5 + 64 + 32 + lp.MQAR_NOISE)).all()


def test_mqar_gaps_follow_the_power_law():
  p = lp.mqar_gap_probabilities(100, 0.25)
  assert p.sum() == pytest.approx(1.0)
  np.testing.assert_allclose(p / p[0], np.arange(1, 101) ** -0.75)
  # Short gaps are likely, longer rows reach longer gaps.
  kw = dict(num_pairs=4, num_keys=16, num_values=16, power_a=0.01)
  def slots(seq_len):
    rows = lp.make_batch("mqar", range(200), seed=0, split="train", seq_len=seq_len, **kw)
    return (np.nonzero(rows["weights"])[1] - 8 - 1) // 2
  short, long = slots(64), slots(1024)
  assert np.median(short) < 8 and short.max() < 28
  assert long.max() > 100 and np.mean(long < 10) > 0.3


def _reference_flipflop_answers(s):
  """Straight from the definition: after each read, the bit of the last write."""
  out, last = [], None
  for op, bit in zip(s[1::2], s[2::2]):
    if op == lp.FF_WRITE:
      last = bit
    elif op == lp.FF_READ:
      out.append(last)
  return out


@pytest.mark.parametrize("p_ignore", [0.0, 0.1, 0.8, 0.98])
def test_flipflop_reads_return_the_last_written_bit(p_ignore):
  for index in range(20):
    row = lp.make_example("flipflop", index, seed=1, split="train", seq_len=128,
                          p_ignore=p_ignore)
    s = _sequence(row)
    assert len(s) == 129
    ops = s[1::2]
    assert ops[0] == lp.FF_WRITE and ops[-1] == lp.FF_READ
    assert set(s[2::2].tolist()) <= {lp.FF_ZERO, lp.FF_ONE}
    np.testing.assert_array_equal(row["targets"][row["weights"] > 0],
                                  _reference_flipflop_answers(s))
    np.testing.assert_array_equal(row["inputs"][row["weights"] > 0], lp.FF_READ)


def test_flipflop_ignore_rate_is_dense_or_sparse_as_asked():
  for p_ignore in (0.1, 0.98):
    batch = lp.make_batch("flipflop", range(50), seed=0, split="train", seq_len=512,
                          p_ignore=p_ignore)
    ops = batch["inputs"][:, 1::2][:, 1:-1]  # the random instructions
    assert np.mean(ops == lp.FF_IGNORE) == pytest.approx(p_ignore, abs=0.02)
    assert np.mean(ops == lp.FF_WRITE) == pytest.approx((1 - p_ignore) / 2, abs=0.02)
  # Ignored bits are random, so content alone does not give the answer.
  batch = lp.make_batch("flipflop", range(50), seed=0, split="train", seq_len=512, p_ignore=0.8)
  ignored_bits = batch["inputs"][:, 2::2][batch["inputs"][:, 1::2][:, :-1] == lp.FF_IGNORE]
  assert 0.4 < np.mean(ignored_bits == lp.FF_ONE) < 0.6


@pytest.mark.parametrize("kind", lp.KINDS)
def test_iterators_are_deterministic_resumable_and_well_formed(kind):
  a = _iterator(kind, seed=5)
  first = next(a)
  packing.validate_batch(first, 64)
  state = a.get_state()
  second = next(a)
  b = _iterator(kind, seed=5)
  b.set_state(state)
  resumed, again = next(b), next(_iterator(kind, seed=5))
  for k in data.BATCH_KEYS:
    np.testing.assert_array_equal(resumed[k], second[k])
    np.testing.assert_array_equal(again[k], first[k])
  # The settings are part of the identity: another depth / rate does not resume this one.
  other = {"passkey": dict(passkey_depth=0.5), "mqar": dict(mqar_num_pairs=4),
           "flipflop": dict(flipflop_p_ignore=0.98)}[kind]
  with pytest.raises(ValueError, match="Cannot restore"):
    _iterator(kind, seed=5, **other).set_state(state)


def test_mixture_with_corpus_rows_keeps_the_packed_layout():
  cfg = data.default_config()
  cfg.task, cfg.mixture = "mixture", "offline:2,probe_passkey:1,probe_mqar:1,probe_flipflop:2"
  batch = next(data.make_iterator(cfg, split="train", global_batch_size=6, seq_len=128, seed=0,
                                  process_index=0, process_count=1))
  packing.validate_batch(batch, 128)
  data_config.validate(cfg)


def test_fixed_depth_from_the_config_reaches_the_rows():
  batch = next(_iterator("passkey", split="validation", seq_len=128, passkey_depth=0.0))
  assert (batch["inputs"][:, 1] == lp.MARK_ID).all()


@pytest.mark.parametrize("key,value,match", [
    ("passkey_depth", 1.5, "passkey_depth"), ("passkey_depth", -0.5, "passkey_depth"),
    ("flipflop_p_ignore", 1.0, "flipflop_p_ignore"), ("mqar_power_a", 0.0, "mqar_power_a"),
    ("mqar_num_pairs", 100, "mqar_num_pairs"), ("passkey_digits", 0, "passkey_digits"),
])
def test_bad_settings_are_rejected_by_name(key, value, match):
  cfg = data.default_config()
  cfg.long_probe[key] = value
  with pytest.raises(ValueError, match=match):
    data_config.validate(cfg)


def test_too_short_rows_and_unknown_kinds_are_clear_errors():
  with pytest.raises(ValueError, match="too short.*passkey"):
    lp.make_example("passkey", 0, seed=0, split="train", seq_len=10, digits=5, depth=0.5)
  with pytest.raises(ValueError, match="too short for 8 mqar"):
    lp.make_example("mqar", 0, seed=0, split="train", seq_len=31, **KW["mqar"])
  with pytest.raises(ValueError, match="Unknown long probe"):
    lp.make_example("needle", 0, seed=0, split="train", seq_len=64)
  with pytest.raises(ValueError, match="Unknown split"):
    lp.make_example("flipflop", 0, seed=0, split="test", seq_len=64, p_ignore=0.5)


def test_vocabulary_too_small_for_the_settings_is_refused():
  with pytest.raises(ValueError, match="vocabulary of >= 4021"):
    _iterator("mqar", mqar_num_keys=2000, mqar_num_values=2000)
