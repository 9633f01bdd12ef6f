"""What a checkpoint directory holds and who wrote it; small helpers of ``manager.py``.

No Orbax here: ``manager.py`` is the only module that talks to it (it passes Orbax's temporary
directory suffix in). Layer 2.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from typing import Any
import uuid

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np

# Names of the Composite items in each step directory.
STATE = "state"
DATA_STATE = "data_state"
METADATA = "metadata"
CHECKSUMS = "checksums"
# What makes a step directory one that rope_jax (through Orbax) wrote.
_OURS = ("_CHECKPOINT_METADATA", STATE, DATA_STATE, METADATA, CHECKSUMS, "commit_success.txt")
_SET_ASIDE = re.compile(r"^\d+\.corrupt-\d{8}T\d{6}$")
_WRITE_PROBE = ".write_probe."


def as_path(directory: str | epath.PathLike) -> epath.Path:
  """An ``epath.Path``; local paths are made absolute (Orbax needs that)."""
  path = epath.Path(directory)
  if "://" not in str(directory):
    path = path.expanduser().resolve()
  return path


def is_symlink(path: epath.Path) -> bool:
  """Whether a local ``path`` is a symbolic link (dangling or not); False on object stores."""
  return is_local(path) and os.path.islink(os.fspath(path))


def is_local(path: epath.Path) -> bool:
  return "://" not in str(path)


@dataclasses.dataclass(frozen=True)
class Listing:
  """What a checkpoint directory holds, by who wrote it."""

  steps: frozenset[int]  # step directories written by rope_jax (committed or not)
  tmp: tuple[str, ...]  # uncommitted (half-written) step directories
  foreign: tuple[str, ...]  # entries rope_jax did not write
  foreign_steps: frozenset[int]  # ... of them, those named like a step


def is_ours(path: epath.Path) -> bool:
  if is_symlink(path):
    return False
  try:
    return path.is_dir() and any((path / name).exists() for name in _OURS)
  except OSError:
    return False


def list_entries(directory: epath.Path, tmp_suffix: str) -> Listing:
  """Classifies the entries of a checkpoint directory (``tmp_suffix``: Orbax's suffix of
  uncommitted step directories)."""
  steps, tmp, foreign, foreign_steps = set(), [], [], set()
  try:
    entries = sorted(directory.iterdir(), key=lambda p: p.name)
  except OSError:
    entries = []
  for path in entries:
    name = path.name
    if tmp_suffix in name:
      tmp.append(name)
    elif _WRITE_PROBE in name or (_SET_ASIDE.match(name) and path.is_dir()):
      continue
    elif name.isdigit() and is_ours(path):
      steps.add(int(name))
    else:
      foreign.append(name)
      if name.isdigit():
        foreign_steps.add(int(name))
  return Listing(frozenset(steps), tuple(tmp), tuple(foreign), frozenset(foreign_steps))


def warn_foreign(directory: epath.Path, listing: Listing) -> None:
  if listing.foreign:
    logging.warning("Checkpoint directory %s holds %d entr%s rope_jax did not write, left alone "
                    "(never read, moved or deleted): %s", directory, len(listing.foreign),
                    "y" if len(listing.foreign) == 1 else "ies", ", ".join(listing.foreign))


def ensure_writable(directory: epath.Path) -> None:
  """Creates ``directory`` and checks that this process can write into it."""
  probe = directory / f"{_WRITE_PROBE}{jax.process_index()}.{uuid.uuid4().hex}"
  try:
    directory.mkdir(parents=True, exist_ok=True)
    probe.write_text("ok")
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-exception-caught
    raise ValueError(f"Checkpoint directory {directory} cannot be created or written: "
                     f"{type(e).__name__}: {e}") from e


# ------------------------------------------------------------------------------------- noise


_EVENT_LOOP_NOISE = {"installed": False, "dropped": 0}


def contain_event_loop_noise() -> None:
  """After a failed TensorStore read, pending callbacks land on the event loop Orbax already
  closed; Python prints each as an unraisable ``RuntimeError: Event loop is closed`` traceback
  (dozens per failed restore). The failure itself is reported by :class:`Checkpointer`; these
  are dropped, with one warning the first time. Every other unraisable error passes through."""
  if _EVENT_LOOP_NOISE["installed"]:
    return
  previous = sys.unraisablehook

  def hook(unraisable: Any) -> None:
    value = unraisable.exc_value
    if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
      _EVENT_LOOP_NOISE["dropped"] += 1
      if _EVENT_LOOP_NOISE["dropped"] == 1:
        logging.warning("Dropping asyncio 'Event loop is closed' reports of TensorStore reads "
                        "still pending after a failed checkpoint read (harmless; the failure "
                        "itself is reported above).")
      return
    previous(unraisable)

  sys.unraisablehook = hook
  _EVENT_LOOP_NOISE["installed"] = True


def all_processes_agree(ok: bool) -> bool:
  """True iff ``ok`` on every process (a collective when multi-process)."""
  if jax.process_count() == 1:
    return ok
  flags = multihost_utils.process_allgather(np.asarray([int(ok)], np.int32))
  return bool(np.all(np.asarray(flags)))


def sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def check_json(name: str, value: Any) -> None:
  try:
    json.dumps(value, allow_nan=True)
  except (TypeError, ValueError) as e:
    raise ValueError(f"Checkpointer.save: {name} must be JSON-serialisable (dicts, lists, str, "
                     f"int, float, bool, None): {e}") from e


def check_global_arrays(state: Any) -> None:
  """On multi-process runs every jax.Array leaf must be a global array."""
  if jax.process_count() == 1:
    return
  local = [fingerprint.path_str(path)
           for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]
           if isinstance(leaf, jax.Array) and leaf.is_fully_addressable]
  if local:
    raise ValueError(
        "Checkpointer.save on a multi-process run needs global jax.Arrays; these leaves live on "
        f"this process only: {', '.join(local[:5])}. Put them on the mesh, e.g. "
        "jax.device_put(x, NamedSharding(mesh, P())) for a replicated step counter.")


def describe(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  first = text[0] if text else ""
  if len(first) > 300:
    first = first[:300] + "..."
  return f"{type(e).__name__}: {first}"


def leaf_specs(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  """``{"a/b/0": (shape, dtype)}`` of every leaf with a shape, keyed by its plain tree path."""
  def name(path: tuple[Any, ...]) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
                    for k in path)
  return {name(path): (tuple(leaf.shape), str(np.dtype(leaf.dtype)))
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
          if hasattr(leaf, "shape") and hasattr(leaf, "dtype")}
