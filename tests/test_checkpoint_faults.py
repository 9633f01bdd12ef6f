"""Faults around the run directory (issue 12): entries rope_jax did not write, error types that
say what happened, quiet logs; and a run directory written by the old code still restores."""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import SingleDeviceSharding

from rope_jax import errors
from rope_jax.checkpoint import manager
from rope_jax.checkpoint import rundir

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "run_v0_1"

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _state(seed: int, rows: int = 4) -> dict[str, jax.Array]:
  rng = np.random.default_rng(seed)
  return {"w": jnp.asarray(rng.normal(size=(rows, 3)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}


def _abstract(state):
  sharding = SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


def _ckpt(directory, **kw) -> manager.Checkpointer:
  kw.setdefault("save_interval_steps", 1)
  kw.setdefault("max_to_keep", 1)
  kw.setdefault("async_save", False)
  return manager.Checkpointer(directory, **kw)


def _warnings(caplog) -> list[str]:
  return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# ------------------------------------------------------------- entries rope_jax did not write


def test_file_named_like_a_step_is_left_alone_and_named(tmp_path, caplog):
  directory = tmp_path / "checkpoints"
  directory.mkdir()
  (directory / "2").write_text("my notes")
  with caplog.at_level(logging.WARNING):
    with _ckpt(directory) as ckpt:
      assert ckpt.save(1, _state(1))
      assert not ckpt.save(2, _state(2))  # Skipped: the name is taken by the user's file.
      assert ckpt.save(3, _state(3))
      assert ckpt.all_steps() == [3]
  assert (directory / "2").read_text() == "my notes"
  warnings = _warnings(caplog)
  assert any("did not write" in w and "2" in w for w in warnings), warnings
  assert any("Not saving checkpoint step 2" in w for w in warnings), warnings


def test_dangling_symlink_does_not_make_saves_fail(tmp_path, caplog):
  directory = tmp_path / "checkpoints"
  directory.mkdir()
  os.symlink(tmp_path / "nowhere", directory / "2")
  with caplog.at_level(logging.WARNING):
    with _ckpt(directory) as ckpt:
      for step in (1, 2, 3):
        ckpt.save(step, _state(step))
      step, restored, _, _ = ckpt.restore(_abstract(_state(0)))
  assert step == 3
  np.testing.assert_array_equal(restored["w"], _state(3)["w"])
  assert os.path.islink(directory / "2") and not (directory / "2").exists()
  assert any("did not write" in w for w in _warnings(caplog))


def test_directories_rope_jax_did_not_write_are_never_deleted(tmp_path, caplog):
  directory = tmp_path / "checkpoints"
  directory.mkdir()
  (directory / "1").mkdir()  # Named like an old step: garbage collection must not take it.
  (directory / "1" / "mine.txt").write_text("x")
  (directory / "scratch").mkdir()
  with caplog.at_level(logging.WARNING):
    with _ckpt(directory) as ckpt:
      for step in (2, 3, 4):
        ckpt.save(step, _state(step))
      assert ckpt.all_steps() == [4]
      assert ckpt.restore(_abstract(_state(0)))[0] == 4
  assert (directory / "1" / "mine.txt").read_text() == "x"
  assert (directory / "scratch").is_dir()
  warned = [w for w in _warnings(caplog) if "did not write" in w]
  assert warned and "1" in warned[0] and "scratch" in warned[0], warned
  assert manager.restore_metadata(directory) is not None


# ------------------------------------------------------------------------------ error types


def test_every_step_damaged_is_no_checkpoint_error(tmp_path):
  directory = tmp_path / "checkpoints"
  with _ckpt(directory, max_to_keep=2) as ckpt:
    for step in (1, 2):
      ckpt.save(step, _state(step))
  for step in ("1", "2"):
    for path in (directory / step / "state").rglob("*"):
      if path.is_file() and path.parent.name == "d":
        path.write_bytes(b"")
  with pytest.raises(errors.NoCheckpointError, match=rf"{directory}.*step 2: .*step 1: ") as e:
    _ckpt(directory).restore(_abstract(_state(0)))
  assert e.value.exit_code == errors.EXIT_NO_CHECKPOINT
  with pytest.raises(manager.CorruptCheckpointError, match="step 2"):
    _ckpt(directory).restore(_abstract(_state(0)), step=2)


def test_incompatible_config_is_not_reported_as_damage(tmp_path, caplog):
  directory = tmp_path / "checkpoints"
  with _ckpt(directory, max_to_keep=2) as ckpt:
    for step in (1, 2):
      ckpt.save(step, _state(step))
  other = _abstract(_state(0, rows=8))  # A run of another width asked for in the same workdir.
  with caplog.at_level(logging.WARNING):
    with pytest.raises(errors.IncompatibleRunError,
                       match=rf"step 2 in {directory}.*w: saved float32\[4, 3\], wanted "
                             r"float32\[8, 3\].*Available steps: \[1, 2\]"):
      _ckpt(directory).restore(other)
  assert not any("cannot be restored" in w for w in _warnings(caplog))
  other_dtype = _abstract(jax.tree.map(lambda x: x.astype(jnp.bfloat16), _state(0)))
  with pytest.raises(errors.IncompatibleRunError, match="saved float32.*wanted bfloat16"):
    manager.Checkpointer.for_reading(directory).restore(other_dtype, step=1)
  assert sorted(os.listdir(directory)) == ["1", "2"]


def test_rundir_errors_are_the_shared_types(tmp_path):
  with pytest.raises(errors.NoCheckpointError, match="does not exist"):
    rundir.load(str(tmp_path / "missing"))
  with pytest.raises(errors.NoCheckpointError, match="has no checkpoints/"):
    rundir.load(str(tmp_path))
  (tmp_path / "checkpoints").mkdir()
  with pytest.raises(errors.NoCheckpointError, match="No committed checkpoint"):
    rundir.load(str(tmp_path))


# ------------------------------------------------------------------------------------- noise


def test_reading_does_not_claim_the_directory_is_read_only(tmp_path, caplog):
  with _ckpt(tmp_path / "checkpoints") as ckpt:
    ckpt.save(1, _state(1))
  with caplog.at_level(logging.INFO):
    reader = manager.Checkpointer.for_reading(tmp_path / "checkpoints")
    reader.restore(_abstract(_state(0)))
    reader.close()
    manager.restore_metadata(tmp_path / "checkpoints")
  assert not any("read only" in r.getMessage() for r in caplog.records)


_NOISE_SRC = textwrap.dedent("""
    import os, shutil, sys
    import jax, jax.numpy as jnp
    from jax.sharding import SingleDeviceSharding
    from rope_jax.checkpoint import manager
    d = sys.argv[1]
    state = {f"a{i}": jnp.ones((4, i + 1)) for i in range(40)}
    with manager.Checkpointer(d, save_interval_steps=1, max_to_keep=3, async_save=False) as c:
      for s in (1, 2):
        c.save(s, state)
    os.remove(os.path.join(d, "2", "state", "manifest.ocdbt"))  # The top-level manifest.
    sharding = SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                            state)
    for _ in range(3):
      with manager.Checkpointer(d, save_interval_steps=1, max_to_keep=3) as c:
        assert c.restore(abstract)[0] == 1

    class Late:  # What TensorStore's late callbacks look like to Python.
      def __del__(self):
        raise RuntimeError("Event loop is closed")

    for _ in range(5):
      Late()
    class Other:
      def __del__(self):
        raise KeyError("a real problem")
    Other()
    print("NOISE_OK")
""")


def test_missing_manifest_falls_back_without_asyncio_noise(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
             PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "-c", _NOISE_SRC, str(tmp_path / "ckpt")], env=env,
                        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0 and "NOISE_OK" in proc.stdout, proc.stderr[-3000:]
  assert "Event loop is closed" not in proc.stderr.replace(
      "'Event loop is closed' reports", ""), proc.stderr[-3000:]
  assert proc.stderr.count("Traceback") <= 1, proc.stderr[-3000:]
  assert "a real problem" in proc.stderr  # Other unraisable errors still show.
  assert "step 2" in proc.stderr and "cannot be restored" in proc.stderr


# ------------------------------------------------------------ a run written by the old code


def test_old_run_directory_restores_with_the_same_logits(tmp_path):
  workdir = tmp_path / "run_v0_1"
  shutil.copytree(FIXTURE, workdir)
  restored = rundir.load(str(workdir))
  assert restored.step == 2 and not restored.imported
  assert restored.config.model.attention_impl == "xla"
  tokens = (jnp.arange(12) * 7 % 64)[None, :]
  out = restored.model(tokens)
  logits = out if isinstance(out, jax.Array) else out.logits
  want = np.load(FIXTURE / "logits_step2.npy")
  assert logits.shape == want.shape == (1, 12, 64)
  np.testing.assert_allclose(np.asarray(logits, np.float32), want, rtol=1e-5, atol=1e-5)
  assert rundir.available_steps(str(workdir)) == [2]
