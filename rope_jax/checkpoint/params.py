"""Params-only rope_jax checkpoints (imported weights) and restoring the params of any run.

An imported model is saved through ``rope_jax.checkpoint.manager`` exactly as the trainer saves its
parameters, ``{"params": nnx.State of nnx.Param}``, under ``<workdir>/checkpoints`` with the
experiment config in the metadata (``{"config": config.to_dict(), ...}``), so the analysis and
sampling CLIs restore it like a trained run. :func:`restore_model` reads the parameters of either
(never a training run's optimizer state) through ``rope_jax.checkpoint.rundir``'s config reading
and ``Checkpointer.restore_params``, optionally straight onto a mesh.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax
from flax import nnx
from jax.sharding import Mesh

from rope_jax.checkpoint import manager as checkpoint_lib
from rope_jax.model import transformer as model_lib
from rope_jax import sharding as sharding_lib
from rope_jax.checkpoint import rundir as restore

CHECKPOINT_SUBDIR = restore.CHECKPOINT_SUBDIR
IMPORT_KEY = restore.IMPORT_KEY  # Metadata key of imported (params-only) checkpoints.


def checkpoint_dir(workdir: str) -> str:
  """``<workdir>/checkpoints`` (need not exist yet: :func:`save_params` creates it)."""
  return os.path.join(workdir, CHECKPOINT_SUBDIR)


def save_params(workdir: str, params: nnx.State, config: dict[str, Any], *, step: int = 0,
                metadata: dict[str, Any] | None = None) -> str:
  """Saves ``{"params": params}`` with ``{"config": config, **metadata}``; returns the directory.

  ``metadata`` should say where the params came from under ``"import"``: that is how
  ``analysis.restore.Restored.imported`` tells imported weights from a trained run's.
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


def abstract_params(cfg: model_lib.ModelConfig, mesh: Mesh | None = None,
                    rules: Sequence[tuple[str, Any]] | None = None,
                    ) -> tuple[nnx.GraphDef, nnx.State]:
  """``(graphdef, params)``: ``jax.ShapeDtypeStruct`` params carrying their target shardings.

  Without a mesh, ``analysis.restore.abstract_params`` on ``jax.local_devices()[0]`` (the
  accelerator, if any); with one, every parameter gets the ``NamedSharding`` of its logical axis
  names under ``rules`` (default ``sharding.DEFAULT_RULES``), as ``weights.gemma`` lays out
  imported weights.
  """
  graphdef, params = restore.abstract_params(cfg, jax.local_devices()[0])
  if mesh is None:
    return graphdef, params
  rules = sharding_lib.normalize_rules(sharding_lib.DEFAULT_RULES if rules is None else rules)
  shardings = sharding_lib.param_shardings(params, mesh, rules)
  return graphdef, jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), params, shardings)


def restore_model(workdir: str, *, step: int | None = None, mesh: Mesh | None = None,
                  rules: Sequence[tuple[str, Any]] | None = None,
                  ) -> tuple[int, model_lib.Transformer, dict[str, Any]]:
  """Restores the model of ``<workdir>/checkpoints`` (imported weights or a training run).

  Parameters only (``Checkpointer.restore_params``): a training run's optimizer state is never
  read. The config comes from the checkpoint's metadata (``analysis.restore.read_config``), with
  the run's own ``model.attention_impl`` (``analysis.restore.load`` forces ``"xla"``, which the
  analyses need; sampling keeps e.g. ``"dot_product"``).

  Args:
    workdir: a run directory holding ``checkpoints/``.
    step: the checkpoint step; None = the newest one that reads back intact.
    mesh: lay the parameters out on this mesh; None = all on ``jax.local_devices()[0]``.
    rules: logical axis rules for ``mesh``; default ``sharding.DEFAULT_RULES``.

  Returns:
    ``(step, model, metadata)``.

  Raises:
    FileNotFoundError, ValueError, checkpoint.CorruptCheckpointError: as
      ``analysis.restore.load``.
  """
  _, cfg, metadata = restore.read_config(workdir, step)
  saved_impl = metadata["config"]["model"].get("attention_impl", cfg.attention_impl)
  cfg = dataclasses.replace(cfg, attention_impl=saved_impl)
  graphdef, target = abstract_params(cfg, mesh, rules)
  ckpt = checkpoint_lib.Checkpointer.for_reading(restore.checkpoint_dir(workdir))
  try:
    step, params, metadata = ckpt.restore_params(target, step)
  finally:
    ckpt.close()
  return int(step), nnx.merge(graphdef, params), dict(metadata or {})
