"""One trainer per run directory: an exclusive lock on ``<workdir>/.lock``.

Local workdirs: an OS file lock (``fcntl.flock``, exclusive, non-blocking) on ``<workdir>/.lock``,
held for the whole run by process 0 and released by the kernel on any exit (crash and SIGKILL
included), so a lock is never stale on a local disk. The file also records the holder (host, pid,
start time, command) for the message a second trainer prints (:class:`WorkdirLockedError`, exit
6). On a network file system whose locks outlive a dead client, ``--break_lock`` removes the lock
file first and takes a fresh one.

``gs://`` workdirs have no OS lock: concurrent trainers on one bucket path are prevented by how
they are started. ``launch.tpu run`` / ``submit`` refuse to start a second trainer on a TPU VM
whose ``logs/train.pid`` names a live process, and one TPU VM name maps to one workdir in the
grid launcher; two different VMs pointed at one gs:// workdir by hand are not detected (give
each run its own workdir).
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
from typing import Any

from absl import logging

from rope_jax import errors

LOCK_NAME = ".lock"


class WorkdirLock:
  """Context manager: holds the exclusive lock of ``workdir`` (local paths; no-op on ``gs://``).

  Args:
    workdir: the run directory (created if missing).
    enabled: False on processes other than 0, and to skip locking altogether.
    break_lock: remove an existing lock file first (a stale lock on a network file system).
  """

  def __init__(self, workdir: str, *, enabled: bool = True, break_lock: bool = False):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_NAME)
    self.enabled = enabled and "://" not in workdir
    self.break_lock = break_lock
    self._fd: int | None = None

  def holder(self) -> dict[str, Any]:
    """What the lock file says about its holder ({} if unreadable)."""
    try:
      with open(self.path, encoding="utf-8") as f:
        return json.loads(f.read() or "{}")
    except (OSError, ValueError):
      return {}

  def acquire(self) -> None:
    import fcntl  # pylint: disable=g-import-not-at-top
    if not self.enabled or self._fd is not None:
      return
    os.makedirs(self.workdir, exist_ok=True)
    if self.break_lock and os.path.exists(self.path):
      logging.warning("--break_lock: removing %s (held by %s).", self.path, self.holder() or "?")
      os.unlink(self.path)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      h = self.holder()
      who = (f"host {h.get('host', '?')}, pid {h.get('pid', '?')}, started "
             f"{h.get('start_time', '?')}") if h else "an unknown process"
      raise errors.WorkdirLockedError(
          f"workdir {self.workdir!r} is locked by another trainer ({who}); wait for it to end "
          f"or stop it. If that process is gone (a stale lock on a network file system), pass "
          f"--break_lock.") from None
    info = {"host": socket.gethostname(), "pid": os.getpid(),
            "start_time": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "argv": sys.argv}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(info).encode())
    os.fsync(fd)
    self._fd = fd

  def release(self) -> None:
    if self._fd is None:
      return
    import fcntl  # pylint: disable=g-import-not-at-top
    try:
      os.ftruncate(self._fd, 0)
    except OSError:
      pass
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None

  def __enter__(self) -> WorkdirLock:
    self.acquire()
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.release()
