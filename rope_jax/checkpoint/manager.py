"""Checkpointing: the one module of rope_jax that talks to Orbax.

Everything that writes or reads a checkpoint goes through :class:`Checkpointer` (the trainer, the
run directory, the Gemma importer; foreign Orbax trees through :func:`open_tree`), so a move from
the Orbax v0 API (``ocp.CheckpointManager`` + ``ocp.args``) to v1 stays local to this file.

Layout of a checkpoint directory (written by Orbax)::

  <directory>/
    <step>/                        one committed checkpoint per saved step
      state/                       the arrays (``ocp.args.StandardSave``, OCDBT/zarr)
      data_state/metadata          input-pipeline position (JSON)
      metadata/metadata            e.g. the run config (JSON)
      checksums/metadata           per-array fingerprints (``fingerprint.py``, JSON)
    <step>.orbax-checkpoint-tmp-*  a save in progress (or killed mid-way): ignored
    <step>.corrupt-<time>          a damaged checkpoint set aside by ``save`` (see below)

Guarantees (each one has a test in tests/test_checkpoint.py or tests/test_checkpoint_faults.py):

* Atomic commit. Orbax writes a step into a temporary directory and renames it when every
  process has finished (on GCS it writes ``commit_success.txt`` instead). Uncommitted directories
  are never listed, restored or counted.
* Corruption is detected at restore time: damaged files make Orbax/TensorStore raise, and damage
  that reads back without an error is caught by the save-time fingerprints (``verify=False``
  skips them). ``restore(step=None)`` logs a warning naming the step and the reason and falls
  back to the next older checkpoint; it deletes nothing. ``restore(step=N)`` raises
  :class:`CorruptCheckpointError`; when no step can be restored, ``NoCheckpointError``.
* A restore target whose tree, shapes or dtypes differ from what is on disk is a different run,
  not damage: ``IncompatibleRunError`` naming the directory, the step and the differences.
* ``max_to_keep`` counts restorable checkpoints only: a step found damaged neither uses up a slot
  nor is ever deleted, and the newest good step stays until a newer save has committed.
* When the trainer falls back to step N and later reaches a step S whose checkpoint is known to
  be damaged, ``save(S)`` renames the damaged directory to ``<S>.corrupt-<time>`` (kept for
  inspection, never deleted) and writes a fresh one.
* Entries rope_jax did not write (a file or a dangling symlink named like a step, a directory
  without a checkpoint in it, anything else) are left alone: named in a warning, never read,
  counted, moved or deleted. A save whose step name such an entry occupies is skipped with a
  warning instead of failing or replacing it.
* Restores go through abstract targets (``jax.ShapeDtypeStruct`` with the wanted sharding), so a
  checkpoint written on a pod mesh restores onto one CPU device and vice versa.

Multi-process (pods): every process must call ``save``, ``restore``, ``wait`` and ``close`` at the
same points with the same arguments (Orbax synchronises processes inside them). The fallback
decision in ``restore`` is agreed across processes.

Typical use in a training loop::

  ckpt = manager.Checkpointer(directory, save_interval_steps=1000, max_to_keep=3)
  step = 0
  if ckpt.latest_step() is not None:
    step, state, data_state, _ = ckpt.restore(abstract_state)
  for step in range(step, total_steps):
    state = train_step(state, batch)
    ckpt.save(step + 1, state, data_state=pipeline.state(), metadata=cfg)
  ckpt.close()   # waits for the last async save; always call it before exiting
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import logging as std_logging
import time
from typing import Any

from absl import logging
from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

from rope_jax import errors
from rope_jax.checkpoint import fingerprint
from rope_jax.checkpoint import layout

PyTree = Any

__all__ = ["Checkpointer", "CorruptCheckpointError", "restore_metadata", "open_tree"]

_STATE, _DATA_STATE, _METADATA, _CHECKSUMS = (layout.STATE, layout.DATA_STATE, layout.METADATA,
                                             layout.CHECKSUMS)


class CorruptCheckpointError(errors.RopeJaxError, RuntimeError):
  """A committed checkpoint step could not be read back or failed verification."""

  exit_code = errors.EXIT_NO_CHECKPOINT


class _DropReadOnlyNotice(std_logging.Filter):
  """Orbax says "Given directory is read only" for every reader: our read-only is a promise
  not to write, not a property of the directory, so the notice is always false here."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Given directory is read only")


class _KeepRestorable:
  """Orbax preservation policy: ``max_to_keep`` counted over restorable steps.

  Steps known to be damaged, and step-named entries rope_jax did not write, are always preserved
  and do not count; of the other steps the ``max_to_keep`` highest are preserved; the newest step
  known to be good (restored from, saved, or the save in flight) is always preserved.
  """

  def __init__(self, checkpointer: Checkpointer, max_to_keep: int | None):
    self._checkpointer = checkpointer
    self._max_to_keep = max_to_keep

  def should_preserve(self, checkpoints: Sequence[Any], *, context: Any = None) -> list[bool]:
    del context
    steps = [info.step for info in checkpoints]
    ckpt = self._checkpointer
    untouchable = ckpt._corrupt | ckpt._listing.foreign_steps  # pylint: disable=protected-access
    good = ckpt._known_good()  # pylint: disable=protected-access
    candidates = sorted(s for s in steps if s not in untouchable)
    keep = set(candidates if self._max_to_keep is None else candidates[-self._max_to_keep:])
    good_present = [s for s in candidates if s in good]
    if good_present:
      keep.add(max(good_present))
    keep.update(s for s in steps if s in untouchable)
    return [s in keep for s in steps]

  def __repr__(self) -> str:
    return f"_KeepRestorable(max_to_keep={self._max_to_keep})"


def _open_manager(directory: epath.Path, *, read_only: bool, async_save: bool = False,
                  preservation_policy: Any = None) -> ocp.CheckpointManager:
  layout.contain_event_loop_noise()
  options = ocp.CheckpointManagerOptions(
      # `Checkpointer.save` makes the save decision and always passes force=True.
      save_interval_steps=0 if read_only else 1,
      preservation_policy=None if read_only else preservation_policy,
      create=not read_only,
      read_only=read_only,
      enable_async_checkpointing=async_save and not read_only,
      # Half-written temporary directories are left alone (Orbax ignores them).
      cleanup_tmp_directories=False,
  )
  notice = _DropReadOnlyNotice()
  absl_logger = std_logging.getLogger("absl")
  absl_logger.addFilter(notice)
  try:
    return ocp.CheckpointManager(directory, options=options)
  finally:
    absl_logger.removeFilter(notice)


def _differences(target: PyTree, step_dir: epath.Path, partial: bool) -> list[str]:
  """How the restore target differs from the arrays saved in ``step_dir`` (tree, shapes,
  dtypes); [] when it matches. Raises (damage) when the saved tree cannot be read."""
  handler = ocp.PyTreeCheckpointHandler()
  try:
    saved_tree = handler.metadata(step_dir / _STATE)
  finally:
    handler.close()
  saved = layout.leaf_specs(getattr(saved_tree, "tree", saved_tree))
  wanted = layout.leaf_specs(target)
  out = []
  missing = [k for k in wanted if k not in saved]
  extra = [] if partial else [k for k in saved if k not in wanted]
  for what, keys in (("not on disk", missing), ("on disk, not in the target", extra)):
    if keys:
      out.append(f"{len(keys)} array(s) {what}: " + ", ".join(keys[:4])
                 + (" ..." if len(keys) > 4 else ""))
  for k in wanted:
    if k in saved and saved[k] != wanted[k]:
      out.append(f"{k}: saved {saved[k][1]}{list(saved[k][0])}, wanted "
                 f"{wanted[k][1]}{list(wanted[k][0])}")
  return out[:8]


def _first_restorable(directory: epath.Path, steps: list[int], step: int | None,
                      attempt: Callable[[int], Any], *, what: str, agree: bool,
                      ) -> tuple[int, Any, list[int]]:
  """The one restore loop: ``attempt(step)``, or with ``step=None`` each committed step newest
  first until one succeeds. Returns ``(step, result, damaged newer steps)``.

  Raises:
    IncompatibleRunError: from ``attempt`` (never a reason to fall back).
    CorruptCheckpointError: ``step`` was given and cannot be read.
    NoCheckpointError: no step can be read (the message gives each step's reason).
  """
  candidates = [step] if step is not None else list(reversed(steps))
  failures: list[tuple[int, str]] = []
  for candidate in candidates:
    error = None
    try:
      result = attempt(candidate)
    except errors.IncompatibleRunError:
      raise
    except Exception as e:  # pylint: disable=broad-exception-caught
      error = e
    ok = layout.all_processes_agree(error is None) if agree else error is None
    if ok:
      if failures:
        logging.warning("Using checkpoint step %d from %s instead of the latest step %d: newer "
                        "step(s) %s are damaged (kept on disk, not deleted).", candidate,
                        directory, steps[-1], [s for s, _ in failures])
      return candidate, result, [s for s, _ in failures]
    reason = layout.describe(error) if error is not None else "failed on another process"
    if step is not None:
      raise CorruptCheckpointError(f"Cannot restore checkpoint step {step} from {directory}: "
                                   f"{reason}. Available steps: {steps}.") from error
    failures.append((candidate, reason))
    logging.warning("Checkpoint step %d in %s cannot be %s (%s); falling back to the previous "
                    "checkpoint. Nothing is deleted.", candidate, directory, what, reason)
  details = "; ".join(f"step {s}: {r}" for s, r in failures)
  raise errors.NoCheckpointError(f"No checkpoint in {directory} can be {what} (tried steps "
                                 f"{[s for s, _ in failures]}): {details}")


def _no_step_error(directory: epath.Path, steps: list[int], step: int | None,
                   listing: layout.Listing) -> errors.NoCheckpointError | None:
  if not steps:
    note = (f" ({len(listing.tmp)} uncommitted, ignored: {', '.join(listing.tmp)})"
            if listing.tmp else "")
    return errors.NoCheckpointError(f"No committed checkpoint in {directory}{note}.")
  if step is not None and step not in steps:
    return errors.NoCheckpointError(
        f"No checkpoint for step {step} in {directory}; available steps: {steps}.")
  return None


# -------------------------------------------------------------------------------- Checkpointer


class Checkpointer:
  """Saves and restores checkpoints (state, data position, metadata) in one directory.

  Not thread-safe; one instance per training job, created on every process. Use the same
  instance to restore and to save: what ``restore`` learns about damaged checkpoints is what
  makes ``save`` and garbage collection safe.
  """

  def __init__(self, directory: str | epath.PathLike, *, save_interval_steps: int,
               max_to_keep: int | None, async_save: bool = True, read_only: bool = False):
    """Opens (and unless ``read_only``, creates) a checkpoint directory.

    Args:
      directory: local path or ``gs://...``.
      save_interval_steps: ``save(step, ...)`` writes when ``step % interval == 0`` (0: only
        forced and preemption saves).
      max_to_keep: how many restorable checkpoints to keep (None: all).
      async_save: write in a background thread; ``save`` returns once the arrays are copied to
        host memory. Call ``wait()``/``close()`` before exiting.
      read_only: never write or delete; for analysis (see :meth:`for_reading`).

    Raises:
      ValueError: bad arguments, or the directory cannot be created/written.
      FileNotFoundError: ``read_only`` and the directory does not exist.
    """
    if save_interval_steps < 0:
      raise ValueError(f"save_interval_steps must be >= 0, got {save_interval_steps}")
    if max_to_keep is not None and max_to_keep < 1:
      raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep}")
    self._directory = layout.as_path(directory)
    self._interval = int(save_interval_steps)
    self._max_to_keep = max_to_keep
    self._async = bool(async_save)
    self._read_only = bool(read_only)
    self._good: set[int] = set()  # restored from, or saved and finished
    self._corrupt: set[int] = set()  # failed to restore, newer than a good one
    self._in_flight: int | None = None  # issued, not yet known to be finished
    self._closed = False
    if self._read_only:
      if not self._directory.is_dir():
        raise FileNotFoundError(f"Checkpoint directory {self._directory} does not exist.")
    else:
      layout.ensure_writable(self._directory)
    self._listing = layout.list_entries(self._directory, ocp.step.TMP_DIR_SUFFIX)
    self._manager = _open_manager(self._directory, read_only=self._read_only,
                                  async_save=self._async,
                                  preservation_policy=_KeepRestorable(self, max_to_keep))
    if self._listing.tmp:
      logging.warning("Checkpoint directory %s holds %d uncommitted (half-written) "
                      "checkpoint(s), ignored: %s", self._directory, len(self._listing.tmp),
                      ", ".join(self._listing.tmp))
    layout.warn_foreign(self._directory, self._listing)

  @classmethod
  def for_reading(cls, directory: str | epath.PathLike) -> Checkpointer:
    """A read-only Checkpointer (analysis, evaluation): never writes or deletes."""
    return cls(directory, save_interval_steps=0, max_to_keep=None, async_save=False,
               read_only=True)

  @property
  def directory(self) -> epath.Path:
    return self._directory

  # -- Queries ----------------------------------------------------------------------------------

  def all_steps(self) -> list[int]:
    """Committed steps rope_jax wrote, ascending (not yet verified: see ``restore``)."""
    return sorted(int(s) for s in self._manager.all_steps()
                  if int(s) not in self._listing.foreign_steps)

  def latest_step(self) -> int | None:
    """Newest committed step, or None. It may still turn out damaged."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def reached_preemption(self, step: int) -> bool:
    """True when all processes reached JAX's preemption sync point at ``step``.

    Multi-process only (``jax.distributed.initialize()`` with the preemption service); always
    False on one process. Every process must call it at every step. ``save`` already saves at
    that step. See ``rope_jax.training.preemption`` for the single-process SIGTERM flag.
    """
    return bool(self._manager.reached_preemption(step))

  def _known_good(self) -> set[int]:
    good = set(self._good)
    if self._in_flight is not None:
      good.add(self._in_flight)  # Orbax deletes old steps only once this save has committed.
    return good

  def _step_path(self, step: int) -> epath.Path:
    return self._directory / str(step)

  def _reload(self) -> None:
    self._manager.reload()
    listing = layout.list_entries(self._directory, ocp.step.TMP_DIR_SUFFIX)
    if set(listing.foreign) - set(self._listing.foreign):
      layout.warn_foreign(self._directory, listing)
    self._listing = listing

  # -- Saving -----------------------------------------------------------------------------------

  def _finish_pending(self) -> None:
    """Blocks until the in-flight save (if any) has committed; raises if it failed."""
    step, self._in_flight = self._in_flight, None
    try:
      self._manager.wait_until_finished()
    except Exception:
      if step is not None:
        logging.error("Asynchronous checkpoint save of step %d to %s failed; it was not "
                      "committed and no older checkpoint was deleted.", step, self._directory)
      raise
    if step is not None:
      self._good.add(step)

  def _set_aside(self, step: int) -> None:
    """Renames a known-damaged step directory out of the way (never deletes)."""
    src = self._step_path(step)
    dst = src.parent / f"{src.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
    if jax.process_index() == 0:
      src.rename(dst)
    layout.sync(f"rope_jax_checkpoint_set_aside_{step}")
    self._reload()
    self._corrupt.discard(step)
    logging.warning("Checkpoint step %d in %s was damaged; moved it to %s (kept for inspection) "
                    "and saving a fresh step %d.", step, self._directory, dst.name, step)

  def _occupied_by_foreign(self, step: int) -> bool:
    """Whether an entry rope_jax did not write holds the name of ``step``."""
    path = self._step_path(step)
    present = layout.is_symlink(path) or path.exists()
    return present and not layout.is_ours(path)

  def save(self, step: int, state: PyTree, *, data_state: Any = None, metadata: Any = None,
           force: bool = False) -> bool:
    """Saves a checkpoint if ``step % save_interval_steps == 0``, ``force``, or preemption.

    Call on every process with the same arguments. With ``async_save`` it returns once the
    arrays are copied off the device; the previous save is finished first. Saving a step that
    already has a (not known-damaged) checkpoint is a no-op that returns False, and so is a step
    whose name an entry rope_jax did not write occupies (left alone, with a warning).

    Args:
      step: the training step (the number of updates applied to ``state``).
      state: a pytree of ``jax.Array``s (any sharding; global arrays on pods), numpy arrays or
        scalars.
      data_state: the input-pipeline position, JSON-serialisable.
      metadata: e.g. the config as a dict, JSON-serialisable (tuples come back as lists,
        non-string dict keys as strings).
      force: save regardless of the interval.

    Returns:
      Whether a save was started.
    """
    if self._read_only:
      raise ValueError(f"Checkpointer for {self._directory} is read-only.")
    if self._closed:
      raise ValueError("Checkpointer.save called after close().")
    step = int(step)
    if step < 0:
      raise ValueError(f"step must be >= 0, got {step}")
    periodic = self._interval > 0 and step % self._interval == 0
    if not (force or periodic or self.reached_preemption(step)):
      return False
    layout.check_json("data_state", data_state)
    layout.check_json("metadata", metadata)
    layout.check_global_arrays(state)
    # Orbax would wait for the previous save inside `save` too; doing it here surfaces its
    # failure and lets the policy count it as good.
    self._finish_pending()
    foreign = layout.all_processes_agree(not self._occupied_by_foreign(step)) is False
    if foreign:
      logging.warning("Not saving checkpoint step %d: %s is an entry rope_jax did not write "
                      "(left alone). Move it away to checkpoint this step.", step,
                      self._step_path(step))
      return False
    if step in self.all_steps():
      if step not in self._corrupt:
        logging.info("Checkpoint for step %d already exists in %s; not saving again.", step,
                     self._directory)
        return False
      self._set_aside(step)
    args = ocp.args.Composite(**{
        _STATE: ocp.args.StandardSave(state),
        _DATA_STATE: ocp.args.JsonSave(data_state),
        _METADATA: ocp.args.JsonSave(metadata),
        _CHECKSUMS: ocp.args.JsonSave(fingerprint.record(state)),
    })
    self._in_flight = step
    try:
      saved = self._manager.save(step, args=args, force=True)
    except Exception:
      self._in_flight = None
      raise
    if not saved:
      self._in_flight = None
      return False
    if not self._async:
      self._finish_pending()
    return True

  def wait(self) -> None:
    """Blocks until asynchronous saves have committed; raises if one failed."""
    self._finish_pending()

  def close(self) -> None:
    """Waits for pending saves and releases resources. Idempotent."""
    if self._closed:
      return
    try:
      self._finish_pending()
    finally:
      self._closed = True
      self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()

  # -- Restoring --------------------------------------------------------------------------------

  def _restore_step(self, step: int, abstract_state: PyTree, verify: bool, partial: bool,
                    ) -> tuple[int, PyTree, Any, Any]:
    differences = _differences(abstract_state, self._step_path(step), partial)
    if differences:
      raise errors.IncompatibleRunError(
          f"Checkpoint step {step} in {self._directory} holds a run whose arrays differ from the "
          f"ones asked for (a different model or optimizer config?): {'; '.join(differences)}. "
          f"Available steps: {self.all_steps()}. Use another workdir, or the run's own config.")
    if partial:
      # Only the leaves named in `abstract_state` are read; the rest of the saved tree (e.g. the
      # optimizer state) is skipped, never loaded.
      state_args = ocp.args.PyTreeRestore(
          item=abstract_state,
          restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state),
          partial_restore=True)
    else:
      state_args = ocp.args.StandardRestore(abstract_state)
    restored = self._manager.restore(step, args=ocp.args.Composite(**{
        _STATE: state_args,
        _DATA_STATE: ocp.args.JsonRestore(),
        _METADATA: ocp.args.JsonRestore(),
        _CHECKSUMS: ocp.args.JsonRestore(),
    }))
    state = restored[_STATE]
    if verify and (problem := fingerprint.mismatch(state, restored[_CHECKSUMS], step)):
      raise CorruptCheckpointError(f"step {step}: {problem}")
    return step, state, restored[_DATA_STATE], restored[_METADATA]

  def restore(self, abstract_state: PyTree, step: int | None = None, *, verify: bool = True,
              partial: bool = False) -> tuple[int, PyTree, Any, Any]:
    """Restores a checkpoint onto the shardings given by ``abstract_state``.

    Args:
      abstract_state: pytree of ``jax.ShapeDtypeStruct(shape, dtype, sharding=...)`` with the
        structure, shapes and dtypes of the saved state.
      step: the step to restore; None restores the newest step that reads back intact, warning
        about (and keeping) every newer damaged one.
      verify: compare the restored arrays with their save-time fingerprints.
      partial: ``abstract_state`` is a subtree of the saved state (e.g. ``{"params": ...}`` of a
        train state): only its leaves are read. See :meth:`restore_params`.

    Returns:
      ``(step, state, data_state, metadata)``.

    Raises:
      NoCheckpointError: no committed checkpoint, ``step`` does not exist, or no checkpoint can be
        restored (the message names the directory and each step's reason).
      CorruptCheckpointError: ``step`` was given and cannot be restored.
      IncompatibleRunError: the saved tree, shapes or dtypes differ from ``abstract_state``.
    """
    if not self._read_only and not self._closed:
      self._finish_pending()
    self._reload()
    steps = self.all_steps()
    step = None if step is None else int(step)
    if error := _no_step_error(self._directory, steps, step, self._listing):
      raise error
    found, result, damaged = _first_restorable(
        self._directory, steps, step,
        lambda s: self._restore_step(s, abstract_state, verify, partial),
        what="restored", agree=True)
    self._corrupt.update(damaged)
    self._good.add(found)
    return result

  def restore_params(self, abstract_params: PyTree, step: int | None = None, *,
                     key: str = "params", verify: bool = True) -> tuple[int, PyTree, Any]:
    """Restores only ``state[key]`` of a checkpoint: the model without its optimizer.

    For analysis and evaluation: a train state ``{"params", "opt_state", "step"}`` holds about
    3x the parameters' bytes, and only the parameters are read here. Works the same on
    params-only checkpoints (imported weights). Fallback, verification and errors as in
    :meth:`restore`.

    Returns:
      ``(step, params, metadata)``.
    """
    step, state, _, metadata = self.restore({key: abstract_params}, step, verify=verify,
                                            partial=True)
    return step, state[key], metadata


def restore_metadata(directory: str | epath.PathLike, step: int | None = None) -> dict[str, Any]:
  """Reads the JSON ``metadata`` (e.g. the config) of a checkpoint, no arrays.

  Args:
    directory: the checkpoint directory (local or gs://).
    step: the step; None reads the newest step whose metadata is readable, warning about any
      newer unreadable one.

  Returns:
    The metadata dict saved with that step ({} if None was saved).

  Raises:
    FileNotFoundError: no such directory. NoCheckpointError: no committed checkpoint, no such
      step, or no readable metadata. CorruptCheckpointError: ``step``'s metadata is unreadable.
  """
  path = layout.as_path(directory)
  if not path.is_dir():
    raise FileNotFoundError(f"Checkpoint directory {path} does not exist.")
  listing = layout.list_entries(path, ocp.step.TMP_DIR_SUFFIX)
  manager = _open_manager(path, read_only=True)
  try:
    steps = sorted(int(s) for s in manager.all_steps() if int(s) not in listing.foreign_steps)
    step = None if step is None else int(step)
    if error := _no_step_error(path, steps, step, listing):
      raise error

    def read(candidate: int) -> Any:
      return manager.restore(candidate, args=ocp.args.Composite(
          **{_METADATA: ocp.args.JsonRestore()}))[_METADATA]

    _, value, _ = _first_restorable(path, steps, step, read, what="read",
                                    agree=False)
    return {} if value is None else value
  finally:
    manager.close()


# ------------------------------------------------------------------------ foreign Orbax trees


class TreeReader:
  """The array leaves of an Orbax PyTree checkpoint rope_jax did not write (e.g. the gemma
  library's params), listed from its metadata and read one leaf at a time as numpy arrays."""

  def __init__(self, path: str | epath.PathLike):
    self.path = layout.as_path(path)
    self._checkpointer = ocp.PyTreeCheckpointer()
    meta = self._checkpointer.metadata(self.path)
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    self.leaves: dict[tuple[str, ...], jax.ShapeDtypeStruct] = {}

    def walk(node: Any, keys: tuple[str, ...]) -> None:
      if isinstance(node, Mapping):
        for k, v in node.items():
          walk(v, keys + (str(k),))
      elif hasattr(node, "shape") and hasattr(node, "dtype"):
        self.leaves[keys] = jax.ShapeDtypeStruct(tuple(node.shape), np.dtype(node.dtype))

    walk(tree, ())

  def read(self, keys: tuple[str, ...]) -> np.ndarray:
    """The leaf at the nested dict path ``keys`` (``partial_restore``: nothing else is read)."""
    spec = self.leaves[keys]

    def nest(leaf: Any) -> dict[str, Any]:
      for k in reversed(keys):
        leaf = {k: leaf}
      return leaf

    out = self._checkpointer.restore(self.path, args=ocp.args.PyTreeRestore(
        item=nest(spec), restore_args=nest(ocp.RestoreArgs(restore_type=np.ndarray)),
        partial_restore=True))
    for k in keys:
      out = out[k]
    return np.asarray(out)


def open_tree(path: str | epath.PathLike) -> TreeReader:
  """A :class:`TreeReader` over the Orbax PyTree checkpoint at ``path``."""
  return TreeReader(path)
