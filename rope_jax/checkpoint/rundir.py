"""Restoring a run's model onto the host CPU for analysis (any mesh it was trained on).

A run directory (``rope_jax.train`` or ``rope_jax.import_gemma``) holds
``<workdir>/checkpoints/<step>/`` with the state ``{"params": nnx.State, ...}`` (plus
``"opt_state"`` and ``"step"`` for a training run) and the experiment config under the
metadata's ``"config"``. Analysis reads it through ``rope_jax.checkpoint.manager`` only
(``Checkpointer.restore_params``): the parameters are read onto one CPU device through abstract
targets (``jax.ShapeDtypeStruct`` carrying ``SingleDeviceSharding``), whatever mesh wrote them,
and the optimizer state is never read (a 7B analysis needs the parameters' memory, not 3x).

    model, config, step = restore.load_model("/runs/tiny_rope")
    logits, inter = model(tokens, return_intermediates=True)

The model is rebuilt from the saved config with ``attention_impl="xla"`` (the materialised
attention weights the analyses read); everything else (dtypes, positional encoding) is the run's.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import ml_collections
from absl import logging
from flax import nnx
from jax.sharding import SingleDeviceSharding

from rope_jax.checkpoint import manager as checkpoint_lib
from rope_jax.config import base as config_lib
from rope_jax.config import presets
from rope_jax.model import transformer as model_lib

CHECKPOINT_SUBDIR = "checkpoints"
IMPORT_KEY = "import"  # Metadata key of checkpoints written by rope_jax.import_gemma.
ANALYSIS_ATTENTION_IMPL = "xla"


@dataclasses.dataclass(frozen=True)
class Restored:
  """A restored run.

  Attributes:
    model: the ``Transformer`` with its parameters on the host CPU.
    config: the run's experiment config (``ml_collections.ConfigDict`` rebuilt from the
      checkpoint metadata; ``model.attention_impl`` is ``"xla"``). JSON turned tuples into lists.
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
  """``<workdir>/checkpoints``; FileNotFoundError (one line) if the workdir or it is missing."""
  if "://" not in workdir and not os.path.isdir(workdir):
    raise FileNotFoundError(f"workdir {workdir!r} does not exist.")
  directory = os.path.join(workdir, CHECKPOINT_SUBDIR)
  if "://" not in directory and not os.path.isdir(directory):
    raise FileNotFoundError(
        f"workdir {workdir!r} has no {CHECKPOINT_SUBDIR}/ directory (expected {directory}, "
        "written by rope_jax.train or rope_jax.import_gemma).")
  return directory


def available_steps(workdir: str) -> list[int]:
  """The committed checkpoint steps of a run, ascending (not yet verified)."""
  return checkpoint_lib.Checkpointer.for_reading(checkpoint_dir(workdir)).all_steps()


def host_device() -> jax.Device:
  """The first CPU device (present on every backend): where analysis puts the parameters."""
  return jax.devices("cpu")[0]


def config_from_metadata(metadata: Any, where: str,
                         ) -> tuple[ml_collections.ConfigDict, model_lib.ModelConfig]:
  """The experiment config and its ``ModelConfig`` from a checkpoint's metadata.

  The whole config goes through ``config_lib.validate``. A run saved by an older version of the
  code may fail that for a section analysis does not need (a key added since); then only the
  model section must validate, and a warning names the problem.

  Args:
    metadata: the checkpoint's metadata (``{"config": {...}, ...}``).
    where: names the checkpoint in error messages.

  Raises:
    ValueError: no config (or no model section) in the metadata, or an invalid model section.
  """
  config = metadata.get("config") if isinstance(metadata, dict) else None
  if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
    keys = sorted(metadata) if isinstance(metadata, dict) else type(metadata).__name__
    raise ValueError(
        f"{where} has no config metadata (metadata keys: {keys}); analysis needs the "
        "checkpoint's metadata['config']['model'], which rope_jax.train and "
        "rope_jax.import_gemma write.")
  config = ml_collections.ConfigDict(config)
  config.model.attention_impl = ANALYSIS_ATTENTION_IMPL
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


def abstract_params(cfg: model_lib.ModelConfig, device: jax.Device | None = None,
                    ) -> tuple[nnx.GraphDef, nnx.State]:
  """``(graphdef, params)``: the model's ``nnx.Param`` state as ``jax.ShapeDtypeStruct``s.

  Nothing is allocated. Every leaf carries ``SingleDeviceSharding(device)`` (default: the host
  CPU), the restore target of ``Checkpointer.restore_params``.
  """
  sharding = SingleDeviceSharding(device or host_device())
  abstract = nnx.eval_shape(lambda: model_lib.Transformer(cfg, rngs=nnx.Rngs(0)))
  graphdef, params = nnx.split(abstract, nnx.Param)
  params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        params)
  return graphdef, params


def read_config(workdir: str, step: int | None = None,
                ) -> tuple[ml_collections.ConfigDict, model_lib.ModelConfig, dict[str, Any]]:
  """``(config, model_config, metadata)`` of a run's checkpoint, without reading any array.

  Args:
    workdir: a run directory holding ``checkpoints/``.
    step: the checkpoint step; None = the newest one with readable metadata.

  Raises:
    FileNotFoundError, ValueError: as :func:`load`.
  """
  directory = checkpoint_dir(workdir)
  metadata = checkpoint_lib.restore_metadata(directory, step)
  where = (f"checkpoint step {step} in {directory}" if step is not None else
           f"the newest checkpoint in {directory}")
  config, model_cfg = config_from_metadata(metadata, where)
  return config, model_cfg, metadata


def load(workdir: str, step: int | None = None, *, verify: bool = True,
         device: jax.Device | None = None) -> Restored:
  """Restores the parameters of ``<workdir>/checkpoints`` onto one device (default: host CPU).

  Args:
    workdir: a run directory (local or gs://) holding ``checkpoints/``.
    step: the checkpoint step; None = the newest one that reads back intact.
    verify: compare the restored arrays with their save-time fingerprints.
    device: where the parameters go; default ``jax.devices("cpu")[0]``.

  Raises:
    FileNotFoundError: no such workdir, no ``checkpoints/`` in it, no committed checkpoint, or no
      checkpoint for ``step`` (the message lists the available steps).
    ValueError: the checkpoint has no (valid) config metadata.
    checkpoint.CorruptCheckpointError: the checkpoint cannot be read back.
  """
  config, model_cfg, _ = read_config(workdir, step)
  directory = checkpoint_dir(workdir)
  graphdef, target = abstract_params(model_cfg, device)
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


# The readable name of a model's encoding lives beside the presets it inverts.
describe_positional_encoding = presets.describe
