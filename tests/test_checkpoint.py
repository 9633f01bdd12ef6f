"""Tests for rope_jax.checkpoint.manager and rope_jax.training.preemption (CPU, small, < ~20 s)."""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from rope_jax import errors
from rope_jax.checkpoint import manager as checkpoint
from rope_jax.training import preemption
from tests import fake_devices

REPO = pathlib.Path(__file__).resolve().parents[1]

# After a failed read TensorStore may complete a callback on the event loop
# Orbax already closed; Python reports that as "unraisable". Harmless.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning"
)

# Shared by this process and the 8-device subprocess: deterministic values,
# first dims divisible by 8 so they can be sharded P('data', None).
_MAKE_STATE_SRC = textwrap.dedent("""
    import numpy as _np
    import jax.numpy as _jnp

    def make_state(seed):
      rng = _np.random.default_rng(seed)
      return {
          "params": {
              "embed": _jnp.asarray(rng.normal(size=(16, 4)), _jnp.bfloat16),
              "mlp": {"w": _jnp.asarray(rng.normal(size=(8, 6)), _jnp.float32)},
          },
          "opt": {
              "mu": _jnp.asarray(rng.normal(size=(8, 6)), _jnp.float32),
              # 8 KiB of random bits: zstd stores them verbatim, outside the
              # CRC-checked OCDBT b-tree nodes (small values are inlined there).
              "noise": _jnp.asarray(
                  rng.integers(0, 2**32, size=(64, 32), dtype=_np.uint32)),
          },
          "step": _jnp.asarray(seed, _jnp.int32),
      }
""")
exec(_MAKE_STATE_SRC)  # defines make_state  # pylint: disable=exec-used


def _one_device_sharding() -> NamedSharding:
  return NamedSharding(Mesh(np.array(jax.devices()[:1]), ("data",)), P())


def _abstract(state, sharding=None):
  sharding = sharding or _one_device_sharding()
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state
  )


def _assert_trees_equal(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    assert a.dtype == e.dtype and a.shape == e.shape
    assert np.asarray(a).tobytes() == np.asarray(e).tobytes()


def _trees_equal(a, b) -> bool:
  try:
    _assert_trees_equal(a, b)
    return True
  except AssertionError:
    return False


def _ckpt(directory, **kw) -> checkpoint.Checkpointer:
  kw.setdefault("save_interval_steps", 1)
  kw.setdefault("max_to_keep", 5)
  return checkpoint.Checkpointer(directory, **kw)


# ------------------------------------------------------------------ basics


def test_round_trip_state_data_state_and_metadata(tmp_path):
  state = make_state(3)
  config = {"model": {"rope": "p_rope", "p": 0.75}, "lr": 1e-3, "tags": ["a"]}
  with _ckpt(tmp_path / "ckpt") as ckpt:
    assert ckpt.save(3, state, data_state={"epoch": 1, "index": 42}, metadata=config)
    ckpt.wait()
    assert ckpt.all_steps() == [3] and ckpt.latest_step() == 3
    step, restored, data_state, metadata = ckpt.restore(_abstract(state))
  assert step == 3
  _assert_trees_equal(restored, state)
  assert restored["params"]["embed"].dtype == jnp.bfloat16
  assert data_state == {"epoch": 1, "index": 42}
  assert metadata == config
  assert checkpoint.restore_metadata(tmp_path / "ckpt") == config
  assert checkpoint.restore_metadata(tmp_path / "ckpt", step=3) == config


def test_save_interval_force_and_existing_step(tmp_path):
  with _ckpt(tmp_path, save_interval_steps=2) as ckpt:
    state = make_state(0)
    assert not ckpt.save(1, state)
    assert ckpt.save(2, state)
    assert not ckpt.save(2, state, force=True)  # already saved: no-op, no error
    assert ckpt.save(3, state, force=True)
    ckpt.wait()
    assert ckpt.all_steps() == [2, 3]
    with pytest.raises(ValueError, match="JSON"):
      ckpt.save(4, state, data_state={"x": np.int64(1)})


@pytest.mark.parametrize("async_save", [True, False])
def test_keep_last_k(tmp_path, async_save):
  with _ckpt(tmp_path, max_to_keep=2, async_save=async_save) as ckpt:
    for step in range(1, 6):
      assert ckpt.save(step, make_state(step))
    ckpt.wait()
    assert ckpt.all_steps() == [4, 5]
  assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
      "4",
      "5",
  ]
  reader = checkpoint.Checkpointer.for_reading(tmp_path)
  assert reader.all_steps() == [4, 5]
  step, restored, _, _ = reader.restore(_abstract(make_state(5)), step=4)
  assert step == 4
  _assert_trees_equal(restored, make_state(4))


# ---------------------------------------------------- resharding (8 devices)

_SUBPROCESS_SRC = _MAKE_STATE_SRC + textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from rope_jax.checkpoint.manager import Checkpointer

    save_dir, load_dir = sys.argv[1], sys.argv[2]
    assert jax.device_count() == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rows = NamedSharding(mesh, P("data", None))
    repl = NamedSharding(mesh, P())
    pick = lambda x: rows if x.ndim == 2 else repl

    # 1) Save a state sharded over 8 devices.
    state = make_state(7)
    state = jax.tree.map(lambda x: jax.device_put(x, pick(x)), state)
    assert len(state["params"]["embed"].addressable_shards) == 8
    with Checkpointer(save_dir, save_interval_steps=1, max_to_keep=2) as ck:
      ck.save(7, state, data_state={"i": 7}, metadata={"mesh": 8})

    # 2) Restore a checkpoint written on 1 device onto the 8-device mesh.
    expected = make_state(5)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=pick(x)),
        expected)
    step, got, _, _ = Checkpointer.for_reading(load_dir).restore(abstract)
    assert step == 5
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
      assert g.sharding == pick(e), (g.sharding, pick(e))
      assert g.dtype == e.dtype
      assert np.asarray(g).tobytes() == np.asarray(e).tobytes()
    print("SUBPROCESS_OK")
""")


def test_restore_onto_different_sharding(tmp_path):
  one_dev_dir, eight_dev_dir = tmp_path / "one", tmp_path / "eight"
  with _ckpt(one_dev_dir) as ckpt:
    ckpt.save(5, make_state(5))
  env = dict(os.environ)
  env["XLA_FLAGS"] = fake_devices.xla_flags(8)
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
  proc = subprocess.run(
      [sys.executable, "-c", _SUBPROCESS_SRC, str(eight_dev_dir), str(one_dev_dir)],
      env=env,
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=240,
  )
  assert proc.returncode == 0 and "SUBPROCESS_OK" in proc.stdout, proc.stderr[-3000:]
  # Restore the 8-device checkpoint here, onto a single CPU device.
  state = make_state(7)
  step, restored, data_state, metadata = checkpoint.Checkpointer.for_reading(
      eight_dev_dir
  ).restore(_abstract(state))
  assert step == 7 and data_state == {"i": 7} and metadata == {"mesh": 8}
  _assert_trees_equal(restored, state)
  for leaf in jax.tree.leaves(restored):
    assert leaf.sharding == _one_device_sharding()


# ------------------------------------------------------ damage and fallback


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory) -> pathlib.Path:
  """A directory with good checkpoints at steps 1 and 2 (different values)."""
  base = tmp_path_factory.mktemp("two_steps") / "ckpt"
  with _ckpt(base) as ckpt:
    for step in (1, 2):
      ckpt.save(step, make_state(step), data_state={"i": step}, metadata={"s": step})
  return base


def _copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
  shutil.copytree(src, dst)
  return dst


def _array_files(step_dir: pathlib.Path) -> list[pathlib.Path]:
  """The OCDBT data files of the arrays (b-tree nodes and chunks, under d/)."""
  return [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]


def _truncate_array_files(step_dir: pathlib.Path, step: int = 0) -> None:
  del step
  files = _array_files(step_dir)
  assert files, f"no array files under {step_dir}"
  for path in files:
    with open(path, "r+b") as f:
      f.truncate(path.stat().st_size // 2)


def _flip_stored_values(step_dir: pathlib.Path, step: int) -> None:
  """Bit rot: flips bytes of opt.noise where stored, keeping file sizes.

  Random bits do not compress, so zstd stores them verbatim in an OCDBT data
  file (no checksum there) and TensorStore decodes the flipped bytes without
  any error.
  """
  raw = np.asarray(make_state(step)["opt"]["noise"]).tobytes()
  flipped = 0
  for path in (step_dir / "state").rglob("*"):
    if not path.is_file():
      continue
    data = bytearray(path.read_bytes())
    at = data.find(raw)
    while at >= 0:
      for i in range(at + 8, at + 24):
        data[i] ^= 0xFF
      flipped += 1
      at = data.find(raw, at + 1)
    path.write_bytes(bytes(data))
  if not flipped:
    pytest.fail(f"cannot inject silent damage: raw bytes of opt.noise not in {step_dir}")


_DAMAGE = {
    "flipped_bytes": _flip_stored_values,
    "truncated_array_files": _truncate_array_files,
    "deleted_array_files": lambda d, step: [p.unlink() for p in _array_files(d)],
    "corrupt_json_metadata": lambda d, step: (d / "metadata" / "metadata").write_text(
        "{oops"
    ),
    "missing_data_state_item": lambda d, step: shutil.rmtree(d / "data_state"),
}


def _files(directory: pathlib.Path) -> set[str]:
  return {str(p.relative_to(directory)) for p in directory.rglob("*")}


@pytest.mark.parametrize("damage", sorted(_DAMAGE))
def test_damaged_latest_falls_back_and_deletes_nothing(
    two_steps, tmp_path, caplog, damage
):
  directory = _copy(two_steps, tmp_path / "ckpt")
  _DAMAGE[damage](directory / "2", 2)
  before = _files(directory)
  ckpt = _ckpt(directory)
  with caplog.at_level(logging.WARNING):
    step, restored, data_state, metadata = ckpt.restore(_abstract(make_state(0)))
  assert step == 1
  _assert_trees_equal(restored, make_state(1))
  assert data_state == {"i": 1} and metadata == {"s": 1}
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert any("step 2" in w and "cannot be restored" in w for w in warnings), warnings
  # Nothing deleted or moved: both step directories and every file remain.
  assert (directory / "1").is_dir() and (directory / "2").is_dir()
  assert _files(directory) == before
  assert ckpt.all_steps() == [1, 2]
  with pytest.raises(checkpoint.CorruptCheckpointError, match="step 2"):
    ckpt.restore(_abstract(make_state(0)), step=2)
  ckpt.close()
  assert _files(directory) == before


def test_silent_damage_is_caught_only_by_checksums(two_steps, tmp_path):
  directory = _copy(two_steps, tmp_path / "ckpt")
  _flip_stored_values(directory / "2", 2)
  reader = checkpoint.Checkpointer.for_reading(directory)
  # Without verification the damage comes back as wrong values (or, if a
  # future TensorStore notices, as an error); it never reads back intact.
  try:
    _, unverified, _, _ = reader.restore(_abstract(make_state(0)), step=2, verify=False)
    assert not _trees_equal(unverified, make_state(2))
  except Exception as e:  # pylint: disable=broad-exception-caught
    assert not isinstance(e, AssertionError), e
  with pytest.raises(checkpoint.CorruptCheckpointError, match="checksum mismatch"):
    reader.restore(_abstract(make_state(0)), step=2)


def test_half_written_tmp_checkpoint_is_ignored(two_steps, tmp_path):
  directory = _copy(two_steps, tmp_path / "ckpt")
  # What a save killed mid-way leaves behind: an uncommitted temp directory.
  tmp = directory / f"3.orbax-checkpoint-tmp-{time.time_ns()}"
  shutil.copytree(directory / "2", tmp)
  for marker in tmp.rglob("commit_success.txt"):
    marker.unlink()
  _truncate_array_files(tmp)
  ckpt = _ckpt(directory)
  assert ckpt.all_steps() == [1, 2] and ckpt.latest_step() == 2
  step, restored, _, _ = ckpt.restore(_abstract(make_state(0)))
  assert step == 2
  _assert_trees_equal(restored, make_state(2))
  # Step 3 can still be saved and restored; the leftover is not touched.
  assert ckpt.save(3, make_state(3))
  ckpt.wait()
  assert ckpt.restore(_abstract(make_state(0)))[0] == 3
  assert tmp.is_dir()
  ckpt.close()

  only_tmp = tmp_path / "only_tmp"
  only_tmp.mkdir()
  shutil.copytree(tmp, only_tmp / tmp.name)
  with pytest.raises(FileNotFoundError, match="uncommitted"):
    _ckpt(only_tmp).restore(_abstract(make_state(0)))


def test_gc_counts_only_restorable_checkpoints(tmp_path):
  directory = tmp_path / "ckpt"
  with _ckpt(directory, max_to_keep=3) as ckpt:
    for step in (1, 2, 3):
      ckpt.save(step, make_state(step))
  _truncate_array_files(directory / "2")
  _flip_stored_values(directory / "3", 3)

  ckpt = _ckpt(directory, max_to_keep=2)
  step, _, _, _ = ckpt.restore(_abstract(make_state(0)))
  assert step == 1
  # Plain "keep the latest 2" would now delete 1 (the only good one) and 2.
  assert ckpt.save(4, make_state(4), force=True)
  ckpt.wait()
  assert ckpt.all_steps() == [1, 2, 3, 4]
  # Next save: the 2 newest restorable ones are 4 and 5, so 1 goes; the
  # damaged 2 and 3 are never deleted by garbage collection.
  assert ckpt.save(5, make_state(5), force=True)
  ckpt.wait()
  assert ckpt.all_steps() == [2, 3, 4, 5]
  assert ckpt.restore(_abstract(make_state(0)))[0] == 5
  ckpt.close()


def test_resaving_a_damaged_step_sets_it_aside(two_steps, tmp_path):
  directory = _copy(two_steps, tmp_path / "ckpt")
  _flip_stored_values(directory / "2", 2)
  with _ckpt(directory, max_to_keep=1) as ckpt:
    assert ckpt.restore(_abstract(make_state(0)))[0] == 1
    assert ckpt.save(2, make_state(20), force=True)
    ckpt.wait()
    step, restored, _, _ = ckpt.restore(_abstract(make_state(0)))
  assert step == 2
  _assert_trees_equal(restored, make_state(20))
  set_aside = [p.name for p in directory.iterdir() if p.name.startswith("2.corrupt-")]
  assert len(set_aside) == 1


# ------------------------------------------------------------------ errors


def test_errors_name_directory_and_steps(two_steps, tmp_path):
  empty = tmp_path / "empty"
  with pytest.raises(FileNotFoundError, match=str(empty)):
    _ckpt(empty).restore(_abstract(make_state(0)))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    checkpoint.Checkpointer.for_reading(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    checkpoint.restore_metadata(tmp_path / "missing")

  reader = checkpoint.Checkpointer.for_reading(two_steps)
  with pytest.raises(FileNotFoundError, match=r"step 7 .*available steps: \[1, 2\]"):
    reader.restore(_abstract(make_state(0)), step=7)
  with pytest.raises(FileNotFoundError, match=r"available steps: \[1, 2\]"):
    checkpoint.restore_metadata(two_steps, step=7)
  with pytest.raises(ValueError, match="read-only"):
    reader.save(3, make_state(3), force=True)

  not_a_dir = tmp_path / "file"
  not_a_dir.write_text("x")
  with pytest.raises(ValueError, match=f"{not_a_dir}/ckpt.*cannot be created or written"):
    _ckpt(not_a_dir / "ckpt")


def test_all_damaged_raises_with_every_reason(two_steps, tmp_path):
  directory = _copy(two_steps, tmp_path / "ckpt")
  for step in ("1", "2"):
    _truncate_array_files(directory / step)
  with pytest.raises(errors.NoCheckpointError, match=r"step 2: .*step 1: "):
    _ckpt(directory).restore(_abstract(make_state(0)))
  assert (directory / "1").is_dir() and (directory / "2").is_dir()


def test_wrong_structure_is_an_error_not_a_silent_fallback(two_steps):
  reader = checkpoint.Checkpointer.for_reading(two_steps)
  abstract = _abstract({"other": jnp.zeros((2,))})
  with pytest.raises(errors.IncompatibleRunError, match=f"step 2 in {two_steps}.*not on disk"):
    reader.restore(abstract)


# -------------------------------------------------------------- preemption


def test_sigterm_sets_flag_and_does_not_kill(tmp_path):
  previous = signal.getsignal(signal.SIGTERM)
  with preemption.PreemptionGuard() as guard:
    assert not guard.preempted(0)
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.monotonic() + 5
    while not guard.signal_received and time.monotonic() < deadline:
      time.sleep(0.01)  # the handler runs at the next bytecode boundary
    assert guard.preempted(1)
    # The loop's reaction: a forced save that completes before exiting.
    with _ckpt(tmp_path, save_interval_steps=100) as ckpt:
      assert ckpt.save(1, make_state(1), force=True)
      ckpt.wait()
      assert ckpt.all_steps() == [1]
  assert signal.getsignal(signal.SIGTERM) is previous
  # Single process: no JAX preemption sync point.
  with _ckpt(tmp_path / "other") as ckpt:
    assert not ckpt.reached_preemption(1)


_TWO_PROCESS_SRC = textwrap.dedent("""
    import os, signal, sys, time
    pid, port, directory = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes=2,
                               process_id=pid, initialization_timeout=60)
    import numpy as np
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P
    from rope_jax.checkpoint import manager as checkpoint
    from rope_jax.training import preemption

    mesh = jax.make_mesh((4,), ("data",))
    rows, repl = NamedSharding(mesh, P("data", None)), NamedSharding(mesh, P())
    x = jax.make_array_from_callback(
        (8, 4), rows, lambda i: np.arange(32, dtype=np.float32).reshape(8, 4)[i])
    state = {"x": x, "step": jax.device_put(jnp.int32(0), repl)}
    ckpt = checkpoint.Checkpointer(directory, save_interval_steps=1000,
                                   max_to_keep=2)
    with preemption.PreemptionGuard() as guard:
      for step in range(1, 500):
        time.sleep(0.02)
        if pid == 1 and step == 3:   # only one host is told
          os.kill(os.getpid(), signal.SIGTERM)
        ckpt.save(step, state)
        if guard.preempted(step):
          ckpt.save(step, state, force=True)
          print("PREEMPTED", step, flush=True)
          break
    ckpt.close()
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=repl), state)
    with checkpoint.Checkpointer(directory, save_interval_steps=1000,
                                 max_to_keep=2) as reader:
      got_step, got, _, _ = reader.restore(abstract)
    print("RESTORED", got_step, float(got["x"].sum()), flush=True)
    jax.distributed.shutdown()
""")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_agree_on_preemption_step(tmp_path):
  """Loopback 2-process cluster: SIGTERM on one host, both save the same step."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = fake_devices.xla_flags(2)
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
  port, directory = str(_free_port()), str(tmp_path / "ckpt")
  procs = [
      subprocess.Popen(
          [sys.executable, "-c", _TWO_PROCESS_SRC, str(pid), port, directory],
          env=env,
          cwd=REPO,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for pid in (0, 1)
  ]
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=180))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  for proc, (out, err) in zip(procs, outputs):
    assert proc.returncode == 0, err[-3000:]
  preempted = [
      [int(line.split()[1]) for line in out.splitlines() if line.startswith("PREEMPTED")]
      for out, _ in outputs
  ]
  assert len(preempted[0]) == 1 and preempted[0] == preempted[1], preempted
  step = preempted[0][0]
  assert step >= 3
  for out, _ in outputs:
    assert f"RESTORED {step} 496.0" in out, out
  assert (tmp_path / "ckpt" / str(step)).is_dir()
