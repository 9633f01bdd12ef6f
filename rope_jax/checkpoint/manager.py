"""Checkpointing: the one module of rope_jax that talks to Orbax.

Everything that writes or reads a training checkpoint goes through `Checkpointer`
(the trainer, the analysis CLI, the Gemma-weights importer), so a move from the
Orbax v0 API (`ocp.CheckpointManager` + `ocp.args`) to the v1 API stays local to
this file.

Layout of a checkpoint directory (written by Orbax)::

  <directory>/
    <step>/                        one committed checkpoint per saved step
      state/                       the arrays (`ocp.args.StandardSave`, OCDBT/zarr)
      data_state/metadata          input-pipeline position (JSON)
      metadata/metadata            e.g. the run config (JSON)
      checksums/metadata           per-array fingerprints written by this module (JSON)
    <step>.orbax-checkpoint-tmp-*  a save in progress (or killed mid-way): ignored
    <step>.corrupt-<time>          a damaged checkpoint set aside by `save` (see below)

Guarantees (each one has a test in tests/test_checkpoint.py):

* Atomic commit. Orbax writes a step into a temporary directory and renames it
  when every process has finished (on GCS it writes `commit_success.txt`
  instead). Uncommitted directories are never listed, restored or counted.
* Corruption is detected at restore time. A committed checkpoint whose files
  were damaged afterwards (truncated or deleted array files, unreadable JSON,
  a missing item) makes Orbax/TensorStore raise. Damage that TensorStore reads
  back without an error is caught too: OCDBT checksums its b-tree nodes, but
  not the data files holding larger chunks, so bytes overwritten in place there
  silently decode to other values. Save therefore records two 32-bit
  position-weighted fingerprints of every array (integer arithmetic on device,
  independent of backend and sharding), and restore recomputes and compares
  them (`verify=False` skips this). `restore(step=None)` then logs a warning
  naming the step and the reason and falls back to the next older checkpoint;
  it deletes nothing. `restore(step=N)` raises instead.
* `max_to_keep` counts restorable checkpoints only. A checkpoint found damaged
  by `restore` neither uses up a slot nor is ever deleted by garbage
  collection, so damaged newer checkpoints can never push the last good one out
  of the window. Orbax deletes old steps only after the newer save has
  committed, so a failed or killed save never costs an older checkpoint: the
  step restored from stays until a newer save has committed.
* When the trainer falls back to step N and later reaches a step S whose
  checkpoint is known to be damaged, `save(S)` renames the damaged directory to
  `<S>.corrupt-<time>` (kept for inspection, never deleted) and writes a fresh
  one.
* Restores go through abstract targets (`jax.ShapeDtypeStruct` with the wanted
  `NamedSharding`), so a checkpoint written on a pod mesh restores onto one CPU
  device and vice versa; fingerprints are of the global values, independent of
  sharding.

Multi-process (pods): every process must call `save`, `restore`, `wait` and
`close` at the same points with the same arguments (Orbax synchronises
processes inside them). The fallback decision in `restore` is agreed across
processes. A read error that only some processes see can still make the others
wait at an Orbax barrier until the coordination timeout.

Typical use in a training loop::

  ckpt = checkpoint.Checkpointer(workdir, save_interval_steps=1000, max_to_keep=3)
  step = 0
  if ckpt.latest_step() is not None:
    step, state, data_state, _ = ckpt.restore(abstract_state)
  with preemption.PreemptionGuard() as guard:
    for step in range(step, total_steps):
      state = train_step(state, batch)
      ckpt.save(step + 1, state, data_state=pipeline.state(), metadata=cfg)
      if guard.preempted(step + 1):
        ckpt.save(step + 1, state, data_state=..., metadata=cfg, force=True)
        break
  ckpt.close()   # waits for the last async save; always call it before exiting
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import json
import time
from typing import Any
import uuid

from absl import logging
from etils import epath
import jax
from jax import lax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any

__all__ = [
    "Checkpointer",
    "CorruptCheckpointError",
    "restore_metadata",
]

# Names of the Composite items in each step directory.
_STATE = "state"
_DATA_STATE = "data_state"
_METADATA = "metadata"
_CHECKSUMS = "checksums"
_CHECKSUM_FORMAT = 1


class CorruptCheckpointError(RuntimeError):
  """A committed checkpoint could not be read back or failed verification."""


# ----------------------------------------------------------------------------
# Paths
# ----------------------------------------------------------------------------


def _as_path(directory: str | epath.PathLike) -> epath.Path:
  """Returns an `epath.Path`; local paths are made absolute (Orbax needs that)."""
  text = str(directory)
  path = epath.Path(directory)
  if "://" not in text:
    path = path.expanduser().resolve()
  return path


def _tmp_dirs(directory: epath.Path) -> list[str]:
  """Names of uncommitted (half-written) step directories, for messages."""
  try:
    return sorted(
        p.name for p in directory.iterdir() if ocp.step.TMP_DIR_SUFFIX in p.name
    )
  except OSError:
    return []


def _ensure_writable(directory: epath.Path) -> None:
  """Creates `directory` and checks that this process can write into it."""
  probe = directory / f".write_probe.{jax.process_index()}.{uuid.uuid4().hex}"
  try:
    directory.mkdir(parents=True, exist_ok=True)
    probe.write_text("ok")
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-exception-caught
    raise ValueError(
        f"Checkpoint directory {directory} cannot be created or written:"
        f" {type(e).__name__}: {e}"
    ) from e


# ----------------------------------------------------------------------------
# Fingerprints (cheap on-device checksums of the global array values)
# ----------------------------------------------------------------------------

_UNSIGNED_BY_BITS = {
    2: getattr(jnp, "uint2", None),
    4: getattr(jnp, "uint4", None),
    8: jnp.uint8,
    16: jnp.uint16,
    32: jnp.uint32,
}


def _bits(dtype: Any) -> int | None:
  if jnp.issubdtype(dtype, jnp.integer):
    return jnp.iinfo(dtype).bits
  if jnp.issubdtype(dtype, jnp.floating):
    return jnp.finfo(dtype).bits
  return None


def _fingerprintable(dtype: Any) -> bool:
  """Whether `_as_uint32` can map this dtype bit-exactly onto uint32 words."""
  if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    return True
  if dtype == jnp.bool_:
    return True
  if jnp.issubdtype(dtype, jnp.complexfloating):
    return _fingerprintable(jnp.finfo(dtype).dtype)
  bits = _bits(dtype)
  return bits == 64 or _UNSIGNED_BY_BITS.get(bits) is not None


def _as_uint32(x: jax.Array) -> jax.Array:
  """Bit-exact view of `x` as uint32 words (64-bit values become 2 words)."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  if jnp.issubdtype(x.dtype, jnp.complexfloating):
    return jnp.stack([_as_uint32(jnp.real(x)), _as_uint32(jnp.imag(x))], -1)
  bits = _bits(x.dtype)
  if bits == 64:
    return lax.bitcast_convert_type(x, jnp.uint32)  # trailing dim of 2
  if bits == 32:
    return lax.bitcast_convert_type(x, jnp.uint32)
  return lax.bitcast_convert_type(x, _UNSIGNED_BY_BITS[bits]).astype(jnp.uint32)


def _fingerprint_one(x: jax.Array) -> jax.Array:
  """Two order-sensitive 32-bit hashes of the bits of `x`, shape (2,) uint32.

  Word i with value u_i contributes u_i * w_i (w_i odd, so any single changed
  word changes the first sum) and a mixed (u_i ^ k_i) term to the second. Only
  integer arithmetic (wrapping mod 2**32), so the result is bit-identical on
  every backend and for every sharding and reduction order.
  """
  u = _as_uint32(x)
  idx = jnp.zeros(u.shape, jnp.uint32)
  stride = 1
  for d in reversed(range(u.ndim)):
    idx = idx + lax.broadcasted_iota(jnp.uint32, u.shape, d) * jnp.uint32(
        stride % 2**32
    )
    stride *= u.shape[d]
  w = (idx * jnp.uint32(0x9E3779B1) + jnp.uint32(0x7F4A7C15)) | jnp.uint32(1)
  first = jnp.sum(u * w, dtype=jnp.uint32)
  h = (u ^ (idx * jnp.uint32(0x85EBCA77) + jnp.uint32(0xC2B2AE3D))) * jnp.uint32(
      0x27D4EB2F
  )
  h = h ^ (h >> jnp.uint32(15))
  second = jnp.sum(h, dtype=jnp.uint32)
  return jnp.stack([first, second])


# One call per leaf (compiled once per shape/dtype/sharding): its uint32 temporaries exist for
# one leaf at a time, so fingerprinting a save costs at most the largest leaf, not the state.
_fingerprint_leaf = jax.jit(_fingerprint_one)


def _to_host(x: jax.Array) -> np.ndarray:
  if x.is_fully_addressable or x.is_fully_replicated:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _path_str(path: tuple[Any, ...]) -> str:
  return jax.tree_util.keystr(path)


def _fingerprints(tree: PyTree) -> dict[str, dict[str, Any]]:
  """Fingerprints of every array leaf of `tree`, keyed by tree path.

  Non-array leaves (Python scalars, strings) and exotic dtypes are skipped.
  Each leaf is hashed by its own jitted call (dispatched asynchronously, then gathered).
  """
  items = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if isinstance(leaf, (np.ndarray, np.generic)):
      leaf = jnp.asarray(leaf)
    if not isinstance(leaf, jax.Array) or not _fingerprintable(leaf.dtype):
      continue
    items.append((_path_str(path), leaf, _fingerprint_leaf(leaf)))
  return {
      name: {"dtype": str(leaf.dtype), "shape": list(leaf.shape),
             "fp": [int(v) for v in _to_host(fp)]}
      for name, leaf, fp in items
  }


def _verify_fingerprints(
    tree: PyTree, stored: Mapping[str, Any], step: int
) -> None:
  """Raises CorruptCheckpointError if restored values differ from the saved ones."""
  records = stored.get("leaves", {})
  if stored.get("format") != _CHECKSUM_FORMAT:
    raise CorruptCheckpointError(
        f"step {step}: unknown checksum record format {stored.get('format')!r}"
    )
  current = _fingerprints(tree)
  compared = 0
  bad = []
  for name, rec in current.items():
    saved = records.get(name)
    if saved is None:
      continue
    # A restore may cast (e.g. bf16 -> f32); only like-for-like is comparable.
    if saved.get("dtype") != rec["dtype"] or saved.get("shape") != rec["shape"]:
      continue
    compared += 1
    if saved.get("fp") != rec["fp"]:
      bad.append(name)
  if bad:
    shown = ", ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
    raise CorruptCheckpointError(
        f"step {step}: checksum mismatch in {len(bad)} array(s): {shown}"
    )
  if records and not compared:
    logging.warning(
        "Checkpoint step %d: no array could be checked against its saved"
        " checksum (tree paths or dtypes of the restore target differ from the"
        " saved state).",
        step,
    )


# ----------------------------------------------------------------------------
# Orbax plumbing
# ----------------------------------------------------------------------------


class _KeepRestorable:
  """Orbax preservation policy: `max_to_keep` counted over restorable steps.

  * Steps known to be damaged are always preserved (never deleted by garbage
    collection) and do not count towards `max_to_keep`.
  * Of the other steps, the `max_to_keep` highest are preserved.
  * The newest step known to be good is always preserved: restored from or
    saved by this process, or the save in flight (Orbax applies the deletions
    only after the save that triggered them has committed).
  """

  def __init__(self, checkpointer: Checkpointer, max_to_keep: int | None):
    self._checkpointer = checkpointer
    self._max_to_keep = max_to_keep

  def should_preserve(
      self, checkpoints: Sequence[Any], *, context: Any = None
  ) -> list[bool]:
    del context
    steps = [info.step for info in checkpoints]
    corrupt = self._checkpointer._corrupt  # pylint: disable=protected-access
    good = self._checkpointer._known_good()  # pylint: disable=protected-access
    candidates = sorted(s for s in steps if s not in corrupt)
    if self._max_to_keep is None:
      keep = set(candidates)
    else:
      keep = set(candidates[-self._max_to_keep :])
    good_present = [s for s in candidates if s in good]
    if good_present:
      keep.add(max(good_present))
    keep.update(s for s in steps if s in corrupt)
    return [s in keep for s in steps]

  def __repr__(self) -> str:
    return f"_KeepRestorable(max_to_keep={self._max_to_keep})"


def _open_manager(
    directory: epath.Path,
    *,
    read_only: bool,
    async_save: bool = False,
    preservation_policy: Any = None,
) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      # `Checkpointer.save` makes the save decision and always passes
      # force=True, so Orbax's own interval policy is not consulted.
      save_interval_steps=0 if read_only else 1,
      preservation_policy=None if read_only else preservation_policy,
      create=not read_only,
      read_only=read_only,
      enable_async_checkpointing=async_save and not read_only,
      # Half-written temporary directories are left alone (Orbax ignores
      # them); delete them by hand if disk space matters.
      cleanup_tmp_directories=False,
  )
  return ocp.CheckpointManager(directory, options=options)


def _all_processes_agree(ok: bool) -> bool:
  """True iff `ok` on every process (a collective when multi-process)."""
  if jax.process_count() == 1:
    return ok
  flags = multihost_utils.process_allgather(np.asarray([int(ok)], np.int32))
  return bool(np.all(np.asarray(flags)))


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _check_json(name: str, value: Any) -> None:
  try:
    json.dumps(value, allow_nan=True)
  except (TypeError, ValueError) as e:
    raise ValueError(
        f"Checkpointer.save: {name} must be JSON-serialisable"
        f" (dicts, lists, str, int, float, bool, None): {e}"
    ) from e


def _check_global_arrays(state: PyTree) -> None:
  """On multi-process runs every jax.Array leaf must be a global array."""
  if jax.process_count() == 1:
    return
  local = [
      _path_str(path)
      for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]
      if isinstance(leaf, jax.Array) and leaf.is_fully_addressable
  ]
  if local:
    raise ValueError(
        "Checkpointer.save on a multi-process run needs global jax.Arrays;"
        f" these leaves live on this process only: {', '.join(local[:5])}."
        " Put them on the mesh, e.g. jax.device_put(x, NamedSharding(mesh,"
        " P())) for a replicated step counter."
    )


def _describe(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  first = text[0] if text else ""
  if len(first) > 300:
    first = first[:300] + "..."
  return f"{type(e).__name__}: {first}"


# ----------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------


class Checkpointer:
  """Saves and restores training checkpoints (state, data position, metadata).

  Not thread-safe; one instance per training job, created on every process.
  Use the same instance to restore and to save: what `restore` learns about
  damaged checkpoints is what makes `save` and garbage collection safe.
  """

  def __init__(
      self,
      directory: str | epath.PathLike,
      *,
      save_interval_steps: int,
      max_to_keep: int | None,
      async_save: bool = True,
      read_only: bool = False,
  ):
    """Opens (and unless `read_only`, creates) a checkpoint directory.

    Args:
      directory: local path or `gs://...`.
      save_interval_steps: `save(step, ...)` writes when `step % interval == 0`
        (0: only forced and preemption saves).
      max_to_keep: how many restorable checkpoints to keep (None: all).
      async_save: write in a background thread; `save` returns once the arrays
        are copied to host memory. Call `wait()`/`close()` before exiting.
      read_only: never write or delete; for analysis (see `for_reading`).

    Raises:
      ValueError: bad arguments, or the directory cannot be created/written.
      FileNotFoundError: `read_only` and the directory does not exist.
    """
    if save_interval_steps < 0:
      raise ValueError(
          f"save_interval_steps must be >= 0, got {save_interval_steps}"
      )
    if max_to_keep is not None and max_to_keep < 1:
      raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep}")
    self._directory = _as_path(directory)
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
        raise FileNotFoundError(
            f"Checkpoint directory {self._directory} does not exist."
        )
    else:
      _ensure_writable(self._directory)
    self._manager = _open_manager(
        self._directory,
        read_only=self._read_only,
        async_save=self._async,
        preservation_policy=_KeepRestorable(self, max_to_keep),
    )
    if tmp := _tmp_dirs(self._directory):
      logging.warning(
          "Checkpoint directory %s holds %d uncommitted (half-written)"
          " checkpoint(s), ignored: %s",
          self._directory,
          len(tmp),
          ", ".join(tmp),
      )

  @classmethod
  def for_reading(cls, directory: str | epath.PathLike) -> Checkpointer:
    """A read-only Checkpointer (analysis, evaluation): never writes or deletes."""
    return cls(
        directory,
        save_interval_steps=0,
        max_to_keep=None,
        async_save=False,
        read_only=True,
    )

  @property
  def directory(self) -> epath.Path:
    return self._directory

  # -- Queries -----------------------------------------------------------------

  def all_steps(self) -> list[int]:
    """Committed steps, ascending (not yet verified: see `restore`)."""
    return sorted(int(s) for s in self._manager.all_steps())

  def latest_step(self) -> int | None:
    """Newest committed step, or None. It may still turn out damaged."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def reached_preemption(self, step: int) -> bool:
    """True when all processes reached JAX's preemption sync point at `step`.

    Multi-process only (needs `jax.distributed.initialize()` with the
    preemption service, on by default); always False on one process. Every
    process must call it at every step. `save` already saves at that step. See
    `rope_jax.training.preemption` for the single-process SIGTERM flag.
    """
    return bool(self._manager.reached_preemption(step))

  def _known_good(self) -> set[int]:
    good = set(self._good)
    if self._in_flight is not None:
      # Orbax deletes old steps only once this save has committed.
      good.add(self._in_flight)
    return good

  def _step_path(self, step: int) -> epath.Path:
    return self._directory / str(step)

  # -- Saving ------------------------------------------------------------------

  def _finish_pending(self) -> None:
    """Blocks until the in-flight save (if any) has committed; raises if it failed."""
    step, self._in_flight = self._in_flight, None
    try:
      self._manager.wait_until_finished()
    except Exception:
      if step is not None:
        logging.error(
            "Asynchronous checkpoint save of step %d to %s failed; it was not"
            " committed and no older checkpoint was deleted.",
            step,
            self._directory,
        )
      raise
    if step is not None:
      self._good.add(step)

  def _set_aside(self, step: int) -> None:
    """Renames a known-damaged step directory out of the way (never deletes)."""
    src = self._step_path(step)
    dst = src.parent / f"{src.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
    if jax.process_index() == 0:
      src.rename(dst)
    _sync(f"rope_jax_checkpoint_set_aside_{step}")
    self._manager.reload()
    self._corrupt.discard(step)
    logging.warning(
        "Checkpoint step %d in %s was damaged; moved it to %s (kept for"
        " inspection) and saving a fresh step %d.",
        step,
        self._directory,
        dst.name,
        step,
    )

  def save(
      self,
      step: int,
      state: PyTree,
      *,
      data_state: Any = None,
      metadata: Any = None,
      force: bool = False,
  ) -> bool:
    """Saves a checkpoint if `step % save_interval_steps == 0`, `force`, or preemption.

    Call on every process with the same arguments. With `async_save` it returns
    once the arrays are copied off the device; the previous save is finished
    first. Saving a step that already has a (not known-damaged) checkpoint is
    a no-op that returns False: e.g. a forced preemption save right after the
    periodic save of the same step.

    Args:
      step: the training step (the number of updates applied to `state`).
      state: a pytree of `jax.Array`s (any sharding; global arrays on pods),
        numpy arrays or scalars.
      data_state: the input-pipeline position, JSON-serialisable.
      metadata: e.g. the config as a dict, JSON-serialisable (tuples come back
        as lists, non-string dict keys as strings).
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
    _check_json("data_state", data_state)
    _check_json("metadata", metadata)
    _check_global_arrays(state)
    # Orbax would wait for the previous save inside `save` too; doing it here
    # surfaces its failure and lets the policy count it as good.
    self._finish_pending()
    if step in self.all_steps():
      if step not in self._corrupt:
        logging.info(
            "Checkpoint for step %d already exists in %s; not saving again.",
            step,
            self._directory,
        )
        return False
      self._set_aside(step)
    checksums = {"format": _CHECKSUM_FORMAT, "leaves": _fingerprints(state)}
    args = ocp.args.Composite(
        **{
            _STATE: ocp.args.StandardSave(state),
            _DATA_STATE: ocp.args.JsonSave(data_state),
            _METADATA: ocp.args.JsonSave(metadata),
            _CHECKSUMS: ocp.args.JsonSave(checksums),
        }
    )
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

  # -- Restoring ---------------------------------------------------------------

  def _restore_step(
      self, step: int, abstract_state: PyTree, verify: bool, partial: bool = False
  ) -> tuple[int, PyTree, Any, Any]:
    if partial:
      # Only the leaves named in `abstract_state` are read; the rest of the saved
      # tree (e.g. the optimizer state) is skipped, never loaded.
      state_args = ocp.args.PyTreeRestore(
          item=abstract_state,
          restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state),
          partial_restore=True,
      )
    else:
      state_args = ocp.args.StandardRestore(abstract_state)
    args = ocp.args.Composite(
        **{
            _STATE: state_args,
            _DATA_STATE: ocp.args.JsonRestore(),
            _METADATA: ocp.args.JsonRestore(),
            _CHECKSUMS: ocp.args.JsonRestore(),
        }
    )
    restored = self._manager.restore(step, args=args)
    state = restored[_STATE]
    if verify:
      checksums = restored[_CHECKSUMS]
      if not isinstance(checksums, Mapping):
        raise CorruptCheckpointError(
            f"step {step}: checksum record is {type(checksums).__name__}"
        )
      _verify_fingerprints(state, checksums, step)
    return step, state, restored[_DATA_STATE], restored[_METADATA]

  def restore(
      self,
      abstract_state: PyTree,
      step: int | None = None,
      *,
      verify: bool = True,
      partial: bool = False,
  ) -> tuple[int, PyTree, Any, Any]:
    """Restores a checkpoint onto the shardings given by `abstract_state`.

    Args:
      abstract_state: pytree of `jax.ShapeDtypeStruct(shape, dtype,
        sharding=NamedSharding(...))` with the structure of the saved state.
        Dtypes may differ from the saved ones (values are cast).
      step: the step to restore; None restores the newest step that reads back
        intact, warning about (and keeping) every newer damaged one.
      verify: compare the restored arrays with their save-time fingerprints.
      partial: `abstract_state` is a subtree of the saved state (e.g.
        `{"params": ...}` of a train state): only its leaves are read, the
        others are neither read nor returned. See `restore_params`.

    Returns:
      `(step, state, data_state, metadata)`.

    Raises:
      FileNotFoundError: no committed checkpoint, or `step` does not exist
        (the message lists the directory and the available steps).
      CorruptCheckpointError: `step` was given and cannot be restored, or no
        checkpoint can be restored (the message gives each step's reason).
    """
    if not self._read_only and not self._closed:
      self._finish_pending()
    self._manager.reload()
    steps = self.all_steps()
    if not steps:
      tmp = _tmp_dirs(self._directory)
      note = (
          f" ({len(tmp)} uncommitted, ignored: {', '.join(tmp)})" if tmp else ""
      )
      raise FileNotFoundError(
          f"No committed checkpoint in {self._directory}{note}."
      )
    if step is not None:
      step = int(step)
      if step not in steps:
        raise FileNotFoundError(
            f"No checkpoint for step {step} in {self._directory}; available"
            f" steps: {steps}."
        )
      try:
        result = self._restore_step(step, abstract_state, verify, partial)
        ok = True
      except Exception as e:  # pylint: disable=broad-exception-caught
        error, ok = e, False
      if not _all_processes_agree(ok):
        reason = _describe(error) if not ok else "failed on another process"
        raise CorruptCheckpointError(
            f"Cannot restore checkpoint step {step} from {self._directory}:"
            f" {reason}. Available steps: {steps}."
        ) from (None if ok else error)
      self._good.add(step)
      return result

    failures: list[tuple[int, str]] = []
    for candidate in reversed(steps):
      try:
        result = self._restore_step(candidate, abstract_state, verify, partial)
        ok = True
      except Exception as e:  # pylint: disable=broad-exception-caught
        reason, ok = _describe(e), False
      if not _all_processes_agree(ok):
        if ok:
          reason = "failed on another process"
        failures.append((candidate, reason))
        logging.warning(
            "Checkpoint step %d in %s cannot be restored (%s); falling back to"
            " the previous checkpoint. Nothing is deleted.",
            candidate,
            self._directory,
            reason,
        )
        continue
      if failures:
        self._corrupt.update(s for s, _ in failures)
        logging.warning(
            "Restored checkpoint step %d from %s instead of the latest step"
            " %d: newer step(s) %s are damaged (kept on disk, not deleted).",
            candidate,
            self._directory,
            steps[-1],
            [s for s, _ in failures],
        )
      self._good.add(candidate)
      return result
    details = "; ".join(f"step {s}: {r}" for s, r in failures)
    raise CorruptCheckpointError(
        f"No checkpoint in {self._directory} can be restored (tried steps"
        f" {[s for s, _ in failures]}): {details}"
    )

  def restore_params(
      self,
      abstract_params: PyTree,
      step: int | None = None,
      *,
      key: str = "params",
      verify: bool = True,
  ) -> tuple[int, PyTree, Any]:
    """Restores only `state[key]` of a checkpoint: the model without its optimizer.

    For analysis and evaluation: a train state `{"params", "opt_state", "step"}`
    holds about 3x the parameters' bytes, and only the parameters are read
    here. Works the same on params-only checkpoints (`{"params": ...}`, e.g.
    imported weights). Fallback, verification and errors as in `restore`.

    Args:
      abstract_params: pytree of `jax.ShapeDtypeStruct` (with the wanted
        sharding, e.g. `SingleDeviceSharding` on the host CPU) shaped like the
        saved `state[key]`.
      step: the step; None restores the newest intact step.
      key: the top-level entry of the saved state to restore.
      verify: compare the restored arrays with their save-time fingerprints.

    Returns:
      `(step, params, metadata)`.
    """
    step, state, _, metadata = self.restore(
        {key: abstract_params}, step, verify=verify, partial=True
    )
    return step, state[key], metadata


def restore_metadata(
    directory: str | epath.PathLike, step: int | None = None
) -> dict[str, Any]:
  """Reads the JSON `metadata` (e.g. the config) of a checkpoint, no arrays.

  Args:
    directory: the checkpoint directory (local or gs://).
    step: the step; None reads the newest step whose metadata is readable,
      warning about any newer unreadable one.

  Returns:
    The metadata dict saved with that step ({} if None was saved).

  Raises:
    FileNotFoundError: no such directory, no committed checkpoint, or no such
      step (the message lists the available steps).
    CorruptCheckpointError: the metadata cannot be read.
  """
  path = _as_path(directory)
  if not path.is_dir():
    raise FileNotFoundError(f"Checkpoint directory {path} does not exist.")
  manager = _open_manager(path, read_only=True)
  try:
    steps = sorted(int(s) for s in manager.all_steps())
    if not steps:
      raise FileNotFoundError(f"No committed checkpoint in {path}.")
    if step is not None and int(step) not in steps:
      raise FileNotFoundError(
          f"No checkpoint for step {step} in {path}; available steps: {steps}."
      )
    candidates = [int(step)] if step is not None else list(reversed(steps))
    failures = []
    for candidate in candidates:
      try:
        restored = manager.restore(
            candidate,
            args=ocp.args.Composite(**{_METADATA: ocp.args.JsonRestore()}),
        )
      except Exception as e:  # pylint: disable=broad-exception-caught
        failures.append((candidate, _describe(e)))
        logging.warning(
            "Metadata of checkpoint step %d in %s cannot be read (%s).",
            candidate,
            path,
            failures[-1][1],
        )
        continue
      value = restored[_METADATA]
      return {} if value is None else value
    details = "; ".join(f"step {s}: {r}" for s, r in failures)
    raise CorruptCheckpointError(
        f"Cannot read checkpoint metadata in {path}: {details}"
    )
  finally:
    manager.close()
