"""Training state, optimizer, loss, and the jitted train / eval steps with their shardings.

The loop lives in ``rope_jax/training/loop.py`` (its CLI is ``rope_jax/train.py``); checkpoints in
``rope_jax/checkpoint/``; metrics in ``metrics.py``; FLOP counting in ``flops.py``.

State for ``jax.jit``: ``nnx.split(model)`` gives a static ``graphdef`` and the parameters
(an ``nnx.State`` of float32 ``nnx.Param``); the train state is the pytree
``{"params": State, "opt_state": optax state, "step": int32 []}``. Its shardings come from the
parameters' logical axis names through ``mesh.logical_axis_rules`` (``rope_jax.sharding``);
the optimizer moments take their parameter's sharding. One compiled train step takes
``(state, batch)`` with explicit in/out shardings and donates ``state``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from rope_jax.model import losses
from rope_jax.model import transformer as model_lib
from rope_jax import sharding as sharding_lib
# The config sections live in rope_jax.config.schema; re-exported for train_lib.TrainConfig etc.
from rope_jax.config.schema import (  # pylint: disable=unused-import
    DATA_SOURCES, CheckpointConfig, EvalConfig, TrainConfig)

BATCH_KEYS = ("inputs", "targets", "weights", "segment_ids", "positions")
BATCH_DTYPES = {"inputs": jnp.int32, "targets": jnp.int32, "weights": jnp.float32,
                "segment_ids": jnp.int32, "positions": jnp.int32}


# Optimizer ------------------------------------------------------------------------------------

def make_schedule(cfg: TrainConfig) -> optax.Schedule:
  """Learning rate at optimizer step ``count`` (0-based): linear warmup, then cosine decay.

  Step 0 already uses ``lr / warmup_steps`` (not 0), step ``warmup_steps - 1`` the peak.
  """
  base = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
      decay_steps=max(cfg.num_steps, cfg.warmup_steps + 1),
      end_value=cfg.learning_rate * cfg.end_learning_rate_fraction)
  return lambda count: base(count + 1) if cfg.warmup_steps else base(count)


def _decay_mask(params: Any) -> Any:
  return jax.tree.map(lambda x: x.ndim >= 2, params)


def make_optimizer(cfg: TrainConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW (decay on matrices only) after global-norm clipping; returns (optimizer, schedule)."""
  schedule = make_schedule(cfg)
  parts = []
  if cfg.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  parts.append(optax.adamw(schedule, b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps,
                           weight_decay=cfg.weight_decay, mask=_decay_mask))
  return optax.chain(*parts), schedule


# Steps (the losses are rope_jax.model.losses) ----------------------------------------------------

def _forward(graphdef: nnx.GraphDef, params: Any, batch: dict[str, jax.Array]) -> jax.Array:
  model = nnx.merge(graphdef, params)
  return model(batch["inputs"], batch["positions"], batch["segment_ids"]).logits


def split_microbatches(batch: dict[str, jax.Array],
                       num_microbatches: int) -> dict[str, jax.Array]:
  """``[B, L]`` arrays -> ``[A, B/A, L]``, each microbatch sharded over the data axes.

  Microbatch ``a`` holds rows ``a, a + A, a + 2A, ...`` (strided, not contiguous): a device's
  contiguous block of ``B / D`` rows then splits into its own ``A`` local pieces of
  ``B / (D·A)`` rows, so the split moves no data between devices (a contiguous split would put
  microbatch ``a`` on only ``D / A`` devices and need an all-to-all). Loss and gradient sums do
  not depend on which rows go together. Needs ``B % (A × data-parallel size) == 0``
  (:func:`check_grad_accum`).
  """
  a = num_microbatches

  def split(x: jax.Array) -> jax.Array:
    if x.shape[0] % a:
      raise ValueError(f"Batch of {x.shape[0]} rows does not split into {a} microbatches.")
    x = jnp.swapaxes(x.reshape((x.shape[0] // a, a) + x.shape[1:]), 0, 1)
    return sharding_lib.constrain(x, (None, "batch") + (None,) * (x.ndim - 2))

  return {k: split(v) for k, v in batch.items()}


def accumulate_gradients(params: Any, batch: dict[str, jax.Array], *, graphdef: nnx.GraphDef,
                         num_microbatches: int,
                         z_loss: float) -> tuple[Any, dict[str, jax.Array]]:
  """The full-batch gradient and loss of ``batch`` ``[B, L]``, computed over ``A`` microbatches.

  ``jax.lax.scan`` over the ``[A, B/A, L]`` microbatches (:func:`split_microbatches`) sums the
  float32 gradients of Σ w·ce + z_loss·Σ w·log(Z)² and the sums themselves, then divides once
  by the batch's total Σ w, so the result is the full-batch gradient of
  :func:`rope_jax.model.losses.cross_entropy` however the weighted (non-padding) tokens are
  spread over the microbatches.

  Returns:
    ``(grads, aux)``: grads like ``params`` (in the parameters' dtypes), ``aux`` as
    :func:`rope_jax.model.losses.cross_entropy`'s.
  """
  micro = split_microbatches(batch, num_microbatches)
  names = sharding_lib.logical_names_tree(params)

  def keep_param_layout(tree: Any) -> Any:
    # The float32 accumulator lives in the parameters' (FSDP) layout, not replicated.
    return jax.tree.map(lambda x, spec: sharding_lib.constrain(x, tuple(spec)), tree, names)

  def sum_loss(p: Any, mb: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    sums = losses.cross_entropy_sums(_forward(graphdef, p, mb), mb["targets"], mb["weights"])
    return sums["ce_sum"] + z_loss * sums["log_z_sq_sum"], sums

  def body(carry, mb):
    grad_acc, sums_acc = carry
    (_, sums), grads = jax.value_and_grad(sum_loss, has_aux=True)(params, mb)
    grad_acc = keep_param_layout(
        jax.tree.map(lambda acc, g: acc + g.astype(jnp.float32), grad_acc, grads))
    return (grad_acc, jax.tree.map(jnp.add, sums_acc, sums)), None

  zero_grads = keep_param_layout(jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params))
  zero_sums = {k: jnp.zeros((), jnp.float32) for k in ("ce_sum", "log_z_sq_sum", "weight_sum")}
  (grad_sum, sums), _ = jax.lax.scan(body, (zero_grads, zero_sums), micro)
  denom = jnp.maximum(sums["weight_sum"], 1.0)
  grads = jax.tree.map(lambda g, p: (g / denom).astype(p.dtype), grad_sum, params)
  return grads, losses.loss_from_sums(sums, z_loss)[1]


def train_step(state: dict[str, Any], batch: dict[str, jax.Array], *, graphdef: nnx.GraphDef,
               optimizer: optax.GradientTransformation, schedule: optax.Schedule,
               z_loss: float, grad_accum_steps: int = 1
               ) -> tuple[dict[str, Any], dict[str, jax.Array]]:
  """One optimizer step on ``batch`` (``[B, L]`` arrays, ``BATCH_KEYS``).

  With ``grad_accum_steps`` A > 1 the gradient is accumulated over A microbatches of
  ``[B/A, L]`` (:func:`accumulate_gradients`); the update and the metrics equal the A = 1
  step's up to float rounding. Returns the new state and scalar metrics (before the update).
  """
  if grad_accum_steps > 1:
    grads, aux = accumulate_gradients(state["params"], batch, graphdef=graphdef,
                                      num_microbatches=grad_accum_steps, z_loss=z_loss)
  else:

    def loss_fn(params):
      logits = _forward(graphdef, params, batch)
      return losses.cross_entropy(logits, batch["targets"], batch["weights"], z_loss)

    (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
  return apply_gradients(state, grads, aux, optimizer=optimizer, schedule=schedule)


def apply_gradients(state: dict[str, Any], grads: Any, aux: dict[str, jax.Array], *,
                    optimizer: optax.GradientTransformation, schedule: optax.Schedule
                    ) -> tuple[dict[str, Any], dict[str, jax.Array]]:
  """The optimizer update of a train step: the new state and ``aux`` plus the step's metrics."""
  updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  metrics = dict(aux, grad_norm=optax.tree.norm(grads),
                 param_norm=optax.tree.norm(state["params"]),
                 learning_rate=jnp.asarray(schedule(state["step"]), jnp.float32))
  return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, metrics


def eval_step(params: Any, batch: dict[str, jax.Array], *,
              graphdef: nnx.GraphDef) -> dict[str, jax.Array]:
  """Sums for exact averaging over batches: ``loss_sum`` (Σ w·ce) and ``weight_sum`` (Σ w)."""
  logits = _forward(graphdef, params, batch)
  _, aux = losses.cross_entropy(logits, batch["targets"], batch["weights"])
  return {"loss_sum": aux["loss"] * aux["num_tokens"], "weight_sum": aux["num_tokens"]}


# Setup: abstract state, shardings, compilation --------------------------------------------------

def init_state(model_cfg: model_lib.ModelConfig, optimizer: optax.GradientTransformation,
               seed: int) -> dict[str, Any]:
  """A fresh train state (call under ``jax.jit`` with out_shardings to init sharded)."""
  model = model_lib.Transformer(model_cfg, rngs=nnx.Rngs(seed))
  _, params = nnx.split(model, nnx.Param)
  return {"params": params, "opt_state": optimizer.init(params),
          "step": jnp.zeros((), jnp.int32)}


@dataclasses.dataclass
class Setup:
  """Everything the loop, the AOT check and the tests need to run or compile a step."""

  model_cfg: model_lib.ModelConfig
  train_cfg: TrainConfig
  mesh: Mesh
  rules: tuple[tuple[str, tuple[str, ...]], ...]
  graphdef: nnx.GraphDef
  optimizer: optax.GradientTransformation
  schedule: optax.Schedule
  abstract_state: Any  # ShapeDtypeStructs carrying their NamedSharding.
  state_shardings: Any
  batch_sharding: NamedSharding

  @property
  def param_shardings(self) -> Any:
    return self.state_shardings["params"]

  def abstract_batch(self, global_batch_size: int, seq_len: int) -> dict[str, jax.ShapeDtypeStruct]:
    return {k: jax.ShapeDtypeStruct((global_batch_size, seq_len), BATCH_DTYPES[k],
                                    sharding=self.batch_sharding) for k in BATCH_KEYS}

  def init(self, seed: int | None = None) -> dict[str, Any]:
    """A fresh state, initialised directly into its shardings (same values on any mesh)."""
    seed = self.train_cfg.seed if seed is None else seed
    fn = jax.jit(functools.partial(init_state, self.model_cfg, self.optimizer, seed),
                 out_shardings=self.state_shardings)
    with sharding_lib.activate(self.mesh, self.rules):
      return fn()

  def lower_train_step(self, global_batch_size: int | None = None,
                       seq_len: int | None = None) -> jax.stages.Lowered:
    b = global_batch_size or self.train_cfg.global_batch_size
    l = seq_len or self.train_cfg.seq_len
    accum = self.train_cfg.grad_accum_steps
    check_grad_accum(b, accum, self.mesh, self.rules)
    step = functools.partial(train_step, graphdef=self.graphdef, optimizer=self.optimizer,
                             schedule=self.schedule, z_loss=self.train_cfg.z_loss,
                             grad_accum_steps=accum)
    replicated = sharding_lib.replicated(self.mesh)
    batch_shardings = {k: self.batch_sharding for k in BATCH_KEYS}
    fn = jax.jit(step, in_shardings=(self.state_shardings, batch_shardings),
                 out_shardings=(self.state_shardings, replicated), donate_argnums=(0,))
    with sharding_lib.activate(self.mesh, self.rules):
      return fn.lower(self.abstract_state, self.abstract_batch(b, l))

  def compile_train_step(self, global_batch_size: int | None = None,
                         seq_len: int | None = None) -> jax.stages.Compiled:
    """``compiled(state, batch) -> (state, metrics)``; ``state`` is donated."""
    return self.lower_train_step(global_batch_size, seq_len).compile()

  def compile_eval_step(self, global_batch_size: int, seq_len: int) -> jax.stages.Compiled:
    """``compiled(params, batch) -> {"loss_sum", "weight_sum"}``."""
    fn = jax.jit(functools.partial(eval_step, graphdef=self.graphdef),
                 in_shardings=(self.param_shardings, {k: self.batch_sharding for k in BATCH_KEYS}),
                 out_shardings=sharding_lib.replicated(self.mesh))
    with sharding_lib.activate(self.mesh, self.rules):
      return fn.lower(self.abstract_state["params"],
                      self.abstract_batch(global_batch_size, seq_len)).compile()


def check_grad_accum(global_batch_size: int, grad_accum_steps: int, mesh: Mesh,
                     rules: tuple[tuple[str, tuple[str, ...]], ...]) -> None:
  """Raises ValueError unless every microbatch splits evenly over the data-parallel axes.

  Each of the ``grad_accum_steps`` microbatches has ``global_batch_size / grad_accum_steps``
  rows sharded over the batch rule's mesh axes, so the batch must be divisible by
  ``grad_accum_steps × data-parallel size``.
  """
  axes = sharding_lib.batch_axes(mesh, rules)
  ways = math.prod(mesh.shape[a] for a in axes)
  if global_batch_size % (grad_accum_steps * ways):
    raise ValueError(
        f"train.global_batch_size={global_batch_size} is not divisible by "
        f"train.grad_accum_steps={grad_accum_steps} x the data-parallel size {ways} (mesh axes "
        f"{dict((a, mesh.shape[a]) for a in axes)}) = {grad_accum_steps * ways}: each "
        f"microbatch of global_batch_size / grad_accum_steps rows must split over the "
        f"data-parallel devices. Use a batch that is a multiple of {grad_accum_steps * ways} "
        f"or fewer accumulation steps.")


def make_setup(model_cfg: model_lib.ModelConfig, train_cfg: TrainConfig,
               mesh_cfg: sharding_lib.MeshConfig, devices: list[Any] | None = None) -> Setup:
  """Builds the mesh, the abstract state and all shardings; raises ValueError before compiling.

  Args:
    devices: default ``jax.devices()``; the AOT check passes a TPU topology's devices.
  """
  mesh = sharding_lib.make_mesh(mesh_cfg, devices)
  rules = mesh_cfg.logical_axis_rules
  if model_cfg.param_dtype != "float32":
    logging.warning("model.param_dtype=%s: parameters and Adam moments are not float32 "
                    "master copies; use model.dtype=bfloat16 for bf16 compute instead.",
                    model_cfg.param_dtype)
  process_count = len({d.process_index for d in mesh.devices.flat})
  sharding_lib.check_batch(train_cfg.global_batch_size, mesh, rules, what="train",
                           process_count=process_count)
  check_grad_accum(train_cfg.global_batch_size, train_cfg.grad_accum_steps, mesh, rules)
  optimizer, schedule = make_optimizer(train_cfg)
  graphdef, abstract_params = model_lib.abstract_model(model_cfg)
  params_sh = sharding_lib.param_shardings(abstract_params, mesh, rules)
  abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
  replicated = sharding_lib.replicated(mesh)
  opt_sh = optax.tree_map_params(optimizer, lambda _, s: s, abstract_opt, params_sh,
                                 transform_non_params=lambda _: replicated)
  state_sh = {"params": params_sh, "opt_state": opt_sh, "step": replicated}
  abstract = {"params": abstract_params, "opt_state": abstract_opt,
              "step": jax.ShapeDtypeStruct((), jnp.int32)}
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          abstract, state_sh)
  return Setup(model_cfg=model_cfg, train_cfg=train_cfg, mesh=mesh, rules=rules,
               graphdef=graphdef, optimizer=optimizer, schedule=schedule,
               abstract_state=abstract, state_shardings=state_sh,
               batch_sharding=sharding_lib.batch_sharding(mesh, rules))


def memory_report(compiled: jax.stages.Compiled) -> dict[str, float]:
  """Per-device bytes from ``compiled.memory_analysis()``: arguments, outputs, temporaries,
  aliased (donated) and ``total`` = arguments + outputs + temporaries − aliased."""
  m = compiled.memory_analysis()
  if m is None:
    return {}
  out = {k: float(getattr(m, f"{k}_size_in_bytes", 0)) for k in
         ("argument", "output", "temp", "alias", "generated_code")}
  out["total"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
  return out


def cost_flops(compiled: jax.stages.Compiled) -> float | None:
  """FLOPs per device per call from XLA's ``cost_analysis()`` (None if unavailable)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


# Evaluation -----------------------------------------------------------------------------------

class Evaluator:
  """Validation loss / perplexity at ``eval.length_multipliers`` × the training length.

  Every call reads the same first ``eval.num_batches`` validation batches per length (a fresh
  iterator each time), so values are comparable across steps and across NoPE / RoPE / p-RoPE.

  Args:
    setup: the training setup (mesh, shardings, graphdef).
    eval_cfg: the ``eval`` section.
    make_iterator: ``(global_batch_size, seq_len) -> iterator`` of process-local batches.
  """

  def __init__(self, setup: Setup, eval_cfg: EvalConfig,
               make_iterator: Callable[[int, int], Any]):
    self.setup, self.cfg, self.make_iterator = setup, eval_cfg, make_iterator
    self.batch_size = eval_cfg.global_batch_size or setup.train_cfg.global_batch_size
    self.lengths = [setup.train_cfg.seq_len * m for m in eval_cfg.length_multipliers]
    self._compiled: dict[int, jax.stages.Compiled] = {}
    if eval_cfg.num_batches:
      process_count = len({d.process_index for d in setup.mesh.devices.flat})
      sharding_lib.check_batch(self.batch_size, setup.mesh, setup.rules, what="eval",
                               process_count=process_count)

  def __call__(self, params: Any) -> dict[str, float]:
    """``{"loss_len{L}": nats per token, "perplexity_len{L}": exp(loss)}`` per length L."""
    results: dict[str, float] = {}
    if not self.cfg.num_batches:
      return results
    for length in self.lengths:
      if length not in self._compiled:
        self._compiled[length] = self.setup.compile_eval_step(self.batch_size, length)
      it = self.make_iterator(self.batch_size, length)
      loss_sum = weight_sum = 0.0
      for _ in range(self.cfg.num_batches):
        batch = to_global(self.setup, next(it), self.batch_size)
        sums = host_scalars(self._compiled[length](params, batch))
        loss_sum += sums["loss_sum"]
        weight_sum += sums["weight_sum"]
      loss = loss_sum / max(weight_sum, 1.0)
      results[f"loss_len{length}"] = loss
      results[f"perplexity_len{length}"] = math.exp(loss) if loss < 700 else float("inf")
    return results


# Input ----------------------------------------------------------------------------------------

def make_batch_iterator(train_cfg: TrainConfig, model_cfg: model_lib.ModelConfig,
                        data_config: Any, *, split: str, global_batch_size: int, seq_len: int,
                        seed: int, process_index: int, process_count: int) -> Any:
  """The input pipeline of ``train.data_source``: an iterator of process-local numpy batches
  with ``get_state()`` / ``set_state()``. The loop does not care which one it gets."""
  if train_cfg.data_source == "synthetic":
    from rope_jax.data import synthetic as synthetic_data  # pylint: disable=g-import-not-at-top
    return synthetic_data.SyntheticSource(
        vocab_size=model_cfg.vocab_size, split=split, global_batch_size=global_batch_size,
        seq_len=seq_len, seed=seed, process_index=process_index, process_count=process_count)
  from rope_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  return data_lib.make_iterator(data_config, split=split, global_batch_size=global_batch_size,
                                seq_len=seq_len, seed=seed, process_index=process_index,
                                process_count=process_count)


def to_global(setup: Setup, local: dict[str, np.ndarray], global_batch_size: int
              ) -> dict[str, jax.Array]:
  """Process-local numpy rows -> global arrays on the batch sharding."""
  missing = [k for k in BATCH_KEYS if k not in local]
  if missing:
    raise ValueError(f"Batch is missing {missing}; a batch needs {BATCH_KEYS}.")
  return sharding_lib.make_global_batch({k: np.asarray(local[k], BATCH_DTYPES[k])
                                         for k in BATCH_KEYS}, setup.batch_sharding,
                                        global_batch_size)


def check_workdir(workdir: str) -> None:
  """Creates ``workdir`` (local or gs://) and checks it is writable; ValueError otherwise."""
  import uuid  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  path = epath.Path(workdir)
  probe = path / f".write_probe.{jax.process_index()}.{uuid.uuid4().hex}"
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe.write_text("ok")
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"workdir {workdir!r} is not writable: {type(e).__name__}: {e}") from e


def host_scalars(tree: dict[str, jax.Array]) -> dict[str, float]:
  """Replicated scalar metrics -> Python floats (blocks)."""
  return {k: float(v) for k, v in jax.device_get(tree).items()}


def is_finite(x: float) -> bool:
  return math.isfinite(x)
