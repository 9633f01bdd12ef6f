"""The training loop: ``run(config, workdir)`` trains a config in a run directory, resuming.

What a run does, in order: validate the config, check the workdir and take its lock
(``workdir_lock``: one trainer per run directory), build the mesh and shardings, open the input
pipeline (a missing vocabulary file or TFDS directory is bad input, found here, before anything
is compiled), compile the train step ahead of time and log its per-device memory and FLOPs,
resume from the newest intact checkpoint in ``<workdir>/checkpoints`` (input position
included), evaluate the resumed step if its evaluation is missing from ``metrics.jsonl`` (a run
killed between a checkpoint and its eval), then train: a progress line every
``train.log_every_steps``, validation at 1×/2×/4× the training length every
``eval.every_steps``, checkpoints every ``checkpoint.save_every_steps``.

Faults: SIGTERM at any moment (start-up included) saves what there is to save and returns; a
non-finite loss, gradient norm or updated parameter raises :class:`errors.DivergedError` without
saving, so the newest checkpoint stays the last good one (named in the message, or "none").
Fault-injection hooks for tests are arguments (``after_step``), not globals.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp

from rope_jax import errors
from rope_jax.checkpoint import manager as checkpoint_lib
from rope_jax.checkpoint import rundir
from rope_jax.config import base as config_lib
from rope_jax.training import flops as flops_lib
from rope_jax.training import metrics as metrics_lib
from rope_jax.training import preemption
from rope_jax.training import train_lib
from rope_jax.training import warm_start
from rope_jax.training import workdir_lock

# A hook called after each step's save (before its eval): ``after_step(step)``.
StepHook = Callable[[int], None]


def _data_shard(setup: Any, global_batch_size: int) -> tuple[int, int]:
  """(index, count) of the batch-row block this process holds, for the input pipeline.

  Normally (process_index, process_count); when batch rows are replicated across processes
  (e.g. a mesh with only tensor parallelism across hosts) several processes load the same block.
  """
  from rope_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  start, stop = sharding_lib.process_rows(setup.batch_sharding, global_batch_size)
  rows = stop - start
  return start // rows, global_batch_size // rows


@jax.jit
def all_finite(tree: Any) -> jax.Array:
  """Whether every element of every array of ``tree`` is finite (one replicated bool)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _open_input(make: Callable[[], Any], what: str) -> Any:
  """Builds an input iterator; a missing file (vocabulary, TFDS directory) is bad input."""
  try:
    return make()
  except FileNotFoundError as e:
    raise errors.BadInputError(f"{what}: {e}") from e


def _eval_due(step: int, eval_every: int, num_steps: int) -> bool:
  """Whether the record of ``step`` includes an evaluation (periodic, or the final step)."""
  return step >= num_steps or bool(eval_every and step % eval_every == 0)


def run(config: Any, workdir: str, *, after_step: StepHook | None = None,
        break_lock: bool = False) -> dict[str, float]:
  """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints).

  Args:
    config: the experiment ConfigDict.
    workdir: local path or ``gs://`` URL.
    after_step: fault-injection hook called after each step's checkpoint save, before its eval.
    break_lock: remove a stale workdir lock file first (see ``workdir_lock``).

  Returns:
    The last logged train metrics and eval results (for tests and scripts).

  Raises:
    ValueError / errors.BadInputError: bad config / mesh / batch / workdir / input files,
      before anything is compiled.
    errors.WorkdirLockedError: another trainer holds the workdir.
    errors.DivergedError: NaN or inf loss, gradient norm or updated parameters.
  """
  sections = config_lib.validate(config)
  train_cfg, eval_cfg = sections["train"], sections["eval"]
  train_lib.check_workdir(workdir)
  lock = workdir_lock.WorkdirLock(workdir, enabled=jax.process_index() == 0,
                                  break_lock=break_lock)
  _acquire_everywhere(lock)
  try:
    with preemption.PreemptionGuard() as guard:
      return _train(config, sections, workdir, guard, after_step)
  finally:
    lock.release()


def _acquire_everywhere(lock: workdir_lock.WorkdirLock) -> None:
  """Process 0 takes the lock; every process learns whether it did (none waits in a collective
  for a process that stopped)."""
  failure = None
  try:
    lock.acquire()
  except errors.WorkdirLockedError as e:
    failure = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    ok = bool(multihost_utils.broadcast_one_to_all(np.asarray(failure is None)))
    if not ok and failure is None:
      failure = errors.WorkdirLockedError(f"workdir {lock.workdir!r} is locked by another "
                                          "trainer (process 0 has the details).")
  if failure is not None:
    lock.release()
    raise failure


def _train(config: Any, sections: dict[str, Any], workdir: str,
           guard: preemption.PreemptionGuard, after_step: StepHook | None) -> dict[str, float]:
  model_cfg, train_cfg = sections["model"], sections["train"]
  eval_cfg, ckpt_cfg, mesh_cfg = sections["eval"], sections["checkpoint"], sections["mesh"]
  setup = train_lib.make_setup(model_cfg, train_cfg, mesh_cfg)
  if train_cfg.data_source != "synthetic":
    from rope_jax import entrypoint  # pylint: disable=g-import-not-at-top
    entrypoint.import_tensorflow_quietly()

  def validation_iterator(global_batch_size: int, seq_len: int) -> Any:
    idx, count = _data_shard(setup, global_batch_size)
    return train_lib.make_batch_iterator(
        train_cfg, model_cfg, config.get("data"), split="validation",
        global_batch_size=global_batch_size, seq_len=seq_len, seed=train_cfg.seed,
        process_index=idx, process_count=count)

  # Checks the eval batch against the mesh now, before compiling anything.
  evaluator = train_lib.Evaluator(setup, eval_cfg, validation_iterator)
  b, l = train_cfg.global_batch_size, train_cfg.seq_len
  shard_index, shard_count = _data_shard(setup, b)
  train_iter = _open_input(lambda: train_lib.make_batch_iterator(
      train_cfg, model_cfg, config.get("data"), split="train", global_batch_size=b, seq_len=l,
      seed=train_cfg.seed, process_index=shard_index, process_count=shard_count), "input data")

  devices = list(setup.mesh.devices.flat)
  peak, peak_source = flops_lib.resolve_peak(devices, train_cfg.peak_tflops_per_device)
  is_main = jax.process_index() == 0
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

  ckpt = None
  start_step = 0
  state = None
  ckpt_dir = str(rundir.checkpoint_dir(workdir))
  if ckpt_cfg.enabled:
    ckpt = checkpoint_lib.Checkpointer(ckpt_dir, save_interval_steps=ckpt_cfg.save_every_steps,
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

  def last_good() -> str:
    steps = ckpt.all_steps() if ckpt is not None else []
    if steps:
      return f"The last good checkpoint (step {steps[-1]}) in {ckpt_dir} is left in place"
    return f"No checkpoint was saved before this step (nothing to resume from in {ckpt_dir})"

  def diverged(step: int, what: str) -> errors.DivergedError:
    return errors.DivergedError(
        f"Non-finite {what} at step {step}; stopping. {last_good()}; lower train.learning_rate "
        f"or raise train.warmup_steps and resume.")

  def check_finite(step: int, m: dict[str, float]) -> None:
    bad = {k: m[k] for k in ("loss", "grad_norm") if not train_lib.is_finite(m[k])}
    if bad:
      raise diverged(step, str(bad))

  def save(step: int, *, force: bool) -> None:
    if ckpt is None:
      return
    # Never keep a poisoned state as the last good one (checked only when a save is due).
    if (force or step % ckpt_cfg.save_every_steps == 0) and not bool(all_finite(state["params"])):
      raise diverged(step, "parameters after the update")
    ckpt.save(step, state, data_state=train_iter.get_state(), metadata=metadata, force=force)

  last: dict[str, float] = {}
  pending = None  # (step, device metrics) of the previous step, checked one step late.
  timer = _Window()
  step = start_step
  preempted = guard.preempted(step)  # SIGTERM during start-up: nothing new to save.
  try:
    if (start_step and not preempted and _eval_due(start_step, eval_cfg.every_steps,
                                                   train_cfg.num_steps)
        and _missing_eval(workdir, start_step)):
      logging.warning("Step %d's evaluation is missing from metrics.jsonl (the last run stopped "
                      "between its checkpoint and its eval): evaluating it now.", start_step)
      last.update(evaluate(start_step))
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
      if after_step is not None:
        after_step(step)
      if eval_cfg.every_steps and step % eval_cfg.every_steps == 0 and not final:
        timer.pause()
        last.update(evaluate(step))
        timer.resume()
    if preempted:
      logging.warning("Preempted at step %d: %s; exiting cleanly.", step,
                      "checkpoint saved" if step > start_step else "nothing new to save")
    elif start_step >= train_cfg.num_steps:
      logging.info("Already trained to step %d (train.num_steps); nothing to do.", start_step)
    else:
      last.update(evaluate(step))
  finally:
    if ckpt is not None:
      ckpt.close()  # Waits for the last (good) asynchronous save to commit.
    writer.close()
  return last


def _missing_eval(workdir: str, step: int) -> bool:
  """Whether ``metrics.jsonl`` lacks an eval record at ``step`` (process 0 reads; all agree)."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  missing = step not in metrics_lib.record_steps(workdir, "eval")
  if jax.process_count() > 1:
    missing = bool(multihost_utils.broadcast_one_to_all(np.asarray(missing)))
  return missing


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
