r"""Cloud TPU VM launcher: create a TPU VM (or queued resource), ship the code, train, follow.

    python -m launch.tpu submit --name=p075-wiki --zone=us-east5-a --accelerator_type=v5p-32 \
        --spot --workdir=gs://BUCKET/table2/wiki/p075-rope \
        --config=configs/gemma_2b.py:pe=p_rope,p=0.75,data=wiki \
        --config.data.vocab_path=gs://BUCKET/gemma/tokenizer.model \
        --config.data.tfds_data_dir=gs://BUCKET/tensorflow_datasets --dry-run

Actions (every one prints the exact ``gcloud`` commands it runs; ``--dry-run`` only prints):

* ``create``: ``gcloud compute tpus tpu-vm create`` (or ``queued-resources create`` with
  ``--queued``), spot or preemptible on request.
* ``copy``: a tarball of this repository (git's tracked and untracked-but-not-ignored files) is
  copied to every worker with ``tpu-vm scp`` and installed there into ``~/rope_jax/.venv``
  (``uv`` makes a Python >= 3.11 venv; ``pip install -e .[tpu]``).
* ``run``: ``tpu-vm ssh --command=...`` starts ``python -m rope_jax.train`` on every worker at
  once, detached (``nohup``), logging to ``~/rope_jax/logs/train.log``. On a pod (more than one
  host) it passes ``--distributed``, so that each process calls ``jax.distributed.initialize()``,
  which finds its peers from the TPU metadata.

Commands every host must run use ``--worker=all`` on a pod and ``--worker=0`` on one host.
* ``submit``: create (if absent; recreated if preempted) + copy + run.
* ``logs``: ``tail`` of the log on one worker (``--follow`` streams it).
* ``stop``: SIGTERM to the trainer: it saves a checkpoint and exits.
* ``status`` / ``delete``.

Preemption: training resumes from the newest checkpoint in ``--workdir`` by itself, so after a
spot / preemptible VM is preempted, run the same ``submit`` again: it deletes the preempted VM
(or the suspended queued resource), creates a new one, and the trainer picks up where the last
checkpoint left off. That is why the workdir must be ``gs://``.

Every value that reaches the remote shell (config, workdir, each override) is quoted with
``shlex.quote``; commands are argv lists, never a local shell string. Everything is checked
(``gcloud`` on PATH, accelerator type, zone, ``gs://`` workdir, the config and its override
keys) before the first ``gcloud`` call.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Any, Callable, Sequence, TextIO

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Layout on every worker, relative to the login user's home directory.
REMOTE_TARBALL = "rope_jax_src.tar.gz"
REMOTE_DIR = "rope_jax"
REMOTE_PYTHON = ".venv/bin/python"  # Relative to REMOTE_DIR.
REMOTE_LOG = "logs/train.log"  # Relative to REMOTE_DIR.
REMOTE_PID = "logs/train.pid"  # Relative to REMOTE_DIR.

GCLOUD_HINT = ("Install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install), then run "
               "`gcloud auth login` and `gcloud config set project PROJECT` (or pass --project).")
WORKDIR_WHY = ("TPU runs need a gs:// workdir: the workers of a pod are separate VMs with no "
               "shared disk, yet every process reads and writes the same checkpoints, and the "
               "checkpoints must outlive the VM (a preempted spot VM loses its disk; resuming "
               "after a preemption restarts from the workdir's latest checkpoint).")

# Where the generation is documented (https://cloud.google.com/tpu/docs/regions-zones); the list
# changes over time, so a zone outside it is a warning, not an error.
_DOCUMENTED_ZONES = {
    "v4": ("us-central2-b",),
    "v5p": ("us-central1-a", "us-east5-a", "europe-west4-b"),
    "v5litepod": ("us-central1-a", "us-south1-a", "us-west1-c", "us-west4-a", "us-east5-a",
                  "us-east5-b", "us-east5-c", "europe-west4-b"),
    "v6e": ("us-central1-b", "us-east1-d", "us-east5-a", "us-east5-b", "europe-west4-a",
            "asia-northeast1-b"),
}
_ZONE_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-(?:[a-z]|ai[0-9]+[a-z]?)$")
_NAME_RE = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
_PROJECT_RE = re.compile(r"^[a-z][-a-z0-9.:]{4,61}[a-z0-9]$")
_RUNTIME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_BUCKET_RE = re.compile(r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](?:/.*)?$")
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")
_PYVER_RE = re.compile(r"^3\.[0-9]{2}$")


class LaunchError(ValueError):
  """A bad launch request (or a failed gcloud call), with what to do about it."""


# ---------------------------------------------------------------------------------------------
# Accelerators.


@dataclasses.dataclass(frozen=True)
class _Family:
  runtime_version: str  # https://cloud.google.com/tpu/docs/runtimes
  aot_name: str  # Topology prefix for rope_jax.aot / jax.experimental.topologies.
  counts_cores: bool  # The type's number counts TensorCores (2 per chip), not chips.
  sizes: Callable[[int], bool]


_FAMILIES: dict[str, _Family] = {
    "v4": _Family("tpu-ubuntu2204-base", "v4", True, lambda n: n % 8 == 0 and 8 <= n <= 8192),
    "v5p": _Family("v2-alpha-tpuv5", "v5p", True, lambda n: n % 8 == 0 and 8 <= n <= 17920),
    "v5litepod": _Family("v2-alpha-tpuv5-lite", "v5e", False,
                         lambda n: n in (1, 4, 8, 16, 32, 64, 128, 256)),
    "v6e": _Family("v2-alpha-tpuv6e", "v6e", False,
                   lambda n: n in (1, 4, 8, 16, 32, 64, 128, 256)),
}


@dataclasses.dataclass(frozen=True)
class Accelerator:
  """A parsed accelerator type such as ``v5p-32``."""

  family: str
  size: int

  @property
  def name(self) -> str:
    return f"{self.family}-{self.size}"

  @property
  def chips(self) -> int:
    return self.size // 2 if _FAMILIES[self.family].counts_cores else self.size

  @property
  def hosts(self) -> int:
    """TPU VM hosts (workers): 4 chips each, except single-host v5e/v6e slices of up to 8."""
    if not _FAMILIES[self.family].counts_cores and self.chips <= 8:
      return 1
    return max(1, self.chips // 4)

  @property
  def default_runtime_version(self) -> str:
    return _FAMILIES[self.family].runtime_version

  @property
  def aot_topology(self) -> str | None:
    """The ``rope_jax.aot --topology`` of the usual slice shape (None if not a power of 2)."""
    chips = self.chips
    if chips & (chips - 1):
      return None
    fam = _FAMILIES[self.family]
    if fam.counts_cores:  # 3D torus: 2x2x1, 2x2x2, 2x2x4, 2x4x4, 4x4x4, 4x4x8, ...
      if chips < 4:
        return None
      dims = [2, 2, 1]
      while dims[0] * dims[1] * dims[2] < chips:
        i = max(j for j in range(3) if dims[j] == min(dims))
        dims[i] *= 2
    else:  # 2D: 1x1, 2x2, 2x4, 4x4, 4x8, ...
      dims = [1, 1]
      while dims[0] * dims[1] < chips:
        dims[1 if dims[0] == dims[1] else 0] *= 2
    return f"{fam.aot_name}:{'x'.join(map(str, dims))}"


def parse_accelerator(accelerator_type: str) -> Accelerator:
  """``"v5p-32"`` -> Accelerator; LaunchError naming the accepted forms otherwise."""
  accepted = ("v4-N and v5p-N (N = TensorCores, a multiple of 8, e.g. v5p-8, v5p-32), "
              "v5litepod-N and v6e-N (N = chips: 1, 4, 8, 16, 32, 64, 128 or 256)")
  m = re.fullmatch(r"(v4|v5p|v5litepod|v6e)-([0-9]+)", accelerator_type or "")
  if not m:
    hint = ""
    if re.fullmatch(r"v5e-[0-9]+", accelerator_type or ""):
      hint = f" (gcloud calls v5e 'v5litepod': use {accelerator_type.replace('v5e', 'v5litepod')})"
    raise LaunchError(f"Unknown accelerator type {accelerator_type!r}{hint}; accepted: "
                      f"{accepted}.")
  family, size = m.group(1), int(m.group(2))
  if not _FAMILIES[family].sizes(size):
    raise LaunchError(f"Accelerator type {accelerator_type!r} is not a valid {family} slice "
                      f"size; accepted: {accepted}.")
  return Accelerator(family, size)


def check_zone(zone: str, accelerator: Accelerator | None = None) -> list[str]:
  """LaunchError unless ``zone`` looks like a zone (``us-east5-a``); warnings if the zone is
  not among those documented for the accelerator's generation."""
  if not _ZONE_RE.fullmatch(zone or ""):
    raise LaunchError(f"--zone={zone!r} is not a zone name like 'us-east5-a' or 'us-central2-b' "
                      "(a region such as 'us-east5' is not enough).")
  warnings = []
  if accelerator is not None:
    documented = _DOCUMENTED_ZONES.get(accelerator.family, ())
    if documented and zone not in documented:
      warnings.append(f"zone {zone} is not among the zones documented for {accelerator.family} "
                      f"({', '.join(documented)}; https://cloud.google.com/tpu/docs/"
                      "regions-zones, which may be newer than this list).")
  return warnings


def check_workdir(workdir: str) -> None:
  """LaunchError unless ``workdir`` is a ``gs://bucket[/path]`` URL."""
  if not workdir:
    raise LaunchError("--workdir is required. " + WORKDIR_WHY)
  if workdir.startswith("gs://") and not _BUCKET_RE.fullmatch(workdir):
    raise LaunchError(f"--workdir={workdir!r}: the bucket name must be 3-222 lowercase letters, "
                      "digits, '-', '_' or '.' (gs://my-bucket/path).")
  if not _BUCKET_RE.fullmatch(workdir) or "\n" in workdir:
    raise LaunchError(f"--workdir={workdir!r} is not a gs://bucket/path URL. " + WORKDIR_WHY)


def check_gcloud() -> str:
  """The path of ``gcloud``; LaunchError with install instructions if it is not on PATH."""
  path = shutil.which("gcloud")
  if path is None:
    raise LaunchError("`gcloud` was not found on PATH. " + GCLOUD_HINT)
  return path


# ---------------------------------------------------------------------------------------------
# What to create and what to run.


@dataclasses.dataclass(frozen=True)
class TpuTarget:
  """A TPU VM (or queued resource of the same name) to create / use.

  ``accelerator_type`` may be empty for actions that do not need it (logs, stop, delete, ...).
  """

  name: str
  zone: str
  accelerator_type: str = ""
  runtime_version: str = ""
  project: str = ""
  spot: bool = False
  preemptible: bool = False
  queued: bool = False
  create_flags: tuple[str, ...] = ()

  @property
  def accelerator(self) -> Accelerator | None:
    return parse_accelerator(self.accelerator_type) if self.accelerator_type else None

  @property
  def runtime(self) -> str:
    if self.runtime_version:
      return self.runtime_version
    acc = self.accelerator
    return acc.default_runtime_version if acc is not None else ""

  @property
  def workers(self) -> str:
    """``--worker`` for commands every host must run: ``0`` on one host, ``all`` on a pod."""
    acc = self.accelerator
    return "0" if acc is not None and acc.hosts == 1 else "all"

  def validate(self, *, need_accelerator: bool) -> list[str]:
    """LaunchError on a bad name / zone / accelerator / flag combination; returns warnings."""
    if not _NAME_RE.fullmatch(self.name or ""):
      raise LaunchError(f"--name={self.name!r} is not a valid TPU name: lowercase letters, digits "
                        "and hyphens, starting with a letter, at most 63 characters.")
    if self.project and not _PROJECT_RE.fullmatch(self.project):
      raise LaunchError(f"--project={self.project!r} is not a valid project id.")
    if need_accelerator and not self.accelerator_type:
      raise LaunchError("--accelerator_type is required (e.g. v5p-8 for one host, v5p-32 for a "
                        "4-host pod).")
    acc = self.accelerator  # Raises on a bad type.
    warnings = check_zone(self.zone, acc)
    if self.runtime_version and not _RUNTIME_RE.fullmatch(self.runtime_version):
      raise LaunchError(f"--runtime_version={self.runtime_version!r} is not a runtime version "
                        "name (e.g. v2-alpha-tpuv5).")
    if self.spot and self.preemptible:
      raise LaunchError("Pass one of --spot and --preemptible, not both (spot is the newer "
                        "kind).")
    if self.queued and self.preemptible:
      raise LaunchError("Queued resources take --spot, not --preemptible.")
    return warnings


@dataclasses.dataclass(frozen=True)
class TrainJob:
  """``python -m rope_jax.train --config=CONFIG --workdir=WORKDIR --config.KEY=VALUE ...``.

  Attributes:
    config: ``configs/X.py[:args]``, relative to the repository root (it is shipped).
    workdir: ``gs://...``.
    overrides: ``(key, value)`` pairs, keys without the ``config.`` prefix; values are data.
  """

  config: str
  workdir: str
  overrides: tuple[tuple[str, str], ...] = ()

  def train_args(self, *, distributed: bool) -> list[str]:
    """The trainer's argv after ``python -m rope_jax.train`` (unquoted)."""
    args = [f"--config={self.config}", f"--workdir={self.workdir}"]
    if distributed:
      args.append("--distributed")
    args += [f"--config.{k}={v}" for k, v in self.overrides]
    return args

  def validate(self, *, check_config: bool = True) -> list[str]:
    """LaunchError on a non-gs:// workdir, a bad config path or an unknown override key;
    with ``check_config`` the config is loaded here to catch mistakes before paying for a TPU.
    Returns warnings."""
    check_workdir(self.workdir)
    path = self.config.partition(":")[0]
    if not path or os.path.isabs(path) or ".." in path.split("/"):
      raise LaunchError(f"--config={self.config!r}: give a config file inside the repository by "
                        "its relative path (e.g. configs/gemma_2b.py:pe=p_rope,p=0.75); the "
                        "repository is what is shipped to the workers.")
    if not os.path.isfile(os.path.join(REPO_ROOT, path)):
      raise LaunchError(f"--config={self.config!r}: {path} does not exist in {REPO_ROOT}.")
    for key, _ in self.overrides:
      if not _KEY_RE.fullmatch(key):
        raise LaunchError(f"Override key {key!r} is not a dotted config key (e.g. "
                          "train.num_steps).")
    return check_config_loads(self.config, dict(self.overrides)) if check_config else []


def parse_override(item: str) -> tuple[str, str]:
  """``"config.a.b=value"`` (or ``"a.b=value"``) -> ``("a.b", "value")``; the value is kept
  verbatim (it may contain ``=``, spaces, quotes)."""
  key, sep, value = item.partition("=")
  key = key.strip()
  if key.startswith("--"):
    key = key[2:]
  if key.startswith("config."):
    key = key[len("config."):]
  if not sep or not _KEY_RE.fullmatch(key):
    raise LaunchError(f"Override {item!r} is not config.KEY=VALUE (e.g. "
                      "config.train.num_steps=100).")
  return key, value


def check_config_loads(spec: str, overrides: dict[str, str]) -> list[str]:
  """Loads ``spec`` locally: bad config arguments and unknown override keys raise LaunchError;
  wiki / flan_v2 without a tokenizer or TFDS directory raise too (they would fail on the TPU).
  Returns warnings."""
  from rope_jax.config import base as config_lib  # pylint: disable=g-import-not-at-top
  try:
    config = config_lib.load_config(spec)
  except (ValueError, FileNotFoundError) as e:
    raise LaunchError(f"--config={spec!r} does not load: {e}") from e
  for key in overrides:
    node = config
    for part in key.split("."):
      if not hasattr(node, "keys") or part not in node.keys():
        raise LaunchError(f"Unknown config key {key!r} in override --config.{key}=...; known "
                          f"keys here: {sorted(node.keys()) if hasattr(node, 'keys') else []}.")
      node = node[part]

  def value(key: str) -> Any:
    if key in overrides:
      return overrides[key]
    node = config
    for part in key.split("."):
      node = node[part]
    return node

  warnings = []
  if value("train.data_source") == "data" and value("data.task") in ("wiki", "flan_v2"):
    task = value("data.task")
    if not value("data.vocab_path"):
      raise LaunchError(f"data.task={task} needs Gemma's tokenizer: pass "
                        "--config.data.vocab_path=gs://BUCKET/.../tokenizer.model.")
    if not value("data.tfds_data_dir"):
      raise LaunchError(f"data.task={task} needs the prepared TFDS data where the workers can read "
                        "it: pass --config.data.tfds_data_dir=gs://BUCKET/tensorflow_datasets.")
    for key in ("data.vocab_path", "data.tfds_data_dir"):
      if not str(value(key)).startswith("gs://"):
        warnings.append(f"{key}={value(key)!r} is not gs://: every worker must be able to read "
                        "it.")
  return warnings


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


# ---------------------------------------------------------------------------------------------
# Command line.

ACTIONS = ("create", "copy", "run", "submit", "logs", "stop", "status", "delete")


def add_tpu_flags(parser: argparse.ArgumentParser, *, with_name: bool = True) -> None:
  """The flags shared by launch.tpu and launch.grid."""
  if with_name:
    parser.add_argument("--name", required=True, help="TPU VM (and queued resource) name.")
  parser.add_argument("--zone", required=True, help="e.g. us-east5-a (v5p), us-central2-b (v4).")
  parser.add_argument("--project", default="", help="GCP project (default: gcloud's).")
  parser.add_argument("--accelerator_type", "--accelerator-type", default="",
                      help="v5p-8 (1 host), v5p-32 (4 hosts), v4-N, v5litepod-N, v6e-N.")
  parser.add_argument("--runtime_version", "--runtime-version", default="",
                      help="TPU software version (default: the generation's usual one, e.g. "
                           "v2-alpha-tpuv5 for v5p).")
  kind = parser.add_mutually_exclusive_group()
  kind.add_argument("--spot", action="store_true", help="Spot VM (preemptible, cheaper).")
  kind.add_argument("--preemptible", action="store_true", help="Preemptible (legacy) VM.")
  parser.add_argument("--queued", action="store_true",
                      help="Create through a queued resource (waits in line for capacity).")
  parser.add_argument("--create_flag", action="append", default=[],
                      help="Extra flag for the create command, e.g. "
                           "--create_flag=--service-account=SA (repeatable).")
  parser.add_argument("--python_version", default="3.11", help="Python of the workers' venv.")
  parser.add_argument("--override", action="append", default=[],
                      help="config.KEY=VALUE for rope_jax.train (repeatable); --config.KEY=VALUE "
                           "works too.")
  parser.add_argument("--skip_config_check", action="store_true",
                      help="Do not load the config locally before creating anything.")
  parser.add_argument("--check_fit", action="store_true",
                      help="submit: compile for the slice's topology first (rope_jax.aot; "
                           "needs libtpu locally).")
  parser.add_argument("--wait_timeout_s", type=float, default=24 * 3600,
                      help="How long to wait for a queued resource to become ACTIVE.")
  parser.add_argument("--poll_interval_s", type=float, default=30.0)
  parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                      help="Print the exact commands without running anything.")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m launch.tpu", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("action", choices=ACTIONS)
  add_tpu_flags(parser)
  parser.add_argument("--config", default="", help="configs/X.py[:args], relative to the repo.")
  parser.add_argument("--workdir", default="", help="gs://BUCKET/PATH (checkpoints, metrics).")
  parser.add_argument("--lines", type=int, default=100, help="logs: how many lines.")
  parser.add_argument("--follow", action="store_true", help="logs / run / submit: stream the "
                      "log afterwards.")
  parser.add_argument("--worker", default="0", help="logs: which worker (0, 1, ..., or all).")
  return parse_with_overrides(parser, argv)


def parse_with_overrides(parser: argparse.ArgumentParser,
                         argv: Sequence[str] | None) -> argparse.Namespace:
  """Parses ``argv``, taking each ``--config.KEY=VALUE`` (as rope_jax.train does) as
  ``--override=config.KEY=VALUE``, in command-line order."""
  argv = list(sys.argv[1:] if argv is None else argv)
  argv = [f"--override={a[2:]}" if a.startswith("--config.") and "=" in a else a for a in argv]
  args, rest = parser.parse_known_args(argv)
  if rest:
    parser.error(f"unrecognized arguments {rest} (overrides are --config.KEY=VALUE)")
  return args


def target_from_args(args: argparse.Namespace, name: str | None = None) -> TpuTarget:
  return TpuTarget(name=name or args.name, zone=args.zone, accelerator_type=args.accelerator_type,
                   runtime_version=args.runtime_version, project=args.project, spot=args.spot,
                   preemptible=args.preemptible, queued=args.queued,
                   create_flags=tuple(args.create_flag))


def validate_all(action: str, target: TpuTarget, job: TrainJob | None, *, dry_run: bool,
                 check_config: bool = True, python_version: str = "3.11",
                 worker: str = "0") -> list[str]:
  """Every check an action needs, before any gcloud call; returns warnings."""
  if not dry_run:
    check_gcloud()
  needs_acc = action in ("create", "run", "submit")
  warnings = target.validate(need_accelerator=needs_acc)
  if action in ("copy", "submit"):
    install_script(python_version)  # Raises on a bad version.
  if action == "logs" and not re.fullmatch(r"all|[0-9]+", worker):
    raise LaunchError(f"--worker={worker!r} is not a worker index or 'all'.")
  if action in ("run", "submit"):
    assert job is not None
    if not job.config:
      raise LaunchError("--config is required (e.g. configs/gemma_2b.py:pe=p_rope,p=0.75).")
    warnings += job.validate(check_config=check_config)
  return warnings


def execute(action: str, target: TpuTarget, job: TrainJob | None, gc: Gcloud, *,
            python_version: str = "3.11", lines: int = 100, follow: bool = False,
            worker: str = "0", fit: bool = False) -> None:
  """Runs one action (validation already done)."""
  if action == "create":
    ensure_created(gc, target)
    wait_ready(gc, target)
  elif action == "copy":
    copy_code(gc, target, python_version=python_version)
  elif action == "run":
    start_training(gc, target, job)
  elif action == "submit":
    if fit:
      check_fit(gc, job, target.accelerator)
    ensure_created(gc, target)
    wait_ready(gc, target)
    copy_code(gc, target, python_version=python_version)
    start_training(gc, target, job)
  elif action == "logs":
    gc.run(ssh_command(target, logs_script(lines, follow), worker=worker))
  elif action == "stop":
    gc.run(ssh_command(target, stop_script()))
  elif action == "status":
    gc.run(_gcloud(target, "queued-resources" if target.queued else "tpu-vm", "describe",
                   [target.name]))
  elif action == "delete":
    gc.run(delete_command(target))
  if follow and action in ("run", "submit"):
    gc.run(ssh_command(target, logs_script(lines, True), worker="0"))


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  try:
    target = target_from_args(args)
    job = TrainJob(config=args.config, workdir=args.workdir,
                   overrides=tuple(parse_override(o) for o in args.override))
    for w in validate_all(args.action, target, job, dry_run=args.dry_run,
                          check_config=not args.skip_config_check,
                          python_version=args.python_version, worker=args.worker):
      print(f"warning: {w}", file=sys.stderr)
    gc = Gcloud(dry_run=args.dry_run, poll_interval_s=args.poll_interval_s,
                wait_timeout_s=args.wait_timeout_s)
    execute(args.action, target, job, gc, python_version=args.python_version, lines=args.lines,
            follow=args.follow, worker=args.worker, fit=args.check_fit)
  except LaunchError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
