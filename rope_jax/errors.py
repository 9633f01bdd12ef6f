"""The error types of rope_jax and the one exit-code table every command line honours.

Layer 0: imports nothing. A CLI maps an exception to its exit code with :func:`exit_code` and
prints one line (the exception's message), never a traceback, for the types below.

| code | meaning | a scheduler should |
|---|---|---|
| 0 | done (also: SIGTERM / preemption, after the checkpoint was saved) | resume later if unfinished |
| 2 | bad input: config, flag, path, value; found before anything is compiled | not retry |
| 3 | diverged: a non-finite loss, gradient or update; the last good checkpoint is kept | not retry as is |
| 4 | I/O or resource error (disk full, permission denied, storage unreachable) | retry |
| 5 | no restorable checkpoint, or the workdir holds a run with an incompatible config | not retry |
| 6 | the workdir is locked by another live trainer | retry later |
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_IO = 4
EXIT_NO_CHECKPOINT = 5
EXIT_LOCKED = 6


class RopeJaxError(Exception):
  """Base of the errors a CLI reports in one line."""

  exit_code = 1


class BadInputError(RopeJaxError, ValueError):
  """A bad config, flag, path or value, found before anything is compiled."""

  exit_code = EXIT_BAD_INPUT


class DivergedError(RopeJaxError, RuntimeError):
  """The loss, gradient norm or updated parameters became NaN / inf."""

  exit_code = EXIT_DIVERGED


class ResourceError(RopeJaxError, OSError):
  """An I/O or resource failure (disk full, permission denied, storage unreachable)."""

  exit_code = EXIT_IO


class NoCheckpointError(RopeJaxError, FileNotFoundError):
  """No checkpoint in the run directory can be restored (none there, or all damaged)."""

  exit_code = EXIT_NO_CHECKPOINT


class IncompatibleRunError(RopeJaxError):
  """The run directory holds a run whose config cannot continue as the one asked for."""

  exit_code = EXIT_NO_CHECKPOINT


class WorkdirLockedError(RopeJaxError):
  """Another live trainer holds the run directory's lock."""

  exit_code = EXIT_LOCKED


def exit_code(error: BaseException) -> int:
  """The exit code of ``error``: its class's code; a plain ValueError is bad input (2); an
  OSError is an I/O error (4); anything else is 1 (a bug: the CLI shows the traceback)."""
  if isinstance(error, RopeJaxError):
    return error.exit_code
  if isinstance(error, ValueError):
    return EXIT_BAD_INPUT
  if isinstance(error, OSError):
    return EXIT_IO
  return 1
