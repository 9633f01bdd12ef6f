"""What a Cloud TPU launch is, checked before any ``gcloud`` call: the TPU target, the training
job, the accelerator type (from the one table, ``rope_jax.config.accelerators``), the zone, the
``gs://`` workdir (shell metacharacters and quotes are rejected) and the config with its
override keys (``launch.tpu`` is the command line; ``launch.remote`` the commands it runs).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from typing import Any, Sequence

from rope_jax.config import accelerators
from rope_jax.data import config as data_config

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

_ZONE_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-(?:[a-z]|ai[0-9]+[a-z]?)$")
_NAME_RE = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
_PROJECT_RE = re.compile(r"^[a-z][-a-z0-9.:]{4,61}[a-z0-9]$")
_RUNTIME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_BUCKET_RE = re.compile(r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](?:/.*)?$")
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")
_PYVER_RE = re.compile(r"^3\.[0-9]{2}$")
_GS_PATH_CHAR = re.compile(r"[A-Za-z0-9._\-/=+@,:]")


class LaunchError(ValueError):
  """A bad launch request (or a failed gcloud call), with what to do about it."""



# ---------------------------------------------------------------------------------------------
# Accelerators (the table: rope_jax.config.accelerators).

_FAMILIES = accelerators.TPU_FAMILIES


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
  families = "|".join(map(re.escape, _FAMILIES))
  m = re.fullmatch(rf"({families})-([0-9]+)", accelerator_type or "")
  if not m:
    hint = ""
    if re.fullmatch(r"v5e-[0-9]+", accelerator_type or ""):
      hint = f" (gcloud calls v5e 'v5litepod': use {accelerator_type.replace('v5e', 'v5litepod')})"
    raise LaunchError(f"Unknown accelerator type {accelerator_type!r}{hint}; accepted: "
                      f"{accepted}.")
  family, size = m.group(1), int(m.group(2))
  if not _FAMILIES[family].valid_size(size):
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
    documented = _FAMILIES[accelerator.family].zones
    if documented and zone not in documented:
      warnings.append(f"zone {zone} is not among the zones documented for {accelerator.family} "
                      f"({', '.join(documented)}; https://cloud.google.com/tpu/docs/"
                      "regions-zones, which may be newer than this list).")
  return warnings


def check_gs_path(path: str, flag: str) -> None:
  """LaunchError if a ``gs://`` path holds a shell metacharacter, quote or whitespace. (They
  would be quoted safely, but no bucket path needs them, and a path that carries ``;``, ``$(``,
  a backtick or a quote is far more often an accident or an attack than a name.)"""
  if not path.startswith("gs://"):
    return
  bad = sorted({c for c in path[len("gs://"):] if not _GS_PATH_CHAR.fullmatch(c)})
  if bad:
    raise LaunchError(f"{flag}={path!r}: character(s) {' '.join(map(repr, bad))} are not "
                      "allowed in a gs:// path (no shell metacharacters, quotes or spaces); use "
                      "letters, digits and - _ . / = + @ , :")


def check_workdir(workdir: str, flag: str = "--workdir") -> None:
  """LaunchError unless ``workdir`` is a ``gs://bucket[/path]`` URL without shell
  metacharacters."""
  if not workdir:
    raise LaunchError("--workdir is required. " + WORKDIR_WHY)
  check_gs_path(workdir, flag)
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
  tfds = data_config.tfds_tasks_used(str(value("data.task")), str(value("data.mixture")))
  if value("train.data_source") == "data" and tfds:
    task = ",".join(tfds)
    if not value("data.vocab_path"):
      raise LaunchError(f"data.task={task} needs Gemma's tokenizer: pass "
                        "--config.data.vocab_path=gs://BUCKET/.../tokenizer.model.")
    if not value("data.tfds_data_dir"):
      raise LaunchError(f"data.task={task} needs the prepared TFDS data where the workers can read "
                        "it: pass --config.data.tfds_data_dir=gs://BUCKET/tensorflow_datasets.")
    for key in ("data.vocab_path", "data.tfds_data_dir"):
      check_gs_path(str(value(key)), f"--config.{key}")
      if not str(value(key)).startswith("gs://"):
        warnings.append(f"{key}={value(key)!r} is not gs://: every worker must be able to read "
                        "it.")
  return warnings


