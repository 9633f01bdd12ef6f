"""Params-only rope_jax checkpoints (imported weights) and restoring the params of any run.

An imported model is saved through ``rope_jax.checkpoint`` exactly as the trainer saves its
parameters, ``{"params": nnx.State of nnx.Param}``, under ``<workdir>/checkpoints`` with the
experiment config in the metadata (``{"config": config.to_dict(), ...}``), so the analysis and
sampling CLIs restore it like a trained run.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
from flax import nnx
from jax.sharding import Mesh, SingleDeviceSharding

from rope_jax import checkpoint as checkpoint_lib
from rope_jax import model as model_lib
from rope_jax import sharding as sharding_lib

CHECKPOINT_SUBDIR = "checkpoints"
IMPORT_KEY = "import"  # Metadata key of imported (params-only) checkpoints.


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, CHECKPOINT_SUBDIR)


def save_params(workdir: str, params: nnx.State, config: dict[str, Any], *, step: int = 0,
                metadata: dict[str, Any] | None = None) -> str:
  """Saves ``{"params": params}`` with ``{"config": config, **metadata}``; returns the directory.

  ``metadata`` should say where the params came from under ``"import"``: that is how
  :func:`restore_model` tells a params-only checkpoint from a training run's.
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
                    rules: Sequence[tuple[str, Any]] | None = None) -> nnx.State:
  """``nnx.State`` of ``jax.ShapeDtypeStruct`` params carrying their target shardings."""
  abstract = nnx.eval_shape(lambda: model_lib.Transformer(cfg, rngs=nnx.Rngs(0)))
  state = nnx.state(abstract, nnx.Param)
  if mesh is None:
    shardings = jax.tree.map(lambda _: SingleDeviceSharding(jax.local_devices()[0]), state)
  else:
    rules = sharding_lib.normalize_rules(sharding_lib.DEFAULT_RULES if rules is None else rules)
    shardings = sharding_lib.param_shardings(state, mesh, rules)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      state, shardings)


def restore_model(workdir: str, *, step: int | None = None, mesh: Mesh | None = None,
                  rules: Sequence[tuple[str, Any]] | None = None,
                  ) -> tuple[int, model_lib.Transformer, dict[str, Any]]:
  """Restores the model of ``<workdir>/checkpoints`` (imported, or a params-only save).

  The model config comes from the checkpoint's metadata (``metadata["config"]["model"]``).

  Returns:
    ``(step, model, metadata)``.
  """
  directory = checkpoint_dir(workdir)
  metadata = checkpoint_lib.restore_metadata(directory, step)
  config = metadata.get("config") if isinstance(metadata, dict) else None
  if not isinstance(config, dict) or "model" not in config:
    raise ValueError(f"Checkpoint metadata in {directory} has no config['model'] (got keys "
                     f"{sorted(metadata) if isinstance(metadata, dict) else metadata!r}).")
  cfg = model_lib.ModelConfig.from_dict(config["model"])
  params = abstract_params(cfg, mesh, rules)
  if IMPORT_KEY in metadata or "train" not in config:
    target = {"params": params}
  else:
    # A training run saved {"params", "opt_state", "step"}, and checkpoint.Checkpointer restores
    # whole trees only: build the optimizer state's structure from the run's own config.
    target = _train_state_target(config, params)
  ckpt = checkpoint_lib.Checkpointer.for_reading(directory)
  try:
    step, state, _, metadata = ckpt.restore(target, step)
  finally:
    ckpt.close()
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: model_lib.Transformer(cfg, rngs=nnx.Rngs(0))))
  return step, nnx.merge(graphdef, state["params"]), metadata


def _train_state_target(config: dict[str, Any], params: nnx.State) -> dict[str, Any]:
  """The abstract ``{"params", "opt_state", "step"}`` of a training run (opt state on host)."""
  from rope_jax import train_lib  # pylint: disable=g-import-not-at-top
  train_cfg = train_lib.TrainConfig.from_dict(config["train"])
  optimizer, _ = train_lib.make_optimizer(train_cfg)
  host = SingleDeviceSharding(jax.local_devices()[0])
  opt = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=host),
                     jax.eval_shape(optimizer.init, params))
  return {"params": params, "opt_state": opt,
          "step": jax.ShapeDtypeStruct((), jax.numpy.int32, sharding=host)}
