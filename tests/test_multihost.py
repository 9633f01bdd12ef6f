"""Two processes on loopback (gloo CPU collectives, 2 fake devices each) train like one process
with 4 devices: same losses, same eval, same checkpoint. Mesh data=2 x fsdp=2, so parameters
and batches are split across the processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np

from rope_jax.training import metrics
from tests import fake_devices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = [
    "-m", "rope_jax.train",
    "--config=configs/tiny.py",
    "--config.train.data_source=synthetic",
    "--config.model.num_layers=1",
    "--config.train.global_batch_size=8",
    "--config.train.seq_len=32",
    "--config.train.num_steps=6",
    "--config.train.warmup_steps=2",
    "--config.train.log_every_steps=2",
    "--config.eval.num_batches=1",
    "--config.eval.length_multipliers=(1, 2)",
    "--config.checkpoint.save_every_steps=3",
    "--config.mesh.data=2",
    "--config.mesh.fsdp=2",
]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3",
              XLA_FLAGS=fake_devices.xla_flags(devices))


def test_two_processes_match_one_process_with_four_devices(tmp_path):
  port = _free_port()
  multi = tmp_path / "two_processes"
  procs = [subprocess.Popen(
      [sys.executable, *COMMON, f"--workdir={multi}", f"--coordinator_address=127.0.0.1:{port}",
       "--num_processes=2", f"--process_id={i}"],
      cwd=REPO, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  single = tmp_path / "one_process"
  ref = subprocess.run([sys.executable, *COMMON, f"--workdir={single}"], cwd=REPO, env=_env(4),
                       capture_output=True, text=True, timeout=900)
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=900))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert ref.returncode == 0, ref.stderr[-3000:]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert "process 1 of 2, 2 local / 4 global devices" in outs[1][1]
  got, want = metrics.read_jsonl(str(multi)), metrics.read_jsonl(str(single))
  assert [r["step"] for r in got] == [r["step"] for r in want] == [2, 4, 6, 6]
  for g, w in zip(got, want):
    for key in ("loss", "grad_norm", "loss_len32", "loss_len64"):
      if key in w:
        np.testing.assert_allclose(g[key], w[key], rtol=1e-6, err_msg=key)
  assert sorted(os.listdir(multi / "checkpoints")) == ["3", "6"]
