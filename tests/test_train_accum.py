"""Gradient accumulation (``train.grad_accum_steps``): A microbatches = one full-batch step.

One train step with A = 1, 2 and 4 from the same init on the same padded batch (microbatches
with very different numbers of weighted tokens, one with none) gives the same loss, gradient
norm and updated parameters; the microbatches stay sharded over the data axes on a 4-device
mesh (subprocess with fake CPU devices); bad settings are ValueErrors before compiling.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from rope_jax.config import base as config_lib
from rope_jax import sharding
from rope_jax.model import losses
from rope_jax.training import train_lib
from tests import fake_devices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B, L = 8, 32


def _config(accum: int, batch: int = B) -> ml_collections.ConfigDict:
  c = config_lib.load_config("configs/tiny.py")
  c.train.data_source = "synthetic"
  c.model.num_layers = 1
  c.train.global_batch_size = batch
  c.train.seq_len = L
  c.train.grad_accum_steps = accum
  c.train.z_loss = 1e-3  # Exercise the z-loss sums too.
  c.train.adam_eps = 1e-6  # Adam's g/|g| at step 1 amplifies reduction-order noise of ~0 grads.
  return c


def _padded_batch(sections: dict[str, object]) -> dict[str, np.ndarray]:
  """A synthetic batch ``[B, L]`` with padding: rows 0, 2, 4 empty, row 6 mostly padding.

  Microbatch a holds rows a, a + A, ... (``split_microbatches``): with A = 2 microbatch 0 has
  far fewer weighted tokens than microbatch 1; with A = 4 microbatch 0 (rows 0, 4) has none.
  """
  src = train_lib.make_batch_iterator(sections["train"], sections["model"], None, split="train",
                                      global_batch_size=B, seq_len=L, seed=0, process_index=0,
                                      process_count=1)
  batch = {k: v.copy() for k, v in next(src).items()}
  pad = np.zeros((B, L), bool)
  pad[[0, 2, 4]] = True
  pad[6, 5:] = True
  for key in train_lib.BATCH_KEYS:
    batch[key][pad] = 0
  return batch


def test_accumulated_step_equals_full_batch_step():
  results = {}
  for accum in (1, 2, 4):
    sections = config_lib.validate(_config(accum))
    setup = train_lib.make_setup(sections["model"], sections["train"], sections["mesh"])
    batch = _padded_batch(sections)
    if accum > 1:  # The microbatches really are uneven.
      micro = train_lib.split_microbatches({"w": jnp.asarray(batch["weights"])}, accum)["w"]
      tokens = np.asarray(micro.sum(axis=(1, 2)))
      assert micro.shape == (accum, B // accum, L)
      assert tokens.max() > 3 * tokens.min(), tokens
      assert tokens.sum() == batch["weights"].sum()
    state, metrics = setup.compile_train_step()(setup.init(),
                                                train_lib.to_global(setup, batch, B))
    results[accum] = (train_lib.host_scalars(metrics), jax.device_get(state))
  ref_metrics, ref_state = results[1]
  assert ref_metrics["z_loss"] > 0 and ref_metrics["num_tokens"] > 0
  for accum in (2, 4):
    metrics, state = results[accum]
    assert metrics.keys() == ref_metrics.keys()
    for key in ref_metrics:
      np.testing.assert_allclose(metrics[key], ref_metrics[key], rtol=1e-5, err_msg=key)
    assert int(state["step"]) == 1
    # Adam's first update is ~lr·g/|g|: grads near 0 move by up to lr whatever their rounding,
    # so parameters agree to rtol 1e-5 and 1% of the step's learning rate (0.1% failed once on
    # CI from summation order alone: 2.4e-3 · lr on 2 of 65,536 entries).
    atol = 1e-2 * ref_metrics["learning_rate"]
    for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(ref_state["params"])):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol)
    for a, b in zip(jax.tree.leaves(state["opt_state"]), jax.tree.leaves(ref_state["opt_state"])):
      # Adam moments hold single gradients: entries near 0 only agree relative to the leaf scale.
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(b))))


def test_accumulated_gradients_equal_full_batch_gradients():
  """The function itself, without the optimizer: same gradients, loss and token count."""
  sections = config_lib.validate(_config(1))
  setup = train_lib.make_setup(sections["model"], sections["train"], sections["mesh"])
  params = setup.init()["params"]
  batch = {k: jnp.asarray(v) for k, v in _padded_batch(sections).items()}

  def full(p):
    logits = train_lib._forward(setup.graphdef, p, batch)  # pylint: disable=protected-access
    return losses.cross_entropy(logits, batch["targets"], batch["weights"], 1e-3)

  (_, ref_aux), ref_grads = jax.jit(jax.value_and_grad(full, has_aux=True))(params)
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ref_grads))
  for accum in (2, 4, 8):
    grads, aux = jax.jit(lambda p, b, a=accum: train_lib.accumulate_gradients(
        p, b, graphdef=setup.graphdef, num_microbatches=a, z_loss=1e-3))(params, batch)
    for key in ("loss", "z_loss", "num_tokens"):
      np.testing.assert_allclose(float(aux[key]), float(ref_aux[key]), rtol=1e-5, err_msg=key)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
      assert a.dtype == b.dtype
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("accum,match", [
    (0, "grad_accum_steps must be >= 1, got 0"),
    (3, "global_batch_size=8 is not divisible by train.grad_accum_steps=3"),
])
def test_bad_grad_accum_steps_are_config_errors(accum, match):
  with pytest.raises(ValueError, match=match):
    config_lib.validate(_config(accum))


def test_microbatch_must_split_over_the_data_parallel_devices():
  mesh = jax.sharding.AbstractMesh((2, 2, 1), sharding.MESH_AXES)
  rules = sharding.normalize_rules(sharding.DEFAULT_RULES)
  train_lib.check_grad_accum(16, 4, mesh, rules)  # 4 microbatches of 4 rows over 4 devices.
  with pytest.raises(ValueError, match=r"global_batch_size=8 is not divisible by "
                     r"train.grad_accum_steps=4 x the data-parallel size 4 .* = 16"):
    train_lib.check_grad_accum(8, 4, mesh, rules)


# Four fake CPU devices (subprocess) ------------------------------------------------------------

_WORKER = r"""
import json, jax, numpy as np
from jax.sharding import PartitionSpec as P
from rope_jax import sharding
from rope_jax.config import base as config_lib
from rope_jax.training import train_lib
from tests import test_train_accum as t
assert jax.device_count() == 4, jax.devices()
mesh_cfg = sharding.MeshConfig(data=2, fsdp=2)
out = {}
for accum in (1, 2):
  s = config_lib.validate(t._config(accum))
  setup = train_lib.make_setup(s["model"], s["train"], mesh_cfg)
  batch = train_lib.to_global(setup, t._padded_batch(s), t.B)
  if accum == 2:
    split = jax.jit(lambda b: train_lib.split_microbatches(b, 2))
    with sharding.activate(setup.mesh, setup.rules):
      micro = split(batch)
      hlo = split.lower(batch).compile().as_text()
    out["spec"] = [list(a) if isinstance(a, tuple) else a for a in micro["inputs"].sharding.spec]
    out["split_collectives"] = [op for op in ("all-to-all", "all-gather", "collective-permute",
                                              "all-reduce") if op in hlo]
  state, m = setup.compile_train_step()(setup.init(), batch)
  out[accum] = {"metrics": train_lib.host_scalars(m),
                "params": [np.asarray(x).tolist() for x in jax.tree.leaves(
                    jax.device_get(state["params"]))]}
try:
  train_lib.make_setup(s["model"], config_lib.validate(t._config(4, batch=8))["train"],
                       mesh_cfg)
except ValueError as e:
  out["error"] = str(e)
print("RESULT " + json.dumps(out))
"""


def test_microbatches_stay_sharded_on_four_devices():
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS=fake_devices.xla_flags(4))
  proc = subprocess.run([sys.executable, "-c", _WORKER], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.split("RESULT ", 1)[1])
  # [A, B/A, L]: each microbatch is split over data x fsdp, and splitting moves no data.
  assert out["spec"] == [None, ["data", "fsdp"]], out["spec"]
  assert out["split_collectives"] == []
  ref, acc = out["1"], out["2"]
  for key in ref["metrics"]:
    np.testing.assert_allclose(acc["metrics"][key], ref["metrics"][key], rtol=1e-5, err_msg=key)
  atol = 1e-2 * ref["metrics"]["learning_rate"]
  for a, b in zip(acc["params"], ref["params"]):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=atol)
  assert "grad_accum_steps=4 x the data-parallel size 4" in out["error"]
