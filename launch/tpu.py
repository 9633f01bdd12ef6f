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
``shlex.quote``; commands are argv lists, never a local shell string; ``gs://`` paths with shell
metacharacters, quotes or spaces are rejected outright. Exit codes: 0 done, 2 bad input (one
line, before any ``gcloud`` call), as every rope_jax CLI (README "Exit codes").

One trainer per workdir: a local workdir is locked by the trainer itself (an OS file lock); a
``gs://`` workdir has no lock object, so ``run`` / ``submit`` refuse to start a trainer on a
VM whose ``logs/train.pid`` names a live process, and each grid cell gets its own VM name and
workdir. Two different VMs pointed at one ``gs://`` workdir by hand are not detected.

The code is split in three: ``launch.spec`` (the checked request: target, job, accelerator from
``rope_jax.config.accelerators``), ``launch.remote`` (gcloud argv, remote scripts, the runner),
and this command line. Everything is checked
(``gcloud`` on PATH, accelerator type, zone, ``gs://`` workdir, the config and its override
keys) before the first ``gcloud`` call.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Sequence

from launch.remote import (Gcloud, aot_command, build_tarball, check_fit, copy_code,  # noqa: F401
                           create_command, delete_command, describe_command, ensure_created,
                           install_script, logs_script, repo_files, run_script, scp_command,
                           ssh_command, start_training, stop_script, tarball_path, wait_ready,
                           _gcloud)
from launch.spec import (REMOTE_DIR, REMOTE_LOG, REMOTE_PID, REMOTE_PYTHON,  # noqa: F401
                         REMOTE_TARBALL, REPO_ROOT, Accelerator, LaunchError, TpuTarget, TrainJob,
                         check_config_loads, check_gcloud, check_workdir, check_zone,
                         parse_accelerator, parse_override)
from rope_jax import entrypoint

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
  parser = entrypoint.ArgumentParser(prog="python -m launch.tpu", description=__doc__,
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
  entrypoint.run_plain(main)
