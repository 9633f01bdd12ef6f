"""Many runs as one compiled program: rows × seeds trained together under ``jax.vmap``.

Every Table 2 row is a frequency vector over one pairing. p-RoPE, reversed, NoPE and RoPE at
any θ are ``[H/2]`` vectors over the model's split-half pairs (0 = an identity pair); partial
rotary is one too, up to a fixed permutation of the head channels (its rotated slice is re-paired
over ``R`` dims). So the runs of a grid differ only in *data*: their parameters and their
frequency vector. :class:`FusedGrid` stacks M members' train states on a leading axis, holds
their frequency vectors ``[M, H/2]``, and runs one jitted step for all of them on a shared batch
(one process, one compile).

The partial-rotary permutation. A partial model (``variant="partial"``, R = 2·int(p·H//2))
rotates pair ``i < R/2`` = channels ``(i, i + R/2)`` at ``θ^(-2i/R)`` and passes channels
``R..H-1`` through. In the fused layout pair ``k`` is channels ``(k, k + H/2)``. With
``perm[k] = k`` and ``perm[k + H/2] = k + R/2`` for ``k < R/2`` (the pass-through channels
fill the remaining slots in order), the fused member's query/key projections are the run's
``[..., perm]`` and its frequency vector is ``θ^(-2k/R)`` on the first R/2 pairs, 0 elsewhere.
Attention scores are then identical, and so is training: the initialiser draws i.i.d. columns,
AdamW is elementwise, so the permuted member follows the run's trajectory exactly (tested in
``tests/test_fused.py``). Saving a member un-permutes its state, so its run directory is an
ordinary ``pe=partial`` run.

The model keeps its static ``RopeConfig``; inside the fused step each attention layer's ``rope``
is swapped (on the freshly merged, traced model only) for :class:`FrequencyRope`, which has the
same ``tables`` / ``apply_tables`` interface with the frequencies as a traced array. Nothing in
``rope_jax.model`` changes.

Shapes: M members, B batch rows, L length, H head dim.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rope_jax import rope as rope_lib
from rope_jax.config.schema import RopeConfig
from rope_jax.model import losses
from rope_jax.model import transformer as model_lib
from rope_jax.training import train_lib

ROTATED_PROJECTIONS = ("q_proj", "k_proj")  # Params whose last (head_dim) axis is rotated.


# Encodings as data -----------------------------------------------------------------------------

def member_encoding(rope: RopeConfig, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
  """The fused form of an encoding: ``(freqs [H/2] float64 rad/token, perm [H] int)``.

  ``freqs[k]`` is the frequency of split-half pair ``(k, k + H/2)`` (0 = identity); the fused
  member's channel ``j`` is the run's channel ``perm[j]`` (identity except for partial rotary).

  Raises:
    ValueError: a layout other than split-half, or position interpolation (scale_factor != 1).
  """
  rope.validate(head_dim)
  if rope.layout != "split_half":
    raise ValueError(f"The fused grid pairs channels split-half; got layout={rope.layout!r}.")
  if rope.scale_factor != 1.0:
    raise ValueError(f"The fused grid takes scale_factor=1 only, got {rope.scale_factor!r}.")
  freqs, rotary_dim = rope_lib.rotary_frequencies(head_dim, theta=rope.theta,
                                                  fraction=rope.fraction, variant=rope.variant)
  half = head_dim // 2
  if rotary_dim == head_dim:
    return freqs, np.arange(head_dim)
  r2 = rotary_dim // 2
  perm = np.empty(head_dim, np.int64)
  perm[:r2] = np.arange(r2)
  perm[half:half + r2] = np.arange(r2, rotary_dim)
  rest = np.concatenate([np.arange(r2, half), np.arange(half + r2, head_dim)])
  perm[rest] = np.arange(rotary_dim, head_dim)
  out = np.zeros(half)
  out[:r2] = freqs
  return out, perm


def _permute_tree(tree: Any, perm: jax.Array | np.ndarray) -> Any:
  """Applies ``x[..., perm]`` to every leaf under a ``q_proj`` / ``k_proj`` path."""

  def f(path, x):
    names = {getattr(p, "key", getattr(p, "name", None)) for p in path}
    if names & set(ROTATED_PROJECTIONS) and getattr(x, "ndim", 0) >= 1:
      return jnp.take(x, jnp.asarray(perm), axis=-1)
    return x

  return jax.tree_util.tree_map_with_path(f, tree)


def to_fused(tree: Any, perm: np.ndarray) -> Any:
  """A run's params (or optimizer state) in the fused channel order."""
  return _permute_tree(tree, perm)


def from_fused(tree: Any, perm: np.ndarray) -> Any:
  """The inverse of :func:`to_fused`: a fused member's tree in the run's channel order."""
  return _permute_tree(tree, np.argsort(perm))


@dataclasses.dataclass(frozen=True, eq=False)  # Hashed by identity (the model keys tables by it).
class FrequencyRope:
  """Duck-types ``RopeConfig.tables`` / ``apply_tables`` with a traced frequency vector.

  Attributes:
    freqs: ``[H/2]`` rad/token of the split-half pairs (0 = identity), a (traced) array.
  """

  freqs: jax.Array

  def tables(self, positions: jax.Array, head_dim: int, seq_len: int | None = None
             ) -> tuple[jax.Array, jax.Array]:
    """cos/sin ``[B, L, 1, H/2]`` float32 at ``positions [B, L]``. The angle is a float32
    product (the frequencies are traced, so rope.py's exact host-side angles do not apply; at
    the CPU grid's lengths, ≤ 256 positions, its error is below 1e-4 rad)."""
    del head_dim, seq_len
    angles = positions.astype(jnp.float32)[..., None] * self.freqs.astype(jnp.float32)
    return jnp.cos(angles)[..., None, :], jnp.sin(angles)[..., None, :]

  def apply_tables(self, x: jax.Array, tables: tuple[jax.Array, jax.Array]) -> jax.Array:
    return rope_lib.apply_rope_tables(x, tables, layout="split_half")

  def logit_scale(self) -> float:
    """No context-extension temperature in the grid's rows."""
    return 1.0


def with_frequencies(model: model_lib.Transformer, freqs: jax.Array) -> model_lib.Transformer:
  """Makes every attention layer of ``model`` (a fresh merge, in place) use ``freqs [H/2]``."""
  rope = FrequencyRope(freqs)  # One instance: the model computes its tables once.
  for block in model.blocks:
    block.attn.rope = rope
  return model


def forward(graphdef: nnx.GraphDef, params: Any, freqs: jax.Array,
            batch: dict[str, jax.Array]) -> jax.Array:
  """One member's logits ``[B, L, V]`` with its frequency vector ``freqs [H/2]``."""
  model = with_frequencies(nnx.merge(graphdef, params), freqs)
  out = model(batch["inputs"], batch["positions"], batch["segment_ids"])
  return out.logits


# Steps ------------------------------------------------------------------------------------------

def member_train_step(state: dict[str, Any], freqs: jax.Array, batch: dict[str, jax.Array], *,
                      graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                      schedule: optax.Schedule) -> tuple[dict[str, Any], dict[str, jax.Array]]:
  """``train_lib.train_step`` for one member with frequencies as data (no z-loss, no accum)."""

  def loss_fn(params):
    logits = forward(graphdef, params, freqs, batch)
    return losses.cross_entropy(logits, batch["targets"], batch["weights"])

  (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
  return train_lib.apply_gradients(state, grads, aux, optimizer=optimizer, schedule=schedule)


def member_eval_sums(params: Any, freqs: jax.Array, batch: dict[str, jax.Array], *,
                     graphdef: nnx.GraphDef) -> dict[str, jax.Array]:
  """Per-row sums of one member on ``batch`` ``[B, L]``.

  Returns:
    ``loss_sum [B]`` (Σ w·ce), ``weight_sum [B]`` (Σ w), ``correct_sum [B]`` (Σ w·[argmax =
    target]) and ``exact [B]`` (1.0 where every weighted token of the row is right, i.e. the
    whole answer; rows with no weight count as 0).
  """
  logits = forward(graphdef, params, freqs, batch)
  logits = logits.astype(jnp.float32)
  w = batch["weights"].astype(jnp.float32)
  ce = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(
      logits, batch["targets"][..., None], axis=-1)[..., 0]
  hit = (jnp.argmax(logits, -1) == batch["targets"])
  answered = w > 0
  exact = jnp.all(hit | ~answered, axis=-1) & jnp.any(answered, axis=-1)
  return {"loss_sum": jnp.sum(w * ce, -1), "weight_sum": jnp.sum(w, -1),
          "correct_sum": jnp.sum(w * hit, -1), "exact": exact.astype(jnp.float32)}


@dataclasses.dataclass(frozen=True)
class Member:
  """One run of a fused grid: a name, its encoding and its seed."""

  name: str
  rope: RopeConfig
  seed: int


class FusedGrid:
  """M runs of one model shape and schedule, trained as one vmapped, jitted program.

  Args:
    model_cfg: the shared shape (its ``rope`` is ignored: each member brings its own).
    train_cfg: the shared schedule (``grad_accum_steps`` 1, ``z_loss`` 0).
    members: the runs.
  """

  def __init__(self, model_cfg: model_lib.ModelConfig, train_cfg: train_lib.TrainConfig,
               members: Sequence[Member]):
    if not members:
      raise ValueError("A fused grid needs at least one member.")
    if train_cfg.grad_accum_steps != 1 or train_cfg.z_loss:
      raise ValueError("The fused grid supports grad_accum_steps=1 and z_loss=0 only, got "
                       f"{train_cfg.grad_accum_steps} and {train_cfg.z_loss}.")
    if model_cfg.global_rope is not None:
      raise ValueError("The fused grid gives every layer the member's encoding; "
                       "model.global_rope must be None.")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
      raise ValueError(f"Member names must be unique, got {names}.")
    self.model_cfg, self.train_cfg, self.members = model_cfg, train_cfg, tuple(members)
    encodings = [member_encoding(m.rope, model_cfg.head_dim) for m in members]
    self.freqs = jnp.asarray(np.stack([f for f, _ in encodings]), jnp.float32)  # [M, H/2]
    self.perms = np.stack([p for _, p in encodings])  # [M, H]
    self.optimizer, self.schedule = train_lib.make_optimizer(train_cfg)
    self.graphdef, _ = model_lib.abstract_model(model_cfg)
    step = functools.partial(member_train_step, graphdef=self.graphdef,
                             optimizer=self.optimizer, schedule=self.schedule)
    self._step = jax.jit(jax.vmap(step, in_axes=(0, 0, None)), donate_argnums=(0,))
    self._eval = jax.jit(jax.vmap(functools.partial(member_eval_sums, graphdef=self.graphdef),
                                  in_axes=(0, 0, None)))

  @property
  def size(self) -> int:
    return len(self.members)

  def init(self) -> dict[str, Any]:
    """The stacked fresh state: member i is ``train_lib.init_state(seed_i)`` in fused order."""

    def one(key, perm):
      model = model_lib.Transformer(self.model_cfg, rngs=nnx.Rngs(params=key))
      _, params = nnx.split(model, nnx.Param)
      params = _permute_tree(params, perm)
      return {"params": params, "opt_state": self.optimizer.init(params),
              "step": jnp.zeros((), jnp.int32)}

    keys = jnp.stack([jax.random.key(m.seed) for m in self.members])
    return jax.jit(jax.vmap(one))(keys, jnp.asarray(self.perms))

  def step(self, state: dict[str, Any], batch: dict[str, np.ndarray]
           ) -> tuple[dict[str, Any], dict[str, jax.Array]]:
    """One optimizer step of every member on the shared ``batch``; metrics are ``[M]``."""
    return self._step(state, self.freqs, _device_batch(batch))

  def eval_sums(self, params: Any, batch: dict[str, np.ndarray],
                freqs: jax.Array | None = None) -> dict[str, np.ndarray]:
    """:func:`member_eval_sums` of every member: ``[M, B]`` numpy arrays.

    ``freqs [M, H/2]`` replaces the members' own frequencies (band ablation at eval time).
    """
    f = self.freqs if freqs is None else jnp.asarray(freqs, jnp.float32)
    return jax.device_get(self._eval(params, f, _device_batch(batch)))

  def member_state(self, state: dict[str, Any], index: int) -> dict[str, Any]:
    """Member ``index``'s train state in its run's own channel order (host numpy)."""
    one = jax.tree.map(lambda x: np.asarray(x[index]), jax.device_get(state))
    return from_fused(one, self.perms[index])


def _device_batch(batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  return {k: jnp.asarray(batch[k], train_lib.BATCH_DTYPES[k]) for k in train_lib.BATCH_KEYS}


# Run directories --------------------------------------------------------------------------------

def write_run(workdir: str, state: dict[str, Any], config_json: dict[str, Any],
              records: Sequence[dict[str, Any]]) -> None:
  """Writes an ordinary run directory: ``checkpoints/<step>`` and ``metrics.jsonl``.

  Args:
    workdir: the run's directory (created).
    state: the member's un-permuted train state (``FusedGrid.member_state``).
    config_json: the run's experiment config as JSON (the checkpoint metadata's ``"config"``,
      what ``rope_jax.checkpoint.rundir`` rebuilds the model from).
    records: ``{"step", "split", <metric>: float}`` dicts, written in order.
  """
  from rope_jax.checkpoint import manager as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.checkpoint import rundir  # pylint: disable=g-import-not-at-top
  os.makedirs(workdir, exist_ok=True)
  step = int(state["step"])
  ckpt = checkpoint_lib.Checkpointer(rundir.checkpoint_dir(workdir), save_interval_steps=0,
                                     max_to_keep=1, async_save=False)
  try:
    ckpt.save(step, state, metadata={"config": config_json, "fused_grid": True}, force=True)
  finally:
    ckpt.close()
  with open(rundir.metrics_path(workdir), "w") as f:
    for rec in records:
      f.write(json.dumps(rec) + "\n")
