"""The run directory: where a run keeps what, and reading or writing its model.

A run directory (``rope_jax.train`` or ``rope_jax.import_gemma``) holds::

  <workdir>/
    checkpoints/<step>/   the state ``{"params": nnx.State, ...}`` (plus ``"opt_state"`` and
                          ``"step"`` for a training run), the experiment config under the
                          metadata's ``"config"`` (``manager.Checkpointer``)
    metrics.jsonl         one JSON record per logged step (``training.metrics``)
    tensorboard/          TensorBoard event files

This module is the one home of those names, of the abstract parameters of a config on a device
or a mesh, of :func:`load` (analysis, sampling, evaluation: parameters only, never the optimizer
state, onto one device or a mesh whatever mesh wrote them) and of :func:`save_params` (imports).

    restored = rundir.load("/runs/tiny_rope")        # attention_impl="xla": the analyses' view
    logits = restored.model(tokens).logits

The model is rebuilt from the saved config; ``attention_impl`` is one explicit choice
(default ``"xla"``, the materialised attention weights the analyses read; ``None`` keeps the
run's own, e.g. for sampling), ``rope_scaling`` the other: evaluate a run with a context
extension it was not trained with (no parameter changes), e.g.
``rundir.load(workdir, rope_scaling={"type": "yarn", "factor": 4.0,
"original_max_position_embeddings": 128})``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import jax
import ml_collections
from absl import logging
from flax import nnx
from jax.sharding import Mesh, SingleDeviceSharding

from rope_jax import errors
from rope_jax import sharding as sharding_lib
from rope_jax.checkpoint import manager as checkpoint_lib
from rope_jax.config import base as config_lib
from rope_jax.model import transformer as model_lib

CHECKPOINT_SUBDIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_SUBDIR = "tensorboard"
IMPORT_KEY = "import"  # Metadata key of checkpoints written by rope_jax.import_gemma.
ANALYSIS_ATTENTION_IMPL = "xla"


@dataclasses.dataclass(frozen=True)
class Restored:
  """A restored run.

  Attributes:
    model: the ``Transformer`` with its parameters on the chosen device or mesh.
    config: the run's experiment config (``ml_collections.ConfigDict`` rebuilt from the
      checkpoint metadata, ``model.attention_impl`` as loaded). JSON turned tuples into lists.
    model_config: the validated ``ModelConfig`` the model was built from.
    step: the checkpoint step restored.
    metadata: the checkpoint's whole metadata dict (``"config"``, and e.g. ``"mesh"`` for a
      training run or ``"import"`` for imported weights).
    checkpoint_dir: ``<workdir>/checkpoints``.
  """

  model: model_lib.Transformer
  config: ml_collections.ConfigDict
  model_config: model_lib.ModelConfig
  step: int
  metadata: dict[str, Any]
  checkpoint_dir: str

  @property
  def imported(self) -> bool:
    """Whether the checkpoint holds imported weights (``rope_jax.import_gemma``)."""
    return IMPORT_KEY in self.metadata


def checkpoint_dir(workdir: str) -> str:
  """``<workdir>/checkpoints`` (need not exist: see :func:`existing_checkpoint_dir`)."""
  return os.path.join(workdir, CHECKPOINT_SUBDIR)


def metrics_path(workdir: str) -> str:
  """``<workdir>/metrics.jsonl``."""
  return os.path.join(workdir, METRICS_FILE)


def tensorboard_dir(workdir: str) -> str:
  """``<workdir>/tensorboard``."""
  return os.path.join(workdir, TENSORBOARD_SUBDIR)


def existing_checkpoint_dir(workdir: str) -> str:
  """``<workdir>/checkpoints``; NoCheckpointError (one line) if the workdir or it is missing."""
  if "://" not in workdir and not os.path.isdir(workdir):
    raise errors.NoCheckpointError(f"workdir {workdir!r} does not exist.")
  directory = checkpoint_dir(workdir)
  if "://" not in directory and not os.path.isdir(directory):
    raise errors.NoCheckpointError(
        f"workdir {workdir!r} has no {CHECKPOINT_SUBDIR}/ directory (expected {directory}, "
        "written by rope_jax.train or rope_jax.import_gemma).")
  return directory


def available_steps(workdir: str) -> list[int]:
  """The committed checkpoint steps of a run, ascending (not yet verified)."""
  ckpt = checkpoint_lib.Checkpointer.for_reading(existing_checkpoint_dir(workdir))
  try:
    return ckpt.all_steps()
  finally:
    ckpt.close()


def host_device() -> jax.Device:
  """The first CPU device (present on every backend): where analysis puts the parameters."""
  return jax.devices("cpu")[0]


def config_from_metadata(metadata: Any, where: str, attention_impl: str | None = (
    ANALYSIS_ATTENTION_IMPL), rope_scaling: Mapping[str, Any] | None = None,
                         ) -> tuple[ml_collections.ConfigDict, model_lib.ModelConfig]:
  """The experiment config and its ``ModelConfig`` from a checkpoint's metadata.

  The whole config goes through ``config_lib.validate``. A run saved by an older version of the
  code may fail that for a section analysis does not need (a key added since); then only the
  model section must validate, and a warning names the problem.

  Args:
    metadata: the checkpoint's metadata (``{"config": {...}, ...}``).
    where: names the checkpoint in error messages.
    attention_impl: set ``model.attention_impl`` to this; None keeps the run's own.
    rope_scaling: replace every layer's context extension (``ModelConfig.with_rope_scaling``:
      ``type`` and its HF parameters); None keeps the run's own.

  Raises:
    ValueError: no config (or no model section) in the metadata, an invalid model section, or
      an invalid ``rope_scaling``.
  """
  config, model_cfg = _saved_config(metadata, where, attention_impl)
  if rope_scaling is not None:
    model_cfg = model_cfg.with_rope_scaling(rope_scaling)
    for name in ("rope", "global_rope"):
      rope = getattr(model_cfg, name)
      if rope is not None:
        config.model[name] = dataclasses.asdict(rope)
  return config, model_cfg


def _saved_config(metadata: Any, where: str, attention_impl: str | None,
                  ) -> tuple[ml_collections.ConfigDict, model_lib.ModelConfig]:
  """:func:`config_from_metadata` without the ``rope_scaling`` override."""
  config = metadata.get("config") if isinstance(metadata, dict) else None
  if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
    keys = sorted(metadata) if isinstance(metadata, dict) else type(metadata).__name__
    raise ValueError(
        f"{where} has no config metadata (metadata keys: {keys}); analysis needs the "
        "checkpoint's metadata['config']['model'], which rope_jax.train and "
        "rope_jax.import_gemma write.")
  config = ml_collections.ConfigDict(config)
  if attention_impl is not None:
    config.model.attention_impl = attention_impl
  try:
    return config, config_lib.validate(config)["model"]
  except ValueError as full_error:
    try:
      model_cfg = config_lib.model_config(config)
    except ValueError as e:
      raise ValueError(f"{where}: the saved model config is invalid: {e}") from e
    logging.warning("%s: the saved config does not validate against this code (%s); only its "
                    "model section is used.", where, full_error)
    return config, model_cfg


def abstract_params(cfg: model_lib.ModelConfig, device: jax.Device | None = None, *,
                    mesh: Mesh | None = None, rules: Sequence[tuple[str, Any]] | None = None,
                    ) -> tuple[nnx.GraphDef, nnx.State]:
  """``(graphdef, params)``: the model's ``nnx.Param`` state as ``jax.ShapeDtypeStruct``s.

  Nothing is allocated. Without a mesh every leaf carries ``SingleDeviceSharding(device)``
  (default: the host CPU); with one, the ``NamedSharding`` of its logical axis names under
  ``rules`` (default ``sharding.DEFAULT_RULES``). The restore target of
  ``Checkpointer.restore_params``.
  """
  graphdef, params = model_lib.abstract_model(cfg)
  if mesh is None:
    sharding = SingleDeviceSharding(device or host_device())
    shardings = jax.tree.map(lambda _: sharding, params)
  else:
    rules = sharding_lib.normalize_rules(sharding_lib.DEFAULT_RULES if rules is None else rules)
    shardings = sharding_lib.param_shardings(params, mesh, rules)
  return graphdef, jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), params, shardings)


def read_config(workdir: str, step: int | None = None, *,
                attention_impl: str | None = ANALYSIS_ATTENTION_IMPL,
                rope_scaling: Mapping[str, Any] | None = None,
                ) -> tuple[ml_collections.ConfigDict, model_lib.ModelConfig, dict[str, Any]]:
  """``(config, model_config, metadata)`` of a run's checkpoint, without reading any array.

  Args:
    workdir: a run directory holding ``checkpoints/``.
    step: the checkpoint step; None = the newest one with readable metadata.
    attention_impl, rope_scaling: as :func:`config_from_metadata`.

  Raises:
    NoCheckpointError, ValueError: as :func:`load`.
  """
  directory = existing_checkpoint_dir(workdir)
  metadata = checkpoint_lib.restore_metadata(directory, step)
  where = (f"checkpoint step {step} in {directory}" if step is not None else
           f"the newest checkpoint in {directory}")
  config, model_cfg = config_from_metadata(metadata, where, attention_impl, rope_scaling)
  return config, model_cfg, metadata


def load(workdir: str, step: int | None = None, *, verify: bool = True,
         device: jax.Device | None = None, mesh: Mesh | None = None,
         rules: Sequence[tuple[str, Any]] | None = None,
         attention_impl: str | None = ANALYSIS_ATTENTION_IMPL,
         rope_scaling: Mapping[str, Any] | None = None) -> Restored:
  """Restores the parameters of ``<workdir>/checkpoints`` (a training run or imported weights).

  Parameters only (``Checkpointer.restore_params``): a training run's optimizer state is never
  read.

  Args:
    workdir: a run directory (local or gs://) holding ``checkpoints/``.
    step: the checkpoint step; None = the newest one that reads back intact.
    verify: compare the restored arrays with their save-time fingerprints.
    device: where the parameters go without a mesh; default the host CPU.
    mesh: lay the parameters out on this mesh instead (by their logical axis names).
    rules: logical axis rules for ``mesh``; default ``sharding.DEFAULT_RULES``.
    attention_impl: the model's ``attention_impl``: default ``"xla"`` (what the analyses read);
      None keeps the run's own (sampling, evaluation).
    rope_scaling: evaluate with another context extension (``ModelConfig.with_rope_scaling``),
      e.g. ``{"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128}`` for a
      run trained at 128 tokens evaluated at 512; None keeps the run's own.

  Raises:
    NoCheckpointError: no such workdir, no ``checkpoints/`` in it, no committed checkpoint, no
      checkpoint for ``step`` (the message lists the available steps), or none restorable.
    IncompatibleRunError: the saved arrays do not fit the saved config's model.
    ValueError: the checkpoint has no (valid) config metadata.
    manager.CorruptCheckpointError: ``step`` was given and cannot be read back.
  """
  config, model_cfg, _ = read_config(workdir, step, attention_impl=attention_impl,
                                     rope_scaling=rope_scaling)
  directory = existing_checkpoint_dir(workdir)
  graphdef, target = abstract_params(model_cfg, device, mesh=mesh, rules=rules)
  ckpt = checkpoint_lib.Checkpointer.for_reading(directory)
  try:
    step, params, metadata = ckpt.restore_params(target, step, verify=verify)
  finally:
    ckpt.close()
  return Restored(model=nnx.merge(graphdef, params), config=config, model_config=model_cfg,
                  step=int(step), metadata=dict(metadata or {}), checkpoint_dir=directory)


def load_model(workdir: str, step: int | None = None, *, verify: bool = True,
               ) -> tuple[model_lib.Transformer, ml_collections.ConfigDict, int]:
  """``(model, config, step)`` of a run, parameters on the host CPU; see :func:`load`."""
  restored = load(workdir, step, verify=verify)
  return restored.model, restored.config, restored.step


def save_params(workdir: str, params: nnx.State, config: dict[str, Any], *, step: int = 0,
                metadata: dict[str, Any] | None = None) -> str:
  """Saves ``{"params": params}`` with ``{"config": config, **metadata}``; returns the directory.

  The layout of a training run's parameters, so :func:`load` restores imported weights like a
  trained run. ``metadata`` should say where the params came from under ``"import"``: that is
  how :attr:`Restored.imported` tells imported weights from a trained run's.
  """
  directory = checkpoint_dir(workdir)
  ckpt = checkpoint_lib.Checkpointer(directory, save_interval_steps=1, max_to_keep=1,
                                     async_save=False)
  try:
    ckpt.save(step, {"params": params}, metadata={"config": config, **(metadata or {})},
              force=True)
  finally:
    ckpt.close()
  return directory
