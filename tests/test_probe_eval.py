"""Scoring a model on probe rows (probe_eval) and starting a run from another's params."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rope_jax.data as data
from rope_jax.model import transformer as model_lib
from rope_jax.training import probe_eval
from rope_jax.training import warm_start

CFG = model_lib.ModelConfig(vocab_size=64, num_layers=1, embed_dim=16, num_heads=2,
                            num_kv_heads=1, head_dim=8, mlp_dim=32)


def _model(cfg=CFG):
  return model_lib.Transformer(cfg, rngs=nnx.Rngs(0))


def _oracle(wrong_row=None):
  """A stand-in for the forward pass that predicts every target (but one row's answer)."""

  def predict(graphdef, params, batch):
    del graphdef, params
    ids = np.asarray(batch["targets"]).copy()
    if wrong_row is not None:
      j = np.flatnonzero(np.asarray(batch["weights"])[wrong_row])[-1]
      ids[wrong_row, j] += 1
    return jnp.asarray(ids)

  return predict


@pytest.mark.parametrize("task", ["probe_passkey", "probe_flipflop", "probe_mqar"])
def test_an_oracle_solves_every_row_and_one_wrong_token_fails_its_row(task, monkeypatch):
  cfg = data.default_config()
  kw = dict(task=task, seq_len=64, num_examples=10, batch_size=5)
  monkeypatch.setattr(probe_eval, "_predict", _oracle())
  big = _model(model_lib.ModelConfig(**{**CFG.__dict__, "vocab_size": 256}))
  assert probe_eval.solved(big, cfg, **kw).all()
  monkeypatch.setattr(probe_eval, "_predict", _oracle(wrong_row=2))
  got = probe_eval.solved(big, cfg, **kw)
  np.testing.assert_array_equal(got, [i % 5 != 2 for i in range(10)])
  score = probe_eval.score(big, cfg, **kw)
  assert (score.correct, score.total) == (8, 10) and score.lo < 0.8 < score.hi


def test_a_random_model_is_scored_on_the_fixed_validation_rows():
  cfg = data.default_config()
  model = _model()
  a = probe_eval.solved(model, cfg, task="probe_flipflop", seq_len=32, num_examples=6)
  b = probe_eval.solved(model, cfg, task="probe_flipflop", seq_len=32, num_examples=6)
  assert a.shape == (6,) and a.dtype == bool
  np.testing.assert_array_equal(a, b)


def test_passkey_grid_has_one_cell_per_length_and_depth(monkeypatch):
  monkeypatch.setattr(probe_eval, "_predict", _oracle())
  cells = probe_eval.passkey_grid(_model(), data.default_config(), lengths=(32, 64),
                                  depths=(0.0, 1.0), num_examples=3)
  assert [(c["seq_len"], c["depth"]) for c in cells] == [(32, 0.0), (32, 1.0), (64, 0.0),
                                                          (64, 1.0)]
  assert all(c["accuracy"] == 1.0 and c["total"] == 3 for c in cells)


def test_token_ids_beyond_the_model_vocabulary_are_refused():
  with pytest.raises(ValueError, match="vocabulary has 64"):
    probe_eval.solved(_model(), data.default_config(), task="probe_mqar", seq_len=64,
                      num_examples=2)
  with pytest.raises(ValueError, match="Unknown long-probe setting"):
    probe_eval.solved(_model(), data.default_config(), task="probe_passkey", seq_len=64,
                      num_examples=2, settings={"depth": 0.5})


@pytest.mark.parametrize("spec,want", [
    ("/runs/rope", ("/runs/rope", None)), ("/runs/rope:300", ("/runs/rope", 300)),
    ("gs://b/runs/rope", ("gs://b/runs/rope", None)),
    ("gs://b/runs/rope:7", ("gs://b/runs/rope", 7)), ("runs/a:b", ("runs/a:b", None)),
])
def test_init_from_spec(spec, want):
  assert warm_start.parse_spec(spec) == want


def test_init_from_refuses_a_source_of_another_shape_naming_the_parameter():
  abstract = lambda cfg: nnx.split(nnx.eval_shape(
      lambda: model_lib.Transformer(cfg, rngs=nnx.Rngs(0))), nnx.Param)[1]
  rope = abstract(CFG)
  p_rope = abstract(model_lib.ModelConfig(**{**CFG.__dict__, "rope": model_lib.RopeConfig(
      fraction=0.75)}))
  warm_start.check_compatible(rope, p_rope, "src")  # another encoding: the same tree
  wider = abstract(model_lib.ModelConfig(**{**CFG.__dict__, "mlp_dim": 48}))
  with pytest.raises(ValueError, match=r"src has parameter .*'mlp'.* \(32, 16\) .* \(48, 16\)"):
    warm_start.check_compatible(rope, wider, "src")
  with pytest.raises(ValueError, match="init_from must be"):
    warm_start.parse_spec("")


def test_passkey_grid_gives_each_depth_its_own_needles_and_reuses_them_across_lengths(
    monkeypatch):
  seen = []

  def record(graphdef, params, batch):
    del graphdef, params
    w = np.asarray(batch["weights"]) > 0
    seen.append([tuple(np.asarray(batch["targets"])[i][w[i]]) for i in range(w.shape[0])])
    return jnp.asarray(batch["targets"])

  monkeypatch.setattr(probe_eval, "_predict", record)
  probe_eval.passkey_grid(_model(), data.default_config(), lengths=(32, 64), depths=(0.0, 1.0),
                          num_examples=4)
  (l32_d0, l32_d1, l64_d0, l64_d1) = seen
  assert l32_d0 == l64_d0 and l32_d1 == l64_d1  # the same needles at every length
  assert not set(l32_d0) & set(l32_d1)  # other needles at another depth
