r"""Submits the Table 2 grid (``rope_jax.sweeps.grid``) to Cloud TPU: one TPU VM per cell.

    python -m launch.grid submit --root=gs://BUCKET/rope_jax/table2 --zone=us-east5-a \
        --accelerator_type=v5p-32 --spot \
        --config.data.vocab_path=gs://BUCKET/gemma/tokenizer.model \
        --config.data.tfds_data_dir=gs://BUCKET/tensorflow_datasets --dry-run

Each cell ``<row>-<dataset>`` (e.g. ``p075-rope-wiki``) gets its own TPU VM
``<prefix>-<cell>`` and workdir ``<root>/<dataset>/<row>``, so cells run in parallel and each
is preempted, resubmitted and resumed on its own. ``submit`` first creates every missing (or
preempted) VM / queued resource, then, cell by cell, waits for it, ships the code and starts
training. Re-running the same ``submit`` after preemptions recreates only what is gone and every
trainer resumes from its own workdir; a cell whose trainer is still running refuses to start
a second one. ``--cells`` (or ``--rows`` / ``--datasets``) picks a subset; ``status``, ``logs``,
``stop`` and ``delete`` act on the same cells. To run cells one after another on a single VM
instead, use ``python -m launch.tpu run`` per cell with that VM's name.

Then: ``python -m rope_jax.results --root=gs://BUCKET/rope_jax/table2``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from launch import tpu
from rope_jax.sweeps import grid as grid_lib

GRID_ACTIONS = ("submit", "status", "logs", "stop", "delete")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  from rope_jax import entrypoint  # pylint: disable=g-import-not-at-top
  parser = entrypoint.ArgumentParser(prog="python -m launch.grid", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("action", choices=GRID_ACTIONS)
  tpu.add_tpu_flags(parser, with_name=False)
  parser.add_argument("--root", default="", help="gs:// root; cell workdirs are "
                      "ROOT/<dataset>/<row>.")
  parser.add_argument("--prefix", default="t2", help="TPU names are PREFIX-<cell>.")
  parser.add_argument("--scale", default="paper", choices=sorted(grid_lib.SCALES))
  parser.add_argument("--cells", default="", help="Comma-separated cell names (default: all).")
  parser.add_argument("--rows", default="", help="Comma-separated row keys (default: all).")
  parser.add_argument("--datasets", default="", help="Comma-separated datasets (default: all).")
  parser.add_argument("--lines", type=int, default=20, help="logs: lines per cell.")
  return tpu.parse_with_overrides(parser, argv)


def _split(s: str) -> list[str] | None:
  items = [x.strip() for x in s.split(",") if x.strip()]
  return items or None


def select_runs(args: argparse.Namespace) -> list[grid_lib.Run]:
  """The grid cells named by --cells / --rows / --datasets."""
  try:
    runs = grid_lib.expand(args.scale, datasets=_split(args.datasets), rows=_split(args.rows))
  except ValueError as e:
    raise tpu.LaunchError(str(e)) from e
  cells = _split(args.cells)
  if cells:
    known = {r.name for r in grid_lib.expand(args.scale)}
    bad = [c for c in cells if c not in known]
    if bad:
      raise tpu.LaunchError(f"Unknown cell(s) {bad}; cells: {sorted(known)}.")
    runs = [r for r in runs if r.name in cells]
  if not runs:
    raise tpu.LaunchError("No cell selected.")
  return runs


def plan(args: argparse.Namespace) -> list[tuple[grid_lib.Run, tpu.TpuTarget, tpu.TrainJob]]:
  """(cell, TPU target, train job) per selected cell; validated, before any gcloud call."""
  user = [tpu.parse_override(o) for o in args.override]
  out = []
  for run in select_runs(args):
    target = tpu.target_from_args(args, name=f"{args.prefix}-{run.name}")
    overrides = dict(run.overrides)
    overrides.update(user)
    job = tpu.TrainJob(config=run.config, workdir=run.workdir(args.root) if args.root else "",
                       overrides=tuple(overrides.items()))
    out.append((run, target, job))
  return out


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  try:
    cells = plan(args)
    if args.action == "submit":
      tpu.check_workdir(args.root, "--root")
    warnings: list[str] = []
    for _, target, job in cells:
      for w in tpu.validate_all(args.action, target, job, dry_run=args.dry_run,
                                check_config=not args.skip_config_check,
                                python_version=args.python_version):
        if w not in warnings:
          warnings.append(w)
    for w in warnings:
      print(f"warning: {w}", file=sys.stderr)
    gc = tpu.Gcloud(dry_run=args.dry_run, poll_interval_s=args.poll_interval_s,
                    wait_timeout_s=args.wait_timeout_s)
    if args.action == "submit":
      if args.check_fit:
        tpu.check_fit(gc, cells[0][2], cells[0][1].accelerator)
      gc.say(f"# {len(cells)} cell(s): creating what is missing")
      for _, target, _ in cells:
        tpu.ensure_created(gc, target)
      tarball = tpu.tarball_path(args.prefix)
      if gc.dry_run:
        gc.say(f"# build {tarball} from {tpu.REPO_ROOT}")
      else:
        gc.say(f"# built {tarball} ({tpu.build_tarball(tarball)} files)")
      for run, target, job in cells:
        gc.say(f"# cell {run.name}: {run.row.label} on {run.dataset} -> {job.workdir}")
        tpu.wait_ready(gc, target)
        tpu.copy_code(gc, target, python_version=args.python_version, tarball=tarball)
        tpu.start_training(gc, target, job)
      gc.say(f"# results: python -m rope_jax.results --root={args.root}")
    elif args.action == "status":
      for run, target, _ in cells:
        state = gc.state(target)
        gc.say(f"{run.name}\t{target.name}\t{state or 'absent'}")
    else:
      for run, target, job in cells:
        gc.say(f"# cell {run.name}")
        tpu.execute(args.action, target, job, gc, lines=args.lines)
  except tpu.LaunchError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  from rope_jax import entrypoint  # pylint: disable=g-import-not-at-top
  entrypoint.run_plain(main)
