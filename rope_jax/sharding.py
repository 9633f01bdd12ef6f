"""Device mesh, logical-axis rules and the layouts of params, optimizer state and batches.

The mesh has three axes, MaxText style:

* ``data``: pure data parallelism (parameters replicated).
* ``fsdp``: data parallelism with parameters and optimizer state sharded (ZeRO-3 / FSDP).
* ``tensor``: tensor (model) parallelism over heads, MLP width and vocabulary.

Each axis has an ICI size (devices within a slice, ``mesh.data`` …) and a DCN size (slices,
``mesh.dcn_data`` …); the device mesh axis is their product. Every parameter names its
dimensions logically (``("embed", "mlp")``, see ``rope_jax.model.transformer``) and the config's
``mesh.logical_axis_rules`` maps logical names to mesh axes. A mesh axis that does not divide a
dimension is dropped for that dimension (e.g. one MQA key/value head is replicated over
``tensor``), so any rule set gives a valid layout.

Activations are constrained through :func:`constrain`, which the model calls with logical names;
it is a no-op unless a mesh and rules are active (:func:`activate`), so the model runs unchanged
outside of training (analysis, tests).
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Any, Iterator, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

# The mesh section, its axes and the default rules live in rope_jax.config.schema (re-exported).
from rope_jax.config.schema import (  # pylint: disable=unused-import
    DEFAULT_RULES, MESH_AXES, MeshConfig, normalize_rules)


def resolve_mesh_shape(cfg: MeshConfig,
                       num_devices: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """The (ICI, DCN) shapes with -1 filled in; raises ValueError if they don't cover the devices.

  Returns:
    ``(ici_shape, dcn_shape)``, each ``(data, fsdp, tensor)``; their elementwise product is the
    device mesh shape and its size equals ``num_devices``.
  """
  dcn = cfg.dcn_shape
  ici = list(cfg.ici_shape)
  num_slices = math.prod(dcn)
  if num_devices % num_slices:
    raise ValueError(f"{num_devices} devices cannot form {num_slices} slices "
                     f"(mesh.dcn_* = {dcn}).")
  per_slice = num_devices // num_slices
  if -1 in ici:
    known = math.prod(s for s in ici if s != -1)
    if per_slice % known:
      raise ValueError(
          f"mesh (data, fsdp, tensor) = {tuple(ici)} with -1: {per_slice} devices per slice "
          f"are not divisible by {known}.")
    ici[ici.index(-1)] = per_slice // known
  size = math.prod(ici) * num_slices
  if size != num_devices:
    raise ValueError(
        f"Mesh size {size} (ICI (data, fsdp, tensor) = {tuple(ici)} x DCN {dcn}) != device count "
        f"{num_devices}; set mesh.data/fsdp/tensor (one may be -1) to cover all devices.")
  return tuple(ici), dcn


def make_mesh(cfg: MeshConfig, devices: Sequence[Any] | None = None) -> Mesh:
  """The device mesh with axes ``("data", "fsdp", "tensor")``, all ``AxisType.Auto``.

  Args:
    cfg: the mesh section.
    devices: devices to use (default ``jax.devices()``; AOT passes a TPU topology's devices).
  """
  devices = list(jax.devices() if devices is None else devices)
  ici, dcn = resolve_mesh_shape(cfg, len(devices))
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  if math.prod(dcn) == 1:
    return jax.make_mesh(ici, MESH_AXES, axis_types=axis_types, devices=devices)
  from jax.experimental import mesh_utils  # pylint: disable=g-import-not-at-top
  grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices)
  return Mesh(grid, MESH_AXES, axis_types=axis_types)


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int],
                    rules: Sequence[tuple[str, tuple[str, ...]]],
                    mesh_shape: dict[str, int]) -> PartitionSpec:
  """Maps logical axis names of an array to a ``PartitionSpec`` over the mesh.

  A mesh axis is used at most once per array and only where it divides the dimension; axes of
  size 1 are dropped. ``None`` names are replicated.

  Raises:
    ValueError: a name without a rule (all names must be covered by the config's rules).
  """
  if len(names) != len(shape):
    raise ValueError(f"Logical names {tuple(names)} do not match shape {tuple(shape)}.")
  table = dict(rules)
  used: set[str] = set()
  spec: list[Any] = []
  for name, dim in zip(names, shape):
    if name is None:
      spec.append(None)
      continue
    if name not in table:
      raise ValueError(f"Logical axis {name!r} has no rule in mesh.logical_axis_rules; "
                       f"known: {sorted(table)}.")
    axes = []
    for axis in table[name]:
      size = mesh_shape.get(axis, 1)
      if axis in used or size == 1:
        continue
      if dim % (math.prod(mesh_shape[a] for a in axes) * size):
        continue
      axes.append(axis)
    used.update(axes)
    spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
  while spec and spec[-1] is None:
    spec.pop()
  return PartitionSpec(*spec)


def _is_spec(x: Any) -> bool:
  return isinstance(x, PartitionSpec)


def logical_names_tree(abstract_params: Any) -> Any:
  """The logical axis names of each parameter (``nnx.get_partition_spec`` without rules)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  with nnx.logical_axis_rules(()):
    return nnx.get_partition_spec(abstract_params)


def param_shardings(abstract_params: Any, mesh: Mesh,
                    rules: Sequence[tuple[str, tuple[str, ...]]]) -> Any:
  """``NamedSharding`` per parameter (same tree as ``abstract_params``) from logical names."""
  names = logical_names_tree(abstract_params)
  mesh_shape = dict(mesh.shape)
  return jax.tree.map(
      lambda spec, x: NamedSharding(mesh, logical_to_spec(tuple(spec), x.shape, rules,
                                                          mesh_shape)),
      names, abstract_params, is_leaf=_is_spec)


def batch_axes(mesh: Mesh, rules: Sequence[tuple[str, tuple[str, ...]]]) -> tuple[str, ...]:
  """Mesh axes the batch dimension is split over (the ``batch`` rule, size-1 axes dropped)."""
  table = dict(rules)
  if "batch" not in table:
    raise ValueError("mesh.logical_axis_rules needs a 'batch' rule (e.g. ('batch', "
                     "('data', 'fsdp'))).")
  return tuple(a for a in table["batch"] if mesh.shape[a] > 1)


def check_batch(global_batch_size: int, mesh: Mesh,
                rules: Sequence[tuple[str, tuple[str, ...]]], *, what: str = "train",
                process_count: int = 1) -> None:
  """Raises ValueError unless the batch splits evenly over the data axes and the processes."""
  axes = batch_axes(mesh, rules)
  ways = math.prod(mesh.shape[a] for a in axes)
  if global_batch_size % ways:
    raise ValueError(
        f"{what}.global_batch_size={global_batch_size} is not divisible by the data-parallel "
        f"mesh axes {dict((a, mesh.shape[a]) for a in axes)} (product {ways}); use a multiple "
        f"of {ways}.")
  if global_batch_size % process_count:
    raise ValueError(f"{what}.global_batch_size={global_batch_size} is not divisible by the "
                     f"process count {process_count}.")


def batch_sharding(mesh: Mesh, rules: Sequence[tuple[str, tuple[str, ...]]]) -> NamedSharding:
  """Sharding of ``[B, L]`` batch arrays: B over the ``batch`` rule's axes, L replicated."""
  axes = batch_axes(mesh, rules)
  return NamedSharding(mesh, PartitionSpec(axes if axes else None))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


# Activation constraints ----------------------------------------------------------------------

class _Active(threading.local):
  rules: tuple[tuple[str, tuple[str, ...]], ...] = ()


_active = _Active()


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Sequence[tuple[str, tuple[str, ...]]]) -> Iterator[None]:
  """Within this context (while tracing), :func:`constrain` lays activations out on ``mesh``."""
  prev = _active.rules
  _active.rules = tuple(rules)
  try:
    with jax.set_mesh(mesh):
      yield
  finally:
    _active.rules = prev


def active_spec(names: Sequence[str | None], shape: Sequence[int]) -> PartitionSpec | None:
  """The ``PartitionSpec`` of logical ``names`` under :func:`activate`; None outside it."""
  rules = _active.rules
  mesh = jax.sharding.get_abstract_mesh()
  if not rules or mesh.empty:
    return None
  return logical_to_spec(names, shape, rules, dict(mesh.shape))


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """``with_sharding_constraint`` by logical names; identity outside :func:`activate`."""
  spec = active_spec(names, x.shape)
  if spec is None:
    return x
  return jax.lax.with_sharding_constraint(
      x, NamedSharding(jax.sharding.get_abstract_mesh(), spec))


def make_global_batch(local: dict[str, np.ndarray], sharding: NamedSharding,
                      global_batch_size: int) -> dict[str, jax.Array]:
  """Process-local numpy rows -> global ``jax.Array``s (``[B_global, ...]``) on ``sharding``."""
  out = {}
  for k, v in local.items():
    shape = (global_batch_size,) + tuple(v.shape[1:])
    out[k] = jax.make_array_from_process_local_data(sharding, v, shape)
  return out


def process_rows(sharding: NamedSharding, global_batch_size: int) -> tuple[int, int]:
  """The contiguous ``[start, stop)`` batch rows this process's devices hold."""
  idx = sharding.addressable_devices_indices_map((global_batch_size, 1))
  starts = [s[0].start or 0 for s in idx.values()]
  stops = [global_batch_size if s[0].stop is None else s[0].stop for s in idx.values()]
  return min(starts), max(stops)
