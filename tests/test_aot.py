"""Ahead-of-time TPU compile of the real train step on this CPU host (needs libtpu).

``python -m rope_jax.aot`` compiles the tiny config for two v5p slices (8 chips) with data
(DCN) x FSDP x tensor parallelism and the Pallas splash-attention kernel, and reports
per-device memory against v5p HBM. Skipped only where libtpu is not installed (``.ci/run``
installs it with the ``tpu`` extra).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason="libtpu is not installed (pip install -e '.[tpu]'; .ci/run does).")
def test_tiny_train_step_compiles_for_two_v5p_slices():
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run(
      [sys.executable, "-m", "rope_jax.aot", "--config=configs/tiny.py", "--topology=v5p:2x2x1",
       "--num_slices=2", "--config.mesh.dcn_data=2", "--config.mesh.data=1",
       "--config.mesh.fsdp=2", "--config.mesh.tensor=2", "--config.model.attention_impl=splash",
       "--config.model.dtype=bfloat16", "--config.model.remat=full"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  assert "AOT compile for v5p:2x2x1 (8 x TPU v5), mesh {'data': 2, 'fsdp': 2, 'tensor': 2}" in out
  assert "per-device memory: argument" in out
  assert "HBM per device 95.00 GiB: FITS" in out
  assert "XLA FLOPs per step" in out
  kernels = int(out.split("Pallas TPU kernels:")[1].split()[0])
  assert kernels >= 3  # Splash forward, dq and dkv kernels.


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason="libtpu is not installed (pip install -e '.[tpu]'; .ci/run does).")
def test_unknown_topology_is_a_clear_error():
  from rope_jax.training import aot_compile as aot
  with pytest.raises(ValueError, match="Cannot get TPU topology 'v99:1x1'"):
    aot.topology_devices("v99:1x1")
