"""Noticing preemption (SIGTERM) so the training loop can checkpoint and exit.

Cloud TPU VMs (and most schedulers) send SIGTERM some seconds before killing a
job. Python's default action for SIGTERM is to die on the spot, losing the work
since the last checkpoint. `PreemptionGuard` turns the signal into a flag that
the loop polls at step boundaries::

  with preemption.PreemptionGuard() as guard:
    for step in range(start, total_steps):
      state = train_step(state, batch)
      ckpt.save(step + 1, state, data_state=..., metadata=cfg)
      if guard.preempted(step + 1):
        ckpt.save(step + 1, state, data_state=..., metadata=cfg, force=True)
        break                      # leave the loop cleanly
  ckpt.close()                     # waits for the async save to commit

The signal handler only sets a flag: no I/O, no locks, no JAX inside it.

Single process: `preempted()` returns the local flag.

Multi-process (pods): every host must save at the same step, but the signal
reaches hosts at different times. Two cases:

* `jax.distributed.initialize()` with the preemption service (the default,
  `jax_enable_preemption_service=True`): JAX's C++ runtime already listens for
  SIGTERM and runs a sync protocol that picks a common step. The guard then
  installs no Python handler (it would replace JAX's), and
  `preempted(step)` is `jax.experimental.multihost_utils
  .reached_preemption_sync_point(step)`, the same check as Orbax's
  `CheckpointManager.reached_preemption(step)` (exposed as
  `Checkpointer.reached_preemption`). It must be called by every process at
  every step.
* Preemption service disabled: the guard installs its handler and
  `preempted(step)` all-gathers the local flags (a small collective: every
  process must call it at the same steps; call it every N steps if that cost
  matters).
"""

from __future__ import annotations

from collections.abc import Sequence
import signal
import threading
from types import FrameType
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

__all__ = ["PreemptionGuard"]


def _jax_sync_available() -> bool:
  """Whether JAX's multi-host preemption sync protocol is running."""
  if jax.process_count() <= 1:
    return False
  try:
    return bool(jax.config.jax_enable_preemption_service)
  except AttributeError:
    return False


class PreemptionGuard:
  """Context manager that records SIGTERM (or other signals) as a flag.

  Attributes:
    signals: the signals caught (default: SIGTERM only, so Ctrl-C still
      raises KeyboardInterrupt).
  """

  def __init__(self, signals: Sequence[int] = (signal.SIGTERM,)):
    self.signals = tuple(signals)
    self._received: int | None = None  # signal number, set by the handler
    self._previous: dict[int, Any] = {}
    self._use_jax_sync = False
    self._announced = False
    self._active = False

  # The handler runs in the main thread between bytecodes; it must only set
  # state (no logging: the interrupted code may hold the logging lock).
  def _handler(self, signum: int, frame: FrameType | None) -> None:
    del frame
    self._received = signum

  def __enter__(self) -> PreemptionGuard:
    if self._active:
      raise RuntimeError("PreemptionGuard is not re-entrant.")
    self._use_jax_sync = _jax_sync_available()
    if not self._use_jax_sync:
      if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "PreemptionGuard must be entered in the main thread (Python only"
            " delivers signals there)."
        )
      for sig in self.signals:
        self._previous[sig] = signal.getsignal(sig)
        signal.signal(sig, self._handler)
    self._active = True
    return self

  def __exit__(self, *exc_info: Any) -> None:
    for sig, previous in self._previous.items():
      if previous is None:  # was installed from C; cannot be reinstated
        previous = signal.SIG_DFL
      signal.signal(sig, previous)
    self._previous.clear()
    self._active = False

  @property
  def signal_received(self) -> bool:
    """Whether this process caught one of `signals` (local, no sync)."""
    return self._received is not None

  def preempted(self, step: int | None = None) -> bool:
    """Whether to checkpoint now and exit.

    Args:
      step: the current step. Required on multi-process runs, where the
        answer is agreed across processes (see the module docstring).

    Returns:
      True once preemption was noticed (and, multi-process, agreed on).
    """
    if self._use_jax_sync:
      if step is None:
        raise ValueError("preempted(step) needs the step on multi-process runs.")
      result = bool(multihost_utils.reached_preemption_sync_point(int(step)))
    elif jax.process_count() > 1:
      if step is None:
        raise ValueError("preempted(step) needs the step on multi-process runs.")
      flags = multihost_utils.process_allgather(
          np.asarray([int(self.signal_received)], np.int32)
      )
      result = bool(np.any(np.asarray(flags)))
    else:
      result = self.signal_received
    if result and not self._announced:
      self._announced = True
      logging.warning(
          "Preemption noticed%s%s: checkpointing and stopping.",
          "" if step is None else f" at step {step}",
          "" if self._received is None else f" (signal {self._received})",
      )
    return result
