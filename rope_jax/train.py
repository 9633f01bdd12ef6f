r"""Training CLI: ``python -m rope_jax.train --config=configs/X.py[:args] --workdir=DIR``.

Only the command line and the loop live here (nothing imports this module): state, steps and
shardings are in ``train_lib``, checkpoints in ``checkpoint``, metrics in ``metrics``, FLOPs in
``flops``. Examples::

  python -m rope_jax.train --config=configs/tiny.py:pe=p_rope,p=0.75 --workdir=/tmp/tiny
  python -m rope_jax.train --config=configs/tiny.py --workdir=/tmp/tiny \
      --config.train.data_source=synthetic --config.mesh.fsdp=4 --config.mesh.data=-1

What a run does, in order: initialise multi-host JAX (pods; or ``--coordinator_address`` …),
validate the config, check the workdir, build the mesh and shardings (clear ValueErrors for a
batch that does not split over the data axes, a mesh that does not match the devices, an
unknown accelerator for MFU), compile the train step ahead of time and log its per-device
memory and FLOPs, resume from the newest intact checkpoint in ``<workdir>/checkpoints`` (input
position included), then train: a progress line every ``train.log_every_steps``, validation at
1×/2×/4× the training length every ``eval.every_steps``, checkpoints every
``checkpoint.save_every_steps``. SIGTERM saves and exits 0; a non-finite loss or gradient norm
stops with exit code 3 without saving over the last good checkpoint; a config, mesh,
batch or workdir error exits with code 2 before anything is compiled.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
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
flags.DEFINE_bool("orbax_info_logs", False, "Keep Orbax's INFO logs (very chatty).")
flags.DEFINE_integer("testonly_sigkill_at_step", None, "Fault injection for tests: SIGKILL "
                     "this process right after this step (no cleanup, like a crash).")

EXIT_BAD_CONFIG = 2
EXIT_NON_FINITE = 3


class NonFiniteError(RuntimeError):
  """The loss or gradient norm became NaN / inf."""


def _multihost_env() -> bool:
  """Whether the environment describes a multi-host job JAX can auto-initialise."""
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if "," in hosts or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return True
  for var in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    if int(os.environ.get(var, "1") or 1) > 1:
      return True
  return False


def init_distributed() -> None:
  """``jax.distributed.initialize()`` for pods / explicit flags; must precede any JAX call."""
  import jax  # pylint: disable=g-import-not-at-top
  explicit = FLAGS.coordinator_address is not None
  if not explicit and not (FLAGS.distributed or (FLAGS.distributed is None and _multihost_env())):
    return
  # CPU clusters (tests on loopback) need a collectives backend; harmless elsewhere.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if explicit:
    if FLAGS.num_processes is None or FLAGS.process_id is None:
      raise ValueError("--coordinator_address needs --num_processes and --process_id.")
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  else:
    jax.distributed.initialize()
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices.",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def _data_shard(setup: Any, global_batch_size: int) -> tuple[int, int]:
  """(index, count) of the batch-row block this process holds, for the input pipeline.

  Normally (process_index, process_count); when batch rows are replicated across processes
  (e.g. a mesh with only tensor parallelism across hosts) several processes load the same block.
  """
  from rope_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  start, stop = sharding_lib.process_rows(setup.batch_sharding, global_batch_size)
  rows = stop - start
  return start // rows, global_batch_size // rows


def run(config: Any, workdir: str) -> dict[str, float]:
  """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints).

  Returns:
    The last logged train metrics and eval results (for tests and scripts).

  Raises:
    ValueError: bad config / mesh / batch / workdir, before anything is compiled.
    NonFiniteError: NaN or inf loss or gradient norm.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from rope_jax.checkpoint import manager as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.checkpoint import rundir  # pylint: disable=g-import-not-at-top
  from rope_jax.config import base as config_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.training import flops as flops_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.training import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.training import preemption  # pylint: disable=g-import-not-at-top
  from rope_jax.training import train_lib  # pylint: disable=g-import-not-at-top

  sections = config_lib.validate(config)
  model_cfg, train_cfg = sections["model"], sections["train"]
  eval_cfg, ckpt_cfg, mesh_cfg = sections["eval"], sections["checkpoint"], sections["mesh"]
  train_lib.check_workdir(workdir)
  setup = train_lib.make_setup(model_cfg, train_cfg, mesh_cfg)

  def validation_iterator(global_batch_size: int, seq_len: int) -> Any:
    idx, count = _data_shard(setup, global_batch_size)
    return train_lib.make_batch_iterator(
        train_cfg, model_cfg, config.get("data"), split="validation",
        global_batch_size=global_batch_size, seq_len=seq_len, seed=train_cfg.seed,
        process_index=idx, process_count=count)

  # Checks the eval batch against the mesh now, before compiling anything.
  evaluator = train_lib.Evaluator(setup, eval_cfg, validation_iterator)

  devices = list(setup.mesh.devices.flat)
  peak, peak_source = flops_lib.resolve_peak(devices, train_cfg.peak_tflops_per_device)
  is_main = jax.process_index() == 0
  b, l = train_cfg.global_batch_size, train_cfg.seq_len
  step_flops = flops_lib.train_flops_per_step(model_cfg, b, l)
  n_params = sum(x.size for x in jax.tree.leaves(setup.abstract_state["params"]))
  logging.info("Mesh %s over %d %s device(s), %d process(es); %.2fM parameters; %s; peak %.3g "
               "FLOP/s (%s).", dict(setup.mesh.shape), len(devices), devices[0].platform,
               jax.process_count(), n_params / 1e6, flops_lib.describe(model_cfg, l), peak,
               peak_source)

  t0 = time.perf_counter()
  train_step = setup.compile_train_step()
  mem = train_lib.memory_report(train_step)
  logging.info("Compiled train step in %.1fs. Per-device memory: %s; XLA FLOPs/step/device: %s.",
               time.perf_counter() - t0,
               ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in mem.items()) or "n/a",
               train_lib.cost_flops(train_step))

  shard_index, shard_count = _data_shard(setup, b)
  train_iter = train_lib.make_batch_iterator(
      train_cfg, model_cfg, config.get("data"), split="train", global_batch_size=b, seq_len=l,
      seed=train_cfg.seed, process_index=shard_index, process_count=shard_count)

  ckpt = None
  start_step = 0
  state = None
  if ckpt_cfg.enabled:
    ckpt = checkpoint_lib.Checkpointer(rundir.checkpoint_dir(workdir),
                                       save_interval_steps=ckpt_cfg.save_every_steps,
                                       max_to_keep=ckpt_cfg.max_to_keep,
                                       async_save=ckpt_cfg.async_save)
    if ckpt.latest_step() is not None:
      start_step, state, data_state, _ = ckpt.restore(setup.abstract_state)
      if data_state is not None:
        train_iter.set_state(data_state)
      logging.info("Resumed from checkpoint step %d in %s (input position %s).", start_step,
                   ckpt.directory, data_state)
  if state is None:
    state = setup.init()
    if ckpt_cfg.init_from:  # Continued pre-training: another run's params, fresh optimizer.
      from rope_jax.training import warm_start  # pylint: disable=g-import-not-at-top
      state = warm_start.warm_start(state, setup.abstract_state["params"], ckpt_cfg.init_from)
  writer = metrics_lib.MetricsWriter(workdir, enabled=is_main,
                                     resume_step=start_step if start_step else None)
  if start_step == 0:
    writer.write_text("config", "```\n" + config.to_json_best_effort(indent=2) + "\n```")
  metadata = {"config": json.loads(config.to_json_best_effort()),
              "mesh": {k: int(v) for k, v in setup.mesh.shape.items()},
              "process_count": jax.process_count()}

  def evaluate(step: int) -> dict[str, float]:
    results = evaluator(state["params"])
    if results:
      writer.write(step, results, split="eval")
      if is_main:
        logging.info("eval step %d | %s", step, " | ".join(
            f"L={n}: loss {results[f'loss_len{n}']:.4f} ppl {results[f'perplexity_len{n}']:.2f}"
            for n in evaluator.lengths))
    return results

  def save(step: int, *, force: bool) -> None:
    if ckpt is not None:
      ckpt.save(step, state, data_state=train_iter.get_state(), metadata=metadata, force=force)

  def check_finite(step: int, m: dict[str, float]) -> None:
    bad = {k: m[k] for k in ("loss", "grad_norm") if not train_lib.is_finite(m[k])}
    if bad:
      last = ckpt.all_steps()[-1] if ckpt is not None and ckpt.all_steps() else None
      raise NonFiniteError(
          f"Non-finite {bad} at step {step}; stopping. The last good checkpoint (step {last}) "
          f"in {rundir.checkpoint_dir(workdir)} is left in place; lower "
          f"train.learning_rate or raise train.warmup_steps and resume.")

  last: dict[str, float] = {}
  pending = None  # (step, device metrics) of the previous step, checked one step late.
  timer = _Window()
  step, preempted = start_step, False
  try:
    with preemption.PreemptionGuard() as guard:
      while step < train_cfg.num_steps and not preempted:
        batch = train_lib.to_global(setup, next(train_iter), b)
        state, dev_metrics = train_step(state, batch)
        step += 1
        timer.steps += 1
        if pending is not None:  # Already computed: checking it barely blocks the pipeline.
          check_finite(pending[0], train_lib.host_scalars(pending[1]))
        pending = (step, dev_metrics)
        final = step == train_cfg.num_steps
        preempted = guard.preempted(step)
        periodic_save = ckpt is not None and step % ckpt_cfg.save_every_steps == 0
        log_now = step % train_cfg.log_every_steps == 0 or final
        if periodic_save or log_now or preempted or final:
          m = train_lib.host_scalars(dev_metrics)
          check_finite(step, m)  # Never save a state whose step went non-finite.
          pending = None
          if log_now:
            sps = timer.steps_per_second()
            m.update(perplexity=metrics_lib.perplexity(m["loss"]),
                     tokens_per_second=sps * b * l, mfu=flops_lib.mfu(step_flops, sps, peak),
                     step_time_s=1.0 / sps)
            writer.write(step, m)
            if is_main:
              logging.info(metrics_lib.progress_line(step, train_cfg.num_steps, m))
            last = m
            timer.reset()
        timer.pause()  # A save's blocking part (device -> host copy) is not step time.
        save(step, force=preempted or final)
        timer.resume()
        if FLAGS.is_parsed() and FLAGS.testonly_sigkill_at_step == step:
          sys.stdout.flush()
          sys.stderr.flush()
          os.kill(os.getpid(), signal.SIGKILL)
        if eval_cfg.every_steps and step % eval_cfg.every_steps == 0 and not final:
          timer.pause()
          last.update(evaluate(step))
          timer.resume()
    if preempted:
      logging.warning("Preempted at step %d: checkpoint saved; exiting cleanly.", step)
    elif start_step >= train_cfg.num_steps:
      logging.info("Already trained to step %d (train.num_steps); nothing to do.", start_step)
    else:
      last.update(evaluate(step))
  finally:
    if ckpt is not None:
      ckpt.close()  # Waits for the last (good) asynchronous save to commit.
    writer.close()
  return last


class _Window:
  """Wall time of the train steps since the last progress line (eval time excluded)."""

  def __init__(self):
    self.reset()

  def reset(self) -> None:
    self.start, self.steps, self.paused = time.perf_counter(), 0, 0.0

  def pause(self) -> None:
    self._pause_start = time.perf_counter()

  def resume(self) -> None:
    self.paused += time.perf_counter() - self._pause_start

  def steps_per_second(self) -> float:
    return self.steps / max(time.perf_counter() - self.start - self.paused, 1e-9)


def quiet_orbax_logs() -> None:
  """Drops Orbax's INFO records (one per file written); its warnings and errors stay."""
  import logging as std_logging  # pylint: disable=g-import-not-at-top

  class _Filter(std_logging.Filter):

    def filter(self, record: std_logging.LogRecord) -> bool:
      return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname

  logging.get_absl_handler().addFilter(_Filter())


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.config is None or FLAGS.workdir is None:
    raise app.UsageError("--config and --workdir are required.")
  if not FLAGS.orbax_info_logs:
    quiet_orbax_logs()
  init_distributed()
  try:
    run(FLAGS.config, FLAGS.workdir)
  except NonFiniteError as e:
    logging.error("%s", e)
    sys.exit(EXIT_NON_FINITE)
  except ValueError as e:  # Config / mesh / batch / workdir problems, found before compiling.
    logging.error("%s", e)
    sys.exit(EXIT_BAD_CONFIG)


if __name__ == "__main__":
  app.run(main)
