"""Fault injection (issue 12): what a hostile user or a dying machine does to a run, and the one
exit-code table (``rope_jax.errors``) every command line honours.

The loop runs in-process (``rope_jax.training.loop.run`` with its ``after_step`` hook) on a
1-layer tiny model and the synthetic source; command lines run as subprocesses and must exit with
the table's code and one line on stderr, never a traceback.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from rope_jax import errors
from rope_jax.checkpoint import manager as checkpoint
from rope_jax.config import base as config_lib
from rope_jax.training import loop
from rope_jax.training import metrics
from rope_jax.training import workdir_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {
    "train.data_source": "synthetic", "model.num_layers": 1, "train.global_batch_size": 4,
    "train.seq_len": 32, "train.num_steps": 4, "train.warmup_steps": 0,
    "train.log_every_steps": 1, "eval.num_batches": 0, "checkpoint.save_every_steps": 1,
    "checkpoint.async_save": False,
}
CLI_TINY = [f"--config.{k}={v}" for k, v in TINY.items()]


def _config(**overrides):
  c = config_lib.load_config("configs/tiny.py")
  for key, value in {**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}}.items():
    section, name = key.split(".")
    c[section][name] = value
  return c


def _env():
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # The CLIs must quiet TensorFlow themselves.
  return env


def _cli(*argv, timeout=300):
  return subprocess.run([sys.executable, *argv], cwd=REPO, env=_env(), capture_output=True,
                        text=True, timeout=timeout)


def _assert_one_line_error(p, code, *needles):
  assert p.returncode == code, (p.returncode, p.stderr[-3000:])
  assert "Traceback" not in p.stderr, p.stderr[-3000:]
  last = p.stderr.strip().splitlines()[-1]
  assert last.startswith("error: "), last
  for needle in needles:
    assert needle in last, last


class _Killed(Exception):
  """Stands for a SIGKILL at the hook's moment (the loop does no cleanup that matters)."""


def _kill_at(step):
  def hook(current):
    if current == step:
      raise _Killed(step)
  return hook


def _saved_steps(workdir):
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  ckpt = checkpoint.Checkpointer.for_reading(directory)
  try:
    return ckpt.all_steps()
  finally:
    ckpt.close()


def _params_finite(workdir, step):
  c = _config()
  s = config_lib.validate(c)
  from rope_jax.training import train_lib  # pylint: disable=g-import-not-at-top
  setup = train_lib.make_setup(s["model"], s["train"], s["mesh"])
  ckpt = checkpoint.Checkpointer.for_reading(os.path.join(workdir, "checkpoints"))
  try:
    _, state, _, _ = ckpt.restore(setup.abstract_state, step=step)
  finally:
    ckpt.close()
  return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))


# 1. A poisoned update is never saved; the message names the real last good step. ------------

def test_update_that_poisons_the_params_is_never_saved(tmp_path):
  fresh = str(tmp_path / "fresh")
  with pytest.raises(errors.DivergedError, match="No checkpoint was saved"):
    loop.run(_config(train__learning_rate=1e39), fresh)
  assert _saved_steps(fresh) == []

  run = str(tmp_path / "resumed")
  loop.run(_config(train__num_steps=2), run)
  with pytest.raises(errors.DivergedError, match=r"last good checkpoint \(step 2\)"):
    loop.run(_config(train__learning_rate=1e39), run)  # Step 3's update overflows.
  assert _saved_steps(run) == [1, 2]
  assert _params_finite(run, 2)
  loop.run(_config(), run)  # A sane learning rate resumes from the last good step.


# 2. One trainer per workdir. -----------------------------------------------------------------

def test_second_trainer_on_a_workdir_is_refused(tmp_path):
  workdir = str(tmp_path / "w")
  with workdir_lock.WorkdirLock(workdir):
    with pytest.raises(errors.WorkdirLockedError, match=f"pid {os.getpid()}"):
      loop.run(_config(), workdir)
    p = _cli("-m", "rope_jax.train", "--config=configs/tiny.py", f"--workdir={workdir}",
             *CLI_TINY)
    _assert_one_line_error(p, errors.EXIT_LOCKED, "locked by another trainer", "--break_lock")
    assert "Compiled" not in p.stderr
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))
  # Released on exit; a stale lock file on a network disk is broken with break_lock.
  with workdir_lock.WorkdirLock(workdir):
    with workdir_lock.WorkdirLock(workdir, break_lock=True):
      pass


# 3. Evaluation is part of the step's record. -------------------------------------------------

def _eval_steps(workdir):
  return sorted(metrics.record_steps(workdir, "eval"))


def test_eval_lost_between_checkpoint_and_eval_is_redone_on_resume(tmp_path):
  workdir = str(tmp_path / "w")
  cfg = dict(eval__num_batches=1, eval__every_steps=2, eval__length_multipliers=(1,),
             checkpoint__save_every_steps=2)
  with pytest.raises(_Killed):
    loop.run(_config(**cfg), workdir, after_step=_kill_at(2))  # Saved step 2, no eval yet.
  assert _eval_steps(workdir) == []
  with pytest.raises(_Killed):
    loop.run(_config(**cfg), workdir, after_step=_kill_at(4))  # Final step saved, no eval.
  assert _eval_steps(workdir) == [2]
  loop.run(_config(**cfg), workdir)  # "Nothing to do" but the final eval.
  assert _eval_steps(workdir) == [2, 4]


# 4. The exit-code table, on every command line. ----------------------------------------------

OFFLINE_VOCAB = os.path.join(REPO, "rope_jax", "data", "assets", "offline_sp2048.model")
TRAIN = ("-m", "rope_jax.train", "--workdir=/nonexistent-never-written")


@pytest.mark.parametrize("argv, needle", [
    (("--config=configs/tiny.py:pe=bogus",), "Unknown pe='bogus'"),
    (("--config=configs/tiny.py:data=wikk",), "Unknown data task 'wikk'"),
    (("--config=configs/tiny.py", "--config.train.num_stepz=5"),
     "unknown config key 'train.num_stepz'"),
    (("--config=configs/nope.py",), "'configs/nope.py' does not exist"),
    (("--config=configs/tiny.py", "--config.train.learning_rate=nan"), "learning_rate"),
    (("--config=configs/tiny.py", "--config.train.seq_len=abc"), "seq_len"),
], ids=["pe", "data", "unknown-key", "config-file", "nan", "type"])
def test_bad_config_is_one_line_and_exit_2(argv, needle):
  p = _cli(*TRAIN, *argv)
  _assert_one_line_error(p, errors.EXIT_BAD_INPUT, needle)


@pytest.mark.parametrize("overrides, needle", [
    (("--config.data.vocab_path=/nonexistent/sp.model",), "/nonexistent/sp.model"),
    ((":data=wiki", f"--config.data.vocab_path={OFFLINE_VOCAB}",
      "--config.data.tfds_data_dir=/nonexistent/tfds"), "/nonexistent/tfds"),
], ids=["vocabulary", "tfds-dir"])
def test_missing_input_files_are_bad_input_before_compile(tmp_path, overrides, needle):
  spec = "--config=configs/tiny.py" + "".join(o for o in overrides if o.startswith(":"))
  rest = [o for o in overrides if not o.startswith(":")]
  p = _cli("-m", "rope_jax.train", spec, f"--workdir={tmp_path}/w",
           *[a for a in CLI_TINY if "data_source" not in a], *rest)
  _assert_one_line_error(p, errors.EXIT_BAD_INPUT, needle)
  assert "Compiled train step" not in p.stderr
  # Quiet logs: TensorFlow was imported (the vocabulary is read through it), without noise.
  for noise in ("cuInit", "oneDNN", "cuda_platform", "cpu_feature_guard"):
    assert noise not in p.stderr


@pytest.mark.parametrize("argv, code, needle", [
    (("-m", "rope_jax.import_gemma", "--src=/nonexistent/ckpt", "--out=/tmp/x"), 2, "--src"),
    (("-m", "rope_jax.import_gemma", "--out=/tmp/x"), 2, "--src"),
    (("-m", "rope_jax.sample", "--workdir=/nonexistent/run", "--prompt=hi"), None, "nonexistent"),
    (("-m", "rope_jax.aot", "--config=configs/tiny.py", "--topology=zz"), 2, "zz"),
    (("-m", "rope_jax.results", "--root=/tmp", "--scale=zz"), 2, "zz"),
    (("-m", "launch.tpu", "submit", "--name=a", "--zone=us-east5-a", "--accelerator_type=v5p-8",
      "--config=configs/tiny.py", "--workdir=gs://bkt/a;rm", "--dry-run"), 2, "';'"),
], ids=["import-src", "import-missing-flag", "sample", "aot", "results", "launch"])
def test_other_command_lines_keep_the_table(argv, code, needle):
  p = _cli(*argv)
  _assert_one_line_error(p, code if code is not None else p.returncode, needle)
  if code is None:  # A missing run: bad input, or "no restorable checkpoint".
    assert p.returncode in (errors.EXIT_BAD_INPUT, errors.EXIT_NO_CHECKPOINT)


@pytest.mark.parametrize("wait_for", [None, "Mesh "], ids=["imports", "compile"])
def test_sigterm_during_start_up_exits_cleanly(tmp_path, wait_for):
  proc = subprocess.Popen([sys.executable, "-m", "rope_jax.train", "--config=configs/tiny.py",
                           f"--workdir={tmp_path}/w", *CLI_TINY], cwd=REPO, env=_env(),
                          stderr=subprocess.PIPE, text=True)
  lines = []
  if wait_for is None:
    time.sleep(1.0)
  else:
    for line in proc.stderr:
      lines.append(line)
      if wait_for in line:
        break
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  err = "".join(lines) + err
  assert proc.returncode == 0, err[-3000:]
  assert "Traceback" not in err


def _mount_tmpfs(path, size):
  if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("mount"):
    pytest.skip("a small full disk needs `mount -t tmpfs` (Linux, root)")
  os.makedirs(path)
  p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                     capture_output=True, text=True)
  if p.returncode:
    pytest.skip(f"mount -t tmpfs is not allowed here: {p.stderr.strip()}")


def test_full_disk_is_an_io_error(tmp_path):
  disk = str(tmp_path / "disk")
  _mount_tmpfs(disk, "2m")  # Smaller than one checkpoint of the 1-layer model (~3 MiB).
  try:
    p = _cli("-m", "rope_jax.train", "--config=configs/tiny.py", f"--workdir={disk}/w",
             *CLI_TINY)
  finally:
    subprocess.run(["umount", disk], check=False)
  assert p.returncode == errors.EXIT_IO, p.stderr[-3000:]
  assert p.stderr.strip().splitlines()[-1].startswith("error: ")


# 7. Launcher: no shell metacharacters in gs:// paths. ----------------------------------------

@pytest.mark.parametrize("path", ["gs://bkt/a;b", "gs://bkt/$(id)", "gs://bkt/`id`",
                                  "gs://bkt/a'b", 'gs://bkt/a"b', "gs://bkt/a b", "gs://bkt/a|b",
                                  "gs://bkt/a&b", "gs://bkt/a\\b", "gs://bkt/a>b"])
def test_launcher_rejects_shell_metacharacters(path):
  from launch import spec  # pylint: disable=g-import-not-at-top
  with pytest.raises(spec.LaunchError, match="not allowed in a gs:// path"):
    spec.check_workdir(path)
  spec.check_workdir("gs://bkt/table2/wiki/p075-rope_v1=2")


# 8. seqio: every task registered at import under a stable name, vocabulary loaded lazily. ----

def test_seqio_tasks_registered_at_import():
  p = _cli("-c", """
import seqio
import rope_jax.data.tasks as tasks
names = ["rope_jax.wiki", "rope_jax.flan_v2", "rope_jax.offline", "rope_jax.probe_copy",
         "rope_jax.probe_reverse", "rope_jax.probe_recall"]
for n in names:
  task = seqio.get_mixture_or_task(n)
  assert task.output_features["targets"].vocabulary._vocab is None, n  # Not loaded yet.
offline = seqio.get_mixture_or_task("rope_jax.offline")
assert offline.output_features["targets"].vocabulary.vocab_size == 2048
ex = next(offline.get_dataset(None, split="validation", shuffle=False).as_numpy_iterator())
assert ex["targets"][-1] == 1  # eos
print("OK")
""")
  assert p.returncode == 0 and "OK" in p.stdout, p.stderr[-3000:]


def test_every_cli_imports_without_defining_flags():
  p = _cli("-c", "import rope_jax.train, rope_jax.aot, rope_jax.analyze, rope_jax.sample, "
           "rope_jax.import_gemma, rope_jax.results, launch.tpu, launch.grid\n"
           "from absl import flags\n"
           "assert 'workdir' not in flags.FLAGS and 'config' not in flags.FLAGS, 'flags at import'\n"
           "print('OK')")
  assert p.returncode == 0 and "OK" in p.stdout, p.stderr[-3000:]
