"""The training CLI end to end: SIGKILL + resume exactness, corrupted-checkpoint fallback,
SIGTERM preemption, and a non-finite loss stopping the run. Each run is a subprocess of
``python -m rope_jax.train`` on a 1-layer tiny model and the synthetic source."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from rope_jax.checkpoint import manager as checkpoint
from rope_jax.config import base as config_lib
from rope_jax.training import metrics
from rope_jax.training import train_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 20
COMMON = [
    "--config=configs/tiny.py",
    "--config.train.data_source=synthetic",
    "--config.model.num_layers=1",
    "--config.train.global_batch_size=4",
    "--config.train.seq_len=32",
    f"--config.train.num_steps={STEPS}",
    "--config.train.warmup_steps=2",
    "--config.train.log_every_steps=1",
    "--config.eval.num_batches=0",
    "--config.checkpoint.save_every_steps=5",
    "--config.checkpoint.max_to_keep=3",
]


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")


def _cmd(workdir, *extra):
  return [sys.executable, "-m", "rope_jax.train", *COMMON, f"--workdir={workdir}", *extra]


def _train(workdir, *extra, timeout=600):
  return subprocess.run(_cmd(workdir, *extra), cwd=REPO, env=_env(), capture_output=True,
                        text=True, timeout=timeout)


def _losses(workdir):
  return {r["step"]: r["loss"] for r in metrics.read_jsonl(str(workdir), split="train")}


def _abstract_state():
  c = config_lib.load_config("configs/tiny.py")
  c.model.num_layers = 1
  c.train.warmup_steps = 2
  c.train.num_steps = STEPS
  s = config_lib.validate(c)
  return train_lib.make_setup(s["model"], s["train"], s["mesh"]).abstract_state


def _restore(workdir, step=None):
  ckpt = checkpoint.Checkpointer.for_reading(os.path.join(workdir, "checkpoints"))
  return ckpt.restore(_abstract_state(), step=step)


def _assert_same_params(a, b):
  for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _corrupt_largest_file(step_dir):
  """Overwrites bytes in the middle of the largest array file (silent corruption)."""
  files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, "state"))
           for f in fs]
  target = max(files, key=os.path.getsize)
  size = os.path.getsize(target)
  with open(target, "r+b") as f:
    f.seek(size // 2)
    f.write(os.urandom(min(4096, size // 4)))


def test_sigkill_resume_is_exact_and_corrupt_latest_falls_back(tmp_path):
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  ref = _train(straight)
  assert ref.returncode == 0, ref.stderr[-3000:]

  # Killed with SIGKILL right after step 12 (the step-10 save may still be in flight).
  crash = _train(killed, "--testonly_sigkill_at_step=12")
  assert crash.returncode == -signal.SIGKILL, crash.stderr[-3000:]
  assert "step 12/20" in crash.stderr
  resumed = _train(killed)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Resumed from checkpoint step" in resumed.stderr

  ref_losses, got_losses = _losses(straight), _losses(killed)
  assert sorted(got_losses) == list(range(1, STEPS + 1))  # One record per step after resume.
  assert got_losses == ref_losses  # Bit-identical loss curve.
  step_a, state_a, data_a, _ = _restore(straight, STEPS)
  step_b, state_b, data_b, _ = _restore(killed, STEPS)
  assert step_a == step_b == STEPS and data_a == data_b == {"index": STEPS}
  _assert_same_params(state_a, state_b)

  # Corrupt the newest checkpoint and leave a half-written one: resume falls back to 15, says
  # so, deletes nothing good, and still ends with the same params.
  ckdir = killed / "checkpoints"
  _corrupt_largest_file(str(ckdir / str(STEPS)))
  (ckdir / "25.orbax-checkpoint-tmp-1234").mkdir()
  again = _train(killed)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "falling back" in again.stderr and "step 20" in again.stderr
  assert "Resumed from checkpoint step 15" in again.stderr
  names = os.listdir(ckdir)
  assert {"15", "20"} <= set(names)
  assert any(n.startswith("20.corrupt-") for n in names)  # Set aside, not deleted.
  _, state_c, _, _ = _restore(killed, STEPS)
  _assert_same_params(state_a, state_c)
  assert _losses(killed) == ref_losses


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
  workdir = tmp_path / "run"
  proc = subprocess.Popen(
      _cmd(workdir, "--config.train.num_steps=100000", "--config.train.warmup_steps=2",
           "--config.checkpoint.save_every_steps=100000"),
      cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 600
    while time.time() < deadline and max(_losses(workdir), default=0) < 3:
      assert proc.poll() is None, proc.communicate()[1][-3000:]
      time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 0, stderr[-3000:]
  assert "Preempted at step" in stderr
  last = max(_losses(workdir))
  step, state, data_state, meta = _restore(workdir)
  assert step == last >= 3
  assert data_state == {"index": step}
  assert meta["config"]["model"]["num_layers"] == 1
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  workdir = tmp_path / "run"
  proc = _train(workdir, "--config.train.learning_rate=1e30",
                "--config.checkpoint.save_every_steps=1", "--config.checkpoint.async_save=false")
  assert proc.returncode == 3, proc.stderr[-3000:]
  assert "Non-finite" in proc.stderr and "last good checkpoint" in proc.stderr
  losses = _losses(workdir)
  step, state, _, _ = _restore(workdir)
  assert step == max(losses) and np.isfinite(losses[step])
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))


def test_config_error_exits_before_compiling(tmp_path):
  proc = _train(tmp_path / "run", "--config.mesh.data=3")
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "!= device count 1" in proc.stderr
  assert "Compiled train step" not in proc.stderr
