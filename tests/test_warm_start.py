"""checkpoint.init_from end to end: a run with another encoding starts from a run's params.

The continued run is the command line (the flag end to end); the source run and the bad-input
run train in-process (``loop.run``), which the command line wraps.
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
import pytest

from rope_jax import errors
from rope_jax.checkpoint import rundir
from rope_jax.checkpoint import manager as checkpoint
from rope_jax.config import base as config_lib
from rope_jax.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {
    "train.data_source": "synthetic", "model.num_layers": 1, "train.global_batch_size": 4,
    "train.seq_len": 32, "train.warmup_steps": 1, "train.log_every_steps": 1,
    "eval.num_batches": 0, "checkpoint.async_save": False,
}
COMMON = [f"--config.{k}={v}" for k, v in TINY.items()]


def _config(pe, **overrides):
  """The in-process twin of the command line below: TINY plus ``section__name`` overrides."""
  c = config_lib.load_config(f"configs/tiny.py:{pe}")
  for key, value in {**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}}.items():
    section, name = key.split(".")
    c[section][name] = value
  return c


def _train(workdir, pe, *extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  cmd = [sys.executable, "-m", "rope_jax.train", f"--config=configs/tiny.py:{pe}", *COMMON,
         f"--workdir={workdir}", *extra]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _params_and_step(workdir):
  """The run's newest params (via rundir) and its saved train-state step counter."""
  restored = rundir.load(workdir)
  ckpt = checkpoint.Checkpointer.for_reading(os.path.join(workdir, "checkpoints"))
  try:
    host = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
    _, step, _ = ckpt.restore_params(jax.ShapeDtypeStruct((), jnp.int32, sharding=host),
                                     restored.step, key="step")
  finally:
    ckpt.close()
  return restored.step, nnx.split(restored.model, nnx.Param)[1], int(step)


def test_continued_run_starts_from_the_source_params_with_a_fresh_optimizer(tmp_path):
  src, dst, bad = (str(tmp_path / n) for n in ("rope", "p_rope", "bad"))
  loop.run(_config("pe=rope", train__num_steps=3), src)
  # One step at a negligible learning rate: the params stay the source's (to ~1e-9).
  r = _train(dst, "pe=p_rope,p=0.75", "--config.train.num_steps=1",
             "--config.train.learning_rate=1e-9", f"--config.checkpoint.init_from={src}")
  assert r.returncode == 0, r.stderr[-3000:]
  src_step, src_params, _ = _params_and_step(src)
  dst_step, dst_params, dst_counter = _params_and_step(dst)
  assert (src_step, dst_step) == (3, 1)
  assert dst_counter == 1  # its own step counter: a fresh optimizer state and schedule
  for a, b in zip(jax.tree.leaves(src_params), jax.tree.leaves(dst_params)):
    np.testing.assert_allclose(a, b, atol=1e-6)
  # The new run is an ordinary run of its own encoding, whose config names its source.
  _, config, _ = rundir.load_model(dst)
  assert config.model.rope.fraction == 0.75 and config.checkpoint.init_from == src
  # A source that does not exist is bad input (exit code 2 on the command line), named.
  with pytest.raises(errors.BadInputError, match="checkpoint.init_from=") as e:
    loop.run(_config("pe=nope", train__num_steps=1,
                     checkpoint__init_from=str(tmp_path / "missing")), bad)
  assert errors.exit_code(e.value) == errors.EXIT_BAD_INPUT
