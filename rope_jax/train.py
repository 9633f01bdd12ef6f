r"""Training CLI: ``python -m rope_jax.train --config=configs/X.py[:args] --workdir=DIR``.

Only the command line lives here (nothing imports this module): the loop is
``rope_jax.training.loop``, state, steps and shardings ``train_lib``, checkpoints
``rope_jax.checkpoint``. Examples::

  python -m rope_jax.train --config=configs/tiny.py:pe=p_rope,p=0.75 --workdir=/tmp/tiny
  python -m rope_jax.train --config=configs/tiny.py --workdir=/tmp/tiny \
      --config.train.data_source=synthetic --config.mesh.fsdp=4 --config.mesh.data=-1

What a run does, in order: initialise multi-host JAX (pods; or ``--coordinator_address`` …),
validate the config, check and lock the workdir, build the mesh and shardings (clear ValueErrors for a
batch that does not split over the data axes, a mesh that does not match the devices, an
unknown accelerator for MFU), compile the train step ahead of time and log its per-device
memory and FLOPs, resume from the newest intact checkpoint in ``<workdir>/checkpoints`` (input
position included), then train: a progress line every ``train.log_every_steps``, validation at
1×/2×/4× the training length every ``eval.every_steps``, checkpoints every
``checkpoint.save_every_steps``. Exit codes (``rope_jax.errors``, README "Exit codes"): 0 done,
or SIGTERM at any moment (a checkpoint is saved if training had started); 2 bad config, flag,
mesh, batch, workdir or input file, before anything is compiled; 3 a non-finite loss, gradient
norm or updated parameter (nothing non-finite is saved: the last good checkpoint stays); 4 I/O
(disk full, storage unreachable); 5 no restorable checkpoint / incompatible run; 6 the workdir
is locked by another trainer (``--break_lock`` for a stale lock on a network file system).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from rope_jax import entrypoint


def define_flags() -> None:
  """The CLI's flags (called from :func:`cli` only, so importing this module defines none)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", None, "Experiment config file[:args].",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Run directory (local path or gs://): checkpoints, "
                      "metrics.jsonl, TensorBoard events.")
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 for multi-process "
                      "runs without auto-detection (with --num_processes and --process_id).")
  flags.DEFINE_integer("num_processes", None, "Number of processes (explicit multi-process).")
  flags.DEFINE_integer("process_id", None, "This process's index (explicit multi-process).")
  flags.DEFINE_bool("distributed", None, "Force (True) or skip (False) "
                    "jax.distributed.initialize(); default: auto-detect a multi-host TPU pod or "
                    "a SLURM / MPI job.")
  flags.DEFINE_bool("break_lock", False, "Remove the workdir's lock file before taking it (a "
                    "stale lock left on a network file system by a dead trainer).")
  flags.DEFINE_bool("orbax_info_logs", False, "Keep Orbax's INFO logs (very chatty).")
  flags.DEFINE_integer("testonly_sigkill_at_step", None, "Fault injection for tests: SIGKILL "
                       "this process right after this step's save (no cleanup, like a crash).")


def _multihost_env() -> bool:
  """Whether the environment describes a multi-host job JAX can auto-initialise."""
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if "," in hosts or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return True
  for var in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    if int(os.environ.get(var, "1") or 1) > 1:
      return True
  return False


def init_distributed(flag_values: Any) -> None:
  """``jax.distributed.initialize()`` for pods / explicit flags; must precede any JAX call."""
  import jax  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  explicit = flag_values.coordinator_address is not None
  auto = flag_values.distributed or (flag_values.distributed is None and _multihost_env())
  if not explicit and not auto:
    return
  # CPU clusters (tests on loopback) need a collectives backend; harmless elsewhere.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if explicit:
    if flag_values.num_processes is None or flag_values.process_id is None:
      raise ValueError("--coordinator_address needs --num_processes and --process_id.")
    jax.distributed.initialize(coordinator_address=flag_values.coordinator_address,
                               num_processes=flag_values.num_processes,
                               process_id=flag_values.process_id)
  else:
    jax.distributed.initialize()
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices.",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def sigkill_after(step: int | None):
  """The ``after_step`` hook of ``--testonly_sigkill_at_step``: SIGKILL right after ``step``."""
  if step is None:
    return None

  def hook(current: int) -> None:
    if current == step:
      sys.stdout.flush()
      sys.stderr.flush()
      os.kill(os.getpid(), signal.SIGKILL)
  return hook


def main(argv: list[str]) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from rope_jax import errors  # pylint: disable=g-import-not-at-top
  flag_values = flags.FLAGS
  config = entrypoint.config_flag(flag_values)
  if len(argv) > 1:
    raise errors.BadInputError(f"Unexpected arguments: {argv[1:]}; flags are --name=value.")
  if config is None or flag_values.workdir is None:
    raise errors.BadInputError("--config and --workdir are required (e.g. "
                               "--config=configs/tiny.py --workdir=/tmp/tiny).")
  if not flag_values.orbax_info_logs:
    entrypoint.quiet_orbax_logs()
  init_distributed(flag_values)
  from rope_jax.training import loop  # pylint: disable=g-import-not-at-top
  loop.run(config, flag_values.workdir, break_lock=flag_values.break_lock,
           after_step=sigkill_after(flag_values.testonly_sigkill_at_step))


def cli(argv: list[str] | None = None) -> None:
  entrypoint.run_absl(main, define_flags, argv, resumable=True)


if __name__ == "__main__":
  cli()
