"""Sharded training on 8 fake CPU devices equals one device.

The worker below runs in a subprocess with ``--xla_force_host_platform_device_count=8`` set
before JAX is imported, so the rest of the suite keeps its single device. Meshes (data, fsdp,
tensor): (8,1,1), (2,4,1), (2,2,2). Same initial params (initialised directly into each
layout), same batches: losses, gradient norms and updated params match one device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from tests import fake_devices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESHES = {"1dev": None, "data8": (8, 1, 1), "data2_fsdp4": (2, 4, 1),
          "data2_fsdp2_tensor2": (2, 2, 2)}
STEPS = 2


def _worker() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from rope_jax import sharding
  from rope_jax.config import base as config_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.training import train_lib  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 8, jax.devices()
  c = config_lib.load_config("configs/tiny.py")
  c.train.data_source = "synthetic"
  c.model.num_layers = 1
  c.train.global_batch_size = 8
  c.train.seq_len = 32
  c.train.warmup_steps = 1
  c.train.adam_eps = 1e-6  # Adam's m/sqrt(v) amplifies reduction-order noise of tiny grads.
  sections = config_lib.validate(c)
  model_cfg, train_cfg = sections["model"], sections["train"]
  src = train_lib.make_batch_iterator(train_cfg, model_cfg, None, split="train",
                                      global_batch_size=8, seq_len=32, seed=0, process_index=0,
                                      process_count=1)
  batches = [next(src) for _ in range(STEPS)]
  out = {}
  for name, shape in MESHES.items():
    if shape is None:
      setup = train_lib.make_setup(model_cfg, train_cfg, sharding.MeshConfig(data=1),
                                   devices=jax.devices()[:1])
    else:
      mesh_cfg = sharding.MeshConfig(data=shape[0], fsdp=shape[1], tensor=shape[2])
      setup = train_lib.make_setup(model_cfg, train_cfg, mesh_cfg)
    state = setup.init()
    step = setup.compile_train_step()
    losses, gnorms = [], []
    for b in batches:
      state, m = step(state, train_lib.to_global(setup, b, 8))
      m = train_lib.host_scalars(m)
      losses.append(m["loss"])
      gnorms.append(m["grad_norm"])
    params = [np.asarray(p) for p in jax.tree.leaves(jax.device_get(state["params"]))]
    if name == "1dev":
      ref_params = params
    diffs = np.concatenate([np.abs(a - b).ravel() for a, b in zip(params, ref_params)])
    q_spec = setup.state_shardings["params"]["blocks"][0]["attn"]["q_proj"].value.spec
    out[name] = {"losses": losses, "grad_norms": gnorms,
                 "param_max_diff": float(diffs.max()),
                 "param_median_diff": float(np.median(diffs)),
                 "q_proj_spec": list(q_spec),
                 "batch_spec": list(setup.batch_sharding.spec),
                 "q_proj_shards": len({d.id for d in state["params"]["blocks"][0]["attn"]
                                       ["q_proj"].value.sharding.device_set})}
  # Clear errors before compiling.
  errors = {}
  try:
    train_lib.make_setup(model_cfg, train_lib.TrainConfig(global_batch_size=4, warmup_steps=1),
                         sharding.MeshConfig(data=8))
  except ValueError as e:
    errors["batch"] = str(e)
  try:
    sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2))
  except ValueError as e:
    errors["mesh"] = str(e)
  out["errors"] = errors
  return out


def test_meshes_match_one_device():
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=fake_devices.xla_flags(8),
             PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run([sys.executable, os.path.abspath(__file__)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-5000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  ref = out["1dev"]
  assert ref["losses"][0] > 7  # Sanity: ~ln V at init.
  for name in ("data8", "data2_fsdp4", "data2_fsdp2_tensor2"):
    got = out[name]
    np.testing.assert_allclose(got["losses"], ref["losses"], rtol=2e-6, err_msg=name)
    np.testing.assert_allclose(got["grad_norms"], ref["grad_norms"], rtol=1e-5, err_msg=name)
    # Adam normalises each gradient element (m / sqrt(v)), so an element whose gradient is
    # ~0 can move by a visible fraction of one step (lr = 1e-3) under a different reduction
    # order: 1e-5 is 1% of a step; typical differences are ~1e-8.
    assert got["param_max_diff"] < 1e-5, (name, got["param_max_diff"])
    assert got["param_median_diff"] < 1e-7, (name, got["param_median_diff"])
  # The layouts really differ: params sharded over fsdp (and tensor), batch over data x fsdp.
  assert out["data8"]["q_proj_spec"] == []
  assert out["data2_fsdp4"]["q_proj_spec"] == ["fsdp"]
  assert out["data2_fsdp2_tensor2"]["q_proj_spec"] == ["fsdp", "tensor"]
  assert out["data2_fsdp4"]["batch_spec"] == [["data", "fsdp"]]
  assert out["data2_fsdp4"]["q_proj_shards"] == 8
  assert "not divisible by the data-parallel mesh axes" in out["errors"]["batch"]
  assert "!= device count 8" in out["errors"]["mesh"]


if __name__ == "__main__":
  print(json.dumps(_worker()))
