"""The one way a rope_jax command line runs: quiet environment, clean SIGTERM, one exit-code table.

Every CLI (``rope_jax.{train,aot,analyze,sample,import_gemma,results}``, ``launch.*``) starts
through :func:`run_absl` (absl flags, defined by a function called here, never at import) or
:func:`run_plain` (argparse mains). Either one

* sets the environment that keeps a CPU run's log readable before TensorFlow or JAX is imported
  (:func:`quiet_environment`);
* for the trainer (``resumable=True``), turns a SIGTERM that arrives before the training loop's
  preemption guard is installed (imports, flag and config loading) into a clean exit 0 (nothing
  was trained, nothing is lost); from then on the guard checkpoints and exits 0;
* maps an exception to its exit code with :func:`rope_jax.errors.exit_code` and prints one line,
  ``error: <message>``, on stderr (no traceback), and exits with the code; an unexpected
  exception (a bug) keeps its traceback and exits 1. A bad flag or ``--config`` file / argument /
  key is bad input (2); a full or failing disk is I/O (4) whatever exception carries it.

Layer 0: the standard library and ``rope_jax.errors`` at import; absl only inside
:func:`run_absl`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import signal
import sys
import tempfile
from typing import Any, Callable, Iterator, Sequence

from rope_jax import errors

# Errno values that mean "the machine / storage failed", whatever exception wraps them.
_IO_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM}
# How storage failures read when a library re-raises them as text (TensorStore, gRPC, GCS).
_IO_MESSAGE = re.compile(r"No space left on device|Disk quota exceeded|Read-only file system|"
                         r"RESOURCE_EXHAUSTED: Error writing|DEADLINE_EXCEEDED|UNAVAILABLE: ")
# TensorFlow's and XLA's start-up lines that say nothing about the run (matched per line).
_NOISE = re.compile(
    r"oneDNN custom operations are on|cudart_stub\.cc|Could not find cuda drivers|"
    r"failed call to cuInit|cuda_platform\.cc|cuda_diagnostics|cpu_feature_guard\.cc|"
    r"rebuild TensorFlow with the appropriate compiler flags|"
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR|"
    r"Unable to register cu(DNN|FFT|BLAS) factory|computation_placer\.cc|"
    r"TF-TRT Warning|This TensorFlow binary is optimized")


def quiet_environment() -> None:
  """Environment for a readable log, set before TensorFlow / JAX are imported (explicit user
  settings win): TensorFlow's C++ INFO/WARNING lines off, its oneDNN notice off; on a CPU-only
  run (``JAX_PLATFORMS=cpu``) TensorFlow sees no GPU, so it never calls ``cuInit``."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
  if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def quiet_orbax_logs() -> None:
  """Drops Orbax's INFO records (one per file written); its warnings and errors stay. For every CLI that reads or
  writes checkpoints."""
  import logging as std_logging  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top

  class _Filter(std_logging.Filter):

    def filter(self, record: std_logging.LogRecord) -> bool:
      return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname

  logging.get_absl_handler().addFilter(_Filter())


@contextlib.contextmanager
def filtered_stderr(pattern: re.Pattern[str] = _NOISE) -> Iterator[None]:
  """Captures file descriptor 2 (C++ logging included) and replays it minus lines matching
  ``pattern``. For the few calls whose native start-up chatter no setting silences (TensorFlow
  logs before its logging is initialised)."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode="w+b") as tmp:
    os.dup2(tmp.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      tmp.seek(0)
      kept = [l for l in tmp.read().decode(errors="replace").splitlines(keepends=True)
              if not pattern.search(l)]
      if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()


def import_tensorflow_quietly() -> Any:
  """``import tensorflow`` without its start-up noise; TensorFlow (only the input pipeline uses
  it) is kept off the GPUs, which belong to JAX. Returns the module."""
  with filtered_stderr():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
      tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):  # Already initialised: too late, and harmless.
      pass
  return tf


_STARTUP_SIGTERM = (b"SIGTERM during start-up: nothing was trained, nothing to save; exiting "
                    b"cleanly.\n")


def _on_sigterm(signum: int, frame: Any) -> None:
  """Exits 0 at once: before the loop's guard takes SIGTERM over nothing has been written that
  matters (a lock file the kernel releases), and an exception raised here could be swallowed by
  whatever runs at that moment (a garbage-collection callback, a broad ``except``)."""
  del signum, frame
  os.write(2, _STARTUP_SIGTERM)
  os._exit(errors.EXIT_OK)  # pylint: disable=protected-access


def install_startup_sigterm() -> None:
  """Until a preemption guard replaces the handler, SIGTERM exits 0 at once (resumable jobs:
  the trainer; nothing is trained yet, so a scheduler's "resume later" is right)."""
  try:
    signal.signal(signal.SIGTERM, _on_sigterm)
  except ValueError:  # Not the main thread (e.g. called from a test thread): leave it.
    pass


def one_line(error: BaseException) -> str:
  """The exception's message on one line (what the CLI prints)."""
  text = " ".join(str(error).split()) or type(error).__name__
  if isinstance(error, (KeyError, AttributeError)):  # Their str() is a quoted repr.
    text = text.strip("'\"").replace("\\n", " ").replace("\\'", "'")
  return text


def flag_error_line(error: BaseException) -> str:
  """One line for a flag-parsing error. ml_collections embeds the config file's traceback in
  its message: only the flag and the exception's own last line are kept."""
  text = str(error)
  missing = re.search(r"No such file or directory: '([^']+)'", text)
  if missing and "config" in text.lower():
    return (f"--config file {missing.group(1)!r} does not exist; give a config file "
            "(e.g. --config=configs/tiny.py:pe=p_rope,p=0.75).")
  if "Traceback (most recent call last)" in text:
    flag = text.split(":", 1)[0] if text.startswith("flag --") else ""
    last = [l for l in text.splitlines() if l.strip()][-1].strip()
    last = re.sub(r"^[A-Za-z_.]*(Error|Exception): ", "", last)
    return f"{flag}: {last}" if flag else last
  return one_line(error)


def config_flag(flag_values: Any, name: str = "config") -> Any:
  """The value of a ``config_flags`` flag; ml_collections defers some load errors (a missing
  file) to the first access, which is bad input like any flag error."""
  try:
    value = getattr(flag_values, name)
    if value is not None:
      value.keys()  # A config that failed to load raises here, not at parse time.
    return value
  except Exception as e:  # pylint: disable=broad-except
    raise errors.BadInputError(flag_error_line(e)) from e


def _unknown_override(flag_values: Any, args: Sequence[str]) -> str | None:
  """For a ``--config.KEY=VALUE`` whose key is not in the loaded config: which one, and the
  keys allowed at that level."""
  try:
    config = flag_values["config"].value
  except (KeyError, AttributeError):
    return None
  spec = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), None)
  if config is None and spec:
    from rope_jax.config import base  # pylint: disable=g-import-not-at-top
    try:
      config = base.load_config(spec)
    except Exception:  # pylint: disable=broad-except
      return None
  if config is None:
    return None
  for arg in args:
    if not arg.startswith("--config.") or "=" not in arg:
      continue
    key = arg[len("--config."):].split("=", 1)[0]
    node, path = config, []
    for part in key.split("."):
      keys = list(node.keys()) if hasattr(node, "keys") else []
      if part not in keys:
        where = "config." + ".".join(path) if path else "config"
        return (f"unknown config key {key!r} in {arg.split('=', 1)[0]}; known keys of {where}: "
                f"{', '.join(sorted(keys)) or '(none: a value, not a section)'}.")
      node, path = node[part], path + [part]
  return None


def _io_cause(error: BaseException) -> OSError | None:
  """The OSError with a storage errno (disk full, read-only, ...) in ``error``'s chain."""
  seen = set()
  e: BaseException | None = error
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in _IO_ERRNOS:
      return e
    m = re.search(r"\[Errno (\d+)\]", str(e))
    if m and int(m.group(1)) in _IO_ERRNOS:
      return OSError(int(m.group(1)), str(e))
    if _IO_MESSAGE.search(str(e)):  # TensorStore / Orbax / gRPC wrap the OSError in text.
      return OSError(errno.EIO, str(e))
    e = e.__cause__ or e.__context__
  return None


def classify(error: BaseException) -> int:
  """The exit code of ``error``: :func:`errors.exit_code`, except that a full / read-only disk
  anywhere in the exception's chain is an I/O error (4), never "bad input"."""
  if isinstance(error, errors.RopeJaxError) and not isinstance(error, errors.BadInputError):
    return error.exit_code
  if _io_cause(error) is not None:
    return errors.EXIT_IO
  if isinstance(error, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
    return errors.EXIT_BAD_INPUT  # A path the user gave that is not there: bad input.
  return errors.exit_code(error)


def fail(error: BaseException, code: int | None = None, prefix: str = "error") -> None:
  """Prints ``prefix: <one line>`` on stderr and exits with ``code`` (default: classified).

  The exit skips interpreter shutdown (``os._exit`` after flushing): the command's own cleanup
  (``finally`` blocks: checkpoint manager closed, metrics flushed, lock released) has run, and
  what is left are library threads whose shutdown chatter would bury the one line."""
  code = classify(error) if code is None else code
  print(f"{prefix}: {one_line(error)}", file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(code)  # pylint: disable=protected-access


def call_main(main: Callable[..., Any], *args: Any) -> Any:
  """Runs ``main(*args)``; a known error -> one line + its exit code; SIGTERM -> exit 0."""
  try:
    return main(*args)
  except KeyboardInterrupt:
    print("interrupted.", file=sys.stderr, flush=True)
    sys.exit(130)
  except Exception as e:  # pylint: disable=broad-except
    if classify(e) == 1:
      raise  # A bug: keep the traceback.
    fail(e)


class ArgumentParser(argparse.ArgumentParser):
  """argparse with the house's bad-input line: ``error: <what>`` (+ where to find help), exit 2."""

  def error(self, message: str) -> None:  # type: ignore[override]
    print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr, flush=True)
    sys.exit(errors.EXIT_BAD_INPUT)


def run_plain(main: Callable[[Sequence[str] | None], int | None],
              argv: Sequence[str] | None = None) -> None:
  """Runs an argparse-style ``main(argv) -> exit code`` under the table; exits."""
  quiet_environment()
  code = call_main(main, argv)
  sys.exit(int(code or 0))


def run_absl(main: Callable[[list[str]], int | None], define_flags: Callable[[], None],
             argv: Sequence[str] | None = None, *, resumable: bool = False) -> None:
  """Defines the flags (``define_flags()``), parses them (a bad flag, config file, config
  argument or ``--config.*`` key: one line, exit 2) and runs ``main`` under the table.
  ``resumable`` (the trainer): SIGTERM before the loop's guard takes over exits 0."""
  quiet_environment()
  if resumable:
    install_startup_sigterm()
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  define_flags()

  def parse(args: list[str]) -> list[str]:
    try:
      return flags.FLAGS(args)
    except Exception as e:  # pylint: disable=broad-except
      line = _unknown_override(flags.FLAGS, args)
      print(f"error: {line or flag_error_line(e)}", file=sys.stderr, flush=True)
      sys.exit(errors.EXIT_BAD_INPUT)

  def run_main(args: list[str]) -> None:
    code = call_main(main, args)
    if code:
      sys.exit(int(code))

  app.run(run_main, argv=list(sys.argv if argv is None else argv), flags_parser=parse)
