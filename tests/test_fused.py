"""The fused grid (``rope_jax.training.fused``): every member trains exactly as its own run.

For each code path of the Table 2 encodings (NoPE, RoPE, p-RoPE's identity pairs, reversed,
partial rotary's channel permutation) and two seeds, two fused steps on shared batches give the same losses and the same updated
parameters (in the run's channel order) as ``train_lib.train_step`` on the run's own model from
``train_lib.init_state`` with the same seed. Partial rotary is fused through a channel
permutation; its saved state is the run's layout again.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rope_jax import rope as rope_lib
from rope_jax.config.schema import RopeConfig
from rope_jax.model import transformer as model_lib
from rope_jax.training import fused
from rope_jax.training import train_lib

H = 16
MODEL = model_lib.ModelConfig(vocab_size=64, num_layers=2, embed_dim=32, num_heads=2,
                              num_kv_heads=1, head_dim=H, mlp_dim=64)
TRAIN = train_lib.TrainConfig(global_batch_size=4, seq_len=24, num_steps=10, warmup_steps=2,
                              learning_rate=3e-3, adam_eps=1e-6)
ENCODINGS = {
    "nope": RopeConfig(fraction=0.0),
    "rope-10k": RopeConfig(),
    "rope-39": RopeConfig(theta=39.0625),
    "p075": RopeConfig(fraction=0.75, theta=39.0625),
    "p025": RopeConfig(fraction=0.25, theta=39.0625),
    "reversed": RopeConfig(variant="reversed", fraction=0.75, theta=39.0625),
    "partial": RopeConfig(variant="partial", fraction=0.75, theta=39.0625),
}


def _batch(i: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(i)
  b, l = TRAIN.global_batch_size, TRAIN.seq_len
  toks = rng.integers(3, MODEL.vocab_size, size=(b, l + 1))
  return {"inputs": toks[:, :-1].astype(np.int32), "targets": toks[:, 1:].astype(np.int32),
          "weights": np.ones((b, l), np.float32), "segment_ids": np.ones((b, l), np.int32),
          "positions": np.broadcast_to(np.arange(l, dtype=np.int32), (b, l)).copy()}


def test_member_encoding_partial_is_a_permutation_of_the_run():
  rope = ENCODINGS["partial"]
  freqs, perm = fused.member_encoding(rope, H)
  assert sorted(perm) == list(range(H))
  x = jax.random.normal(jax.random.key(0), (1, 5, 2, H))
  pos = jnp.arange(5)[None]
  want = rope.apply(x, pos)  # The run: partial rotary on its own channels.
  got = fused.FrequencyRope(jnp.asarray(freqs)).apply_tables(
      x[..., perm], fused.FrequencyRope(jnp.asarray(freqs)).tables(pos, H))
  np.testing.assert_allclose(np.asarray(got), np.asarray(want)[..., perm], atol=1e-6)
  # The same number of rotating pairs, and the same frequencies, as the run.
  run_freqs, rdim = rope_lib.rotary_frequencies(H, theta=rope.theta, fraction=rope.fraction,
                                                variant="partial")
  np.testing.assert_allclose(np.sort(freqs[freqs > 0]), np.sort(run_freqs))
  assert rdim == 2 * int(0.75 * H // 2)


def test_member_encoding_rejects_interleaved():
  with pytest.raises(ValueError, match="split-half"):
    fused.member_encoding(RopeConfig(layout="interleaved"), H)


# One per code path: the other encodings differ from these only in θ or p (one compile each).
STEP_ENCODINGS = ("nope", "rope-39", "p075", "reversed", "partial")


def test_fused_step_equals_per_run_step():
  members = [fused.Member(f"{k}-s{s}", ENCODINGS[k], s) for k in STEP_ENCODINGS for s in (0, 1)]
  grid = fused.FusedGrid(MODEL, TRAIN, members)
  state = grid.init()
  batches = [_batch(0), _batch(1)]
  losses = []
  for b in batches:
    state, m = grid.step(state, b)
    losses.append(np.asarray(m["loss"]))
  optimizer, schedule = train_lib.make_optimizer(TRAIN)
  steps = {}  # One compiled per-run step per encoding, shared by its seeds.
  for i, member in enumerate(members):
    cfg = model_lib.ModelConfig(**{**MODEL.__dict__, "rope": member.rope})
    if member.rope not in steps:
      graphdef, _ = model_lib.abstract_model(cfg)
      steps[member.rope] = jax.jit(functools.partial(
          train_lib.train_step, graphdef=graphdef, optimizer=optimizer, schedule=schedule,
          z_loss=0.0))
    step = steps[member.rope]
    run = train_lib.init_state(cfg, optimizer, member.seed)
    for k, b in enumerate(batches):
      run, m = step(run, {key: jnp.asarray(v) for key, v in b.items()})
      np.testing.assert_allclose(losses[k][i], float(m["loss"]), rtol=1e-5,
                                 err_msg=f"{member.name} step {k}")
    got = grid.member_state(state, i)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, np.asarray(b), atol=2e-5,
                                                         err_msg=member.name),
                 got["params"], jax.device_get(run["params"]))
    assert int(got["step"]) == 2


def test_members_differ_and_ablation_changes_only_the_band():
  members = [fused.Member("rope", ENCODINGS["rope-39"], 0), fused.Member("nope", ENCODINGS["nope"], 0)]
  grid = fused.FusedGrid(MODEL, TRAIN, members)
  state = grid.init()
  b = _batch(3)
  base = grid.eval_sums(state["params"], b)
  assert base["loss_sum"].shape == (2, TRAIN.global_batch_size)
  # Same init, different encodings: the NoPE member's loss differs from RoPE's.
  assert not np.allclose(base["loss_sum"][0], base["loss_sum"][1])
  # Making every RoPE pair identity turns the RoPE member into the NoPE one (same params).
  ablated = grid.eval_sums(state["params"], b, freqs=np.zeros_like(np.asarray(grid.freqs)))
  np.testing.assert_allclose(ablated["loss_sum"][0], base["loss_sum"][1], rtol=1e-5)


def test_exact_counts_the_whole_answer():
  members = [fused.Member("rope", ENCODINGS["rope-39"], 0)]
  grid = fused.FusedGrid(MODEL, TRAIN, members)
  state = grid.init()
  b = _batch(4)
  model = fused.with_frequencies(
      __import__("flax").nnx.merge(grid.graphdef, jax.tree.map(lambda x: x[0], state["params"])),
      grid.freqs[0])
  pred = np.asarray(jnp.argmax(model(jnp.asarray(b["inputs"])).logits, -1))
  # Row 0: answers exactly where the model is right -> exact 1; row 1: one answer token wrong
  # among right ones -> 0; row 2: no answer tokens -> 0; row 3: all answer tokens wrong -> 0.
  b["targets"] = pred.copy()
  b["weights"] = np.zeros_like(b["weights"])
  b["weights"][0, 3:9] = 1
  b["weights"][1, 3:9] = 1
  b["targets"][1, 5] = (pred[1, 5] + 1) % MODEL.vocab_size
  b["weights"][3, 3:9] = 1
  b["targets"][3, 3:9] = (pred[3, 3:9] + 1) % MODEL.vocab_size
  out = grid.eval_sums(state["params"], b)
  np.testing.assert_array_equal(out["exact"][0], [1.0, 0.0, 0.0, 0.0])
  np.testing.assert_array_equal(out["correct_sum"][0], [6.0, 5.0, 0.0, 0.0])


def test_written_member_is_an_ordinary_run(tmp_path):
  """A saved partial-rotary member restores through rundir as a ``pe=partial`` model with the
  fused member's outputs, and rope_jax.results reads its metrics."""
  import json  # pylint: disable=g-import-not-at-top
  from rope_jax.checkpoint import rundir  # pylint: disable=g-import-not-at-top
  from rope_jax.config import base as config_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.sweeps import results as results_lib  # pylint: disable=g-import-not-at-top
  rope = ENCODINGS["partial"]
  grid = fused.FusedGrid(MODEL, TRAIN, [fused.Member("partial-s0", rope, 0)])
  state, _ = grid.step(grid.init(), _batch(0))
  cfg = config_lib.load_config("configs/tiny.py:pe=partial,p=0.75,theta=39.0625")
  cfg.model.update(vocab_size=MODEL.vocab_size, num_layers=MODEL.num_layers,
                   embed_dim=MODEL.embed_dim, num_heads=MODEL.num_heads,
                   num_kv_heads=MODEL.num_kv_heads, head_dim=H, mlp_dim=MODEL.mlp_dim)
  workdir = str(tmp_path / "partial" / "s0")
  fused.write_run(workdir, grid.member_state(state, 0), json.loads(cfg.to_json_best_effort()),
                  [{"step": 1, "split": "train", "loss": 1.0},
                   {"step": 1, "split": "eval", "perplexity_len24": 5.0}])
  restored = rundir.load(workdir)
  assert restored.model_config.rope == rope and restored.step == 1
  b = _batch(5)
  out = restored.model(jnp.asarray(b["inputs"]))
  want = out.logits
  got = fused.forward(grid.graphdef, jax.tree.map(lambda x: x[0], state["params"]),
                      grid.freqs[0], {k: jnp.asarray(v) for k, v in b.items()})
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4)
  res = results_lib.collect(workdir)
  assert res.found and res.steps == 1 and res.perplexity == {24: 5.0}
