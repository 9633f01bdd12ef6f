"""What a Cloud TPU launch runs: ``gcloud`` argv lists, the remote shell scripts (every value
``shlex.quote``-d; only the ssh ``--command`` string meets a shell), the shipped tarball, and the
``Gcloud`` runner with the create / wait / copy / start steps (``launch.tpu`` is the command line;
``launch.spec`` the checked request).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Sequence, TextIO

from launch.spec import (_PYVER_RE, REMOTE_DIR, REMOTE_LOG, REMOTE_PID, REMOTE_PYTHON,
                         REMOTE_TARBALL, REPO_ROOT, Accelerator, LaunchError, TpuTarget, TrainJob)

# ---------------------------------------------------------------------------------------------
# Commands (argv lists; only the ssh --command string meets a shell, with every value quoted).


def _gcloud(target: TpuTarget, group: str, verb: str, positionals: Sequence[str],
            *flags: str) -> list[str]:
  """``gcloud compute tpus GROUP VERB POSITIONALS --zone=Z [--project=P] FLAGS``."""
  argv = ["gcloud", "compute", "tpus", group, verb, *positionals, f"--zone={target.zone}"]
  if target.project:
    argv.append(f"--project={target.project}")
  return argv + list(flags)


def create_command(target: TpuTarget) -> list[str]:
  """``tpu-vm create`` or ``queued-resources create`` for ``target``."""
  if target.queued:
    argv = _gcloud(target, "queued-resources", "create", [target.name],
                   f"--node-id={target.name}", f"--accelerator-type={target.accelerator_type}",
                   f"--runtime-version={target.runtime}")
  else:
    argv = _gcloud(target, "tpu-vm", "create", [target.name],
                   f"--accelerator-type={target.accelerator_type}", f"--version={target.runtime}")
  if target.spot:
    argv.append("--spot")
  if target.preemptible:
    argv.append("--preemptible")
  return argv + list(target.create_flags)


def describe_command(target: TpuTarget) -> list[str]:
  if target.queued:
    return _gcloud(target, "queued-resources", "describe", [target.name],
                   "--format=value(state.state)")
  return _gcloud(target, "tpu-vm", "describe", [target.name], "--format=value(state)")


def delete_command(target: TpuTarget) -> list[str]:
  if target.queued:  # --force also deletes the TPU VM the queued resource holds.
    return _gcloud(target, "queued-resources", "delete", [target.name], "--force", "--quiet")
  return _gcloud(target, "tpu-vm", "delete", [target.name], "--quiet")


def scp_command(target: TpuTarget, tarball: str) -> list[str]:
  return _gcloud(target, "tpu-vm", "scp", [tarball, f"{target.name}:{REMOTE_TARBALL}"],
                 f"--worker={target.workers}")


def ssh_command(target: TpuTarget, command: str, worker: str | None = None) -> list[str]:
  return _gcloud(target, "tpu-vm", "ssh", [target.name], f"--worker={worker or target.workers}",
                 f"--command={command}")


def install_script(python_version: str = "3.11") -> str:
  """Unpacks the shipped tarball into ``~/rope_jax`` (keeping its venv and logs) and installs
  the package with the TPU extra into ``~/rope_jax/.venv`` (Python ``python_version`` via uv:
  TPU VM images ship Python 3.10, rope_jax needs >= 3.11)."""
  if not _PYVER_RE.fullmatch(python_version):
    raise LaunchError(f"--python_version={python_version!r} is not like 3.11.")
  d, q = REMOTE_DIR, shlex.quote
  return " && ".join([
      'export PATH="$HOME/.local/bin:$PATH"',
      f"mkdir -p {d}",
      f"find {d} -mindepth 1 -maxdepth 1 ! -name .venv ! -name logs -exec rm -rf {{}} +",
      f"tar -xzf {REMOTE_TARBALL} -C {d}",
      f"cd {d}",
      "{ command -v uv >/dev/null 2>&1 || python3 -m pip install --user --quiet uv; }",
      f"{{ [ -x {REMOTE_PYTHON} ] || uv venv --quiet --python {q(python_version)} .venv; }}",
      f"uv pip install --quiet --python {REMOTE_PYTHON} -e {q('.[tpu]')}",
      f"echo \"rope_jax installed on $(hostname)\"",
  ])


def run_script(job: TrainJob, *, distributed: bool, python: str = REMOTE_PYTHON) -> str:
  """The shell text every worker runs: refuses if a trainer is already running there, else
  starts ``python -m rope_jax.train ...`` detached, appending to ``logs/train.log``.

  Every trainer argument is one ``shlex.quote``-d word, so a value with spaces, quotes, ``;``
  or ``$(...)`` reaches the trainer as one unchanged argument and is never executed.
  """
  argv = [python, "-m", "rope_jax.train", *job.train_args(distributed=distributed)]
  train = " ".join(shlex.quote(a) for a in argv)
  lines = [
      f"cd {REMOTE_DIR} || exit 1",
      "mkdir -p logs",
      f'if [ -f {REMOTE_PID} ] && kill -0 "$(cat {REMOTE_PID})" 2>/dev/null; then '
      f'echo "rope_jax.train is already running on $(hostname) (pid $(cat {REMOTE_PID})); '
      'stop it first (python -m launch.tpu stop)." >&2; exit 1; fi',
      f"PYTHONUNBUFFERED=1 nohup {train} >> {REMOTE_LOG} 2>&1 < /dev/null &",
      f"echo $! > {REMOTE_PID}",
      f'echo "rope_jax.train started on $(hostname) (pid $!); log: ~/{REMOTE_DIR}/{REMOTE_LOG}"',
  ]
  # One line (easy to copy from --dry-run): "; " between commands, nothing after a "&".
  return "".join(l + (" " if l.endswith("&") else "; ") for l in lines).rstrip("; ")


def stop_script() -> str:
  """SIGTERM to the trainer (it saves a checkpoint and exits 0)."""
  return (f"cd {REMOTE_DIR} 2>/dev/null && if [ -f {REMOTE_PID} ] && "
          f'kill -0 "$(cat {REMOTE_PID})" 2>/dev/null; then kill -TERM "$(cat {REMOTE_PID})" && '
          'echo "SIGTERM sent on $(hostname): the trainer checkpoints and exits."; '
          'else echo "no rope_jax.train running on $(hostname)."; fi')


def logs_script(lines: int = 100, follow: bool = False) -> str:
  return f"tail -n {int(lines)}{' -F' if follow else ''} {REMOTE_DIR}/{REMOTE_LOG}"


def aot_command(job: TrainJob, accelerator: Accelerator) -> list[str] | None:
  """``python -m rope_jax.aot`` for the slice (None if its topology is not a standard shape)."""
  topology = accelerator.aot_topology
  if topology is None:
    return None
  return [sys.executable, "-m", "rope_jax.aot", f"--config={job.config}",
          f"--topology={topology}", *(f"--config.{k}={v}" for k, v in job.overrides)]


# ---------------------------------------------------------------------------------------------
# Shipping the code.


def repo_files(repo: str = REPO_ROOT) -> list[str]:
  """Repository files to ship: git's tracked + untracked-not-ignored files if git is there,
  else a walk without .git / .venv / caches."""
  skip_dirs = {".git", ".venv", "__pycache__", ".pytest_cache", "build", "dist", "workdir", "runs"}
  if os.path.isdir(os.path.join(repo, ".git")) and shutil.which("git"):
    out = subprocess.run(["git", "-C", repo, "ls-files", "-z", "--cached", "--others",
                          "--exclude-standard"], check=True, capture_output=True).stdout
    files = [f for f in out.decode().split("\0") if f]
  else:
    files = []
    for root, dirs, names in os.walk(repo):
      dirs[:] = [d for d in dirs if d not in skip_dirs and not d.endswith(".egg-info")]
      files += [os.path.relpath(os.path.join(root, n), repo) for n in names]
  return sorted(f for f in files if os.path.isfile(os.path.join(repo, f))
                and not set(f.split("/")[:-1]) & skip_dirs and not f.endswith(".pyc"))


def build_tarball(path: str, repo: str = REPO_ROOT) -> int:
  """Writes the repository's files to ``path`` (.tar.gz); returns how many."""
  count = 0
  with tarfile.open(path, "w:gz") as tar:
    for f in repo_files(repo):
      try:
        tar.add(os.path.join(repo, f), arcname=f, recursive=False)
        count += 1
      except FileNotFoundError:  # Removed since it was listed.
        pass
  return count


def tarball_path(name: str) -> str:
  return os.path.join(tempfile.gettempdir(), f"rope_jax_src-{name}.tar.gz")


# ---------------------------------------------------------------------------------------------
# Running gcloud.


class Gcloud:
  """Runs (or, in dry-run, prints) gcloud argv lists; every call is echoed as a shell line."""

  def __init__(self, *, dry_run: bool = False, out: TextIO | None = None,
               poll_interval_s: float = 30.0, wait_timeout_s: float = 24 * 3600):
    self.dry_run = dry_run
    self.out = out or sys.stdout
    self.poll_interval_s = poll_interval_s
    self.wait_timeout_s = wait_timeout_s

  def say(self, text: str) -> None:
    print(text, file=self.out, flush=True)

  def run(self, argv: Sequence[str]) -> None:
    """Runs ``argv`` with output to the terminal; LaunchError if it fails."""
    self.say(shlex.join(argv))
    if self.dry_run:
      return
    rc = subprocess.run(list(argv), check=False).returncode
    if rc != 0:
      raise LaunchError(f"Command failed with exit code {rc}: {shlex.join(argv)}")

  def state(self, target: TpuTarget) -> str | None:
    """The TPU VM's (or queued resource's) state, None if it does not exist."""
    argv = describe_command(target)
    if self.dry_run:
      self.say(f"# {shlex.join(argv)}   (dry-run: assuming {target.name} does not exist)")
      return None
    p = subprocess.run(argv, check=False, capture_output=True, text=True)
    if p.returncode != 0:
      if "NOT_FOUND" in p.stderr or "not found" in p.stderr.lower():
        return None
      raise LaunchError(f"{shlex.join(argv)} failed: {p.stderr.strip()}")
    return p.stdout.strip().split()[0].upper() if p.stdout.strip() else "UNKNOWN"


_READY = {"READY", "ACTIVE"}
_PENDING = {"CREATING", "STARTING", "RESTARTING", "REPAIRING", "ACCEPTED",
            "WAITING_FOR_RESOURCES", "PROVISIONING"}
_GONE = {"PREEMPTED", "TERMINATED", "SUSPENDED", "SUSPENDING", "FAILED"}


def ensure_created(gc: Gcloud, target: TpuTarget) -> None:
  """Creates ``target`` if absent; deletes and recreates it if preempted / suspended / failed;
  starts it if stopped; leaves it if ready or still being provisioned."""
  state = gc.state(target)
  if state is None:
    gc.run(create_command(target))
  elif state in _GONE:
    gc.say(f"# {target.name} is {state}: deleting and recreating it (training resumes from "
           "the workdir's checkpoint).")
    gc.run(delete_command(target))
    gc.run(create_command(target))
  elif state == "STOPPED" and not target.queued:
    gc.run(_gcloud(target, "tpu-vm", "start", [target.name]))
  elif state in _READY or state in _PENDING:
    gc.say(f"# {target.name} exists ({state}); reusing it.")
  else:
    raise LaunchError(f"{target.name} is in state {state}; wait, or delete it "
                      "(python -m launch.tpu delete ...) and submit again.")


def wait_ready(gc: Gcloud, target: TpuTarget) -> None:
  """Polls until the TPU VM is READY (queued resource ACTIVE); LaunchError on failure."""
  if gc.dry_run:
    if target.queued:
      gc.say(f"# poll until ACTIVE: {shlex.join(describe_command(target))}")
    return
  deadline = time.monotonic() + gc.wait_timeout_s
  while True:
    state = gc.state(target)
    if state in _READY:
      return
    if state is None or state in _GONE:
      raise LaunchError(f"{target.name} is {state or 'gone'} while waiting for it; submit again.")
    if time.monotonic() > deadline:
      raise LaunchError(f"{target.name} still {state} after {gc.wait_timeout_s:.0f}s; it stays "
                        "queued: submit again later to pick it up.")
    gc.say(f"# {target.name}: {state}; waiting {gc.poll_interval_s:.0f}s")
    time.sleep(gc.poll_interval_s)


def copy_code(gc: Gcloud, target: TpuTarget, *, python_version: str = "3.11",
              tarball: str | None = None) -> None:
  """Ships the repository to every worker and installs it there."""
  script = install_script(python_version)
  if tarball is None:
    tarball = tarball_path(target.name)
    if gc.dry_run:
      gc.say(f"# build {tarball} from {REPO_ROOT} (git ls-files: tracked + untracked, not "
             "ignored)")
    else:
      n = build_tarball(tarball)
      gc.say(f"# built {tarball} ({n} files)")
  gc.run(scp_command(target, tarball))
  gc.run(ssh_command(target, script))


def start_training(gc: Gcloud, target: TpuTarget, job: TrainJob) -> None:
  acc = target.accelerator
  distributed = acc is not None and acc.hosts > 1
  gc.run(ssh_command(target, run_script(job, distributed=distributed)))
  gc.say(f"# follow: python -m launch.tpu logs --name={target.name} --zone={target.zone} "
         "--follow")


def check_fit(gc: Gcloud, job: TrainJob, accelerator: Accelerator) -> None:
  """Runs ``rope_jax.aot`` locally for the slice's topology; LaunchError if it does not fit."""
  argv = aot_command(job, accelerator)
  if argv is None:
    gc.say(f"# no standard topology for {accelerator.name}; skipping the fit check.")
    return
  gc.say(shlex.join(argv))
  if gc.dry_run:
    return
  rc = subprocess.run(argv, check=False, cwd=REPO_ROOT,
                      env={**os.environ, "JAX_PLATFORMS": "cpu"}).returncode
  if rc != 0:
    raise LaunchError(f"The AOT check failed (exit {rc}): the config does not compile or does "
                      f"not fit {accelerator.name}; nothing was created.")


