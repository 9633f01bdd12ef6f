"""Starting a run from another run's parameters: ``checkpoint.init_from=<workdir>[:step]``.

Continued pre-training (e.g. RoPE -> p-RoPE, the paper's rebuttal experiment) starts a new run,
in its own workdir, from the parameters of another run's checkpoint; the optimizer state and the
step counter start fresh (warm-up and schedule from step 0), and the positional encoding (or any
other setting that keeps the parameter shapes) may differ. Only a run with no checkpoint of its
own is initialised this way: a resumed run continues from its own checkpoints.

The parameters are read through ``rope_jax.checkpoint`` straight into the new run's shardings
(any mesh wrote them, any mesh reads them); the source's config (in its checkpoint metadata) must
give the same parameter tree, else a ``BadInputError`` names the first parameter that differs.
"""

from __future__ import annotations

from typing import Any

import jax

from rope_jax import errors
from rope_jax.checkpoint import manager as checkpoint_lib
from rope_jax.checkpoint import rundir


def parse_spec(spec: str) -> tuple[str, int | None]:
  """``"<workdir>[:step]"`` -> ``(workdir, step or None)`` (``gs://`` paths keep their colon)."""
  if not isinstance(spec, str) or not spec.strip():
    raise errors.BadInputError(f"checkpoint.init_from must be '<workdir>[:step]', got {spec!r}.")
  head, sep, tail = spec.rpartition(":")
  if sep and tail.isdigit() and head and not head.endswith(":"):
    return head, int(tail)
  return spec, None


def _shapes(tree: Any) -> dict[str, str]:
  """``{path: "(d0, d1) dtype"}`` of a parameter tree's leaves."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): f"{tuple(x.shape)} {x.dtype}" for path, x in leaves}


def check_compatible(source: Any, target: Any, where: str) -> None:
  """Raises ValueError unless two (abstract) parameter trees have the same paths and shapes."""
  a, b = _shapes(source), _shapes(target)
  for path in sorted(set(a) | set(b)):
    if a.get(path) != b.get(path):
      raise errors.BadInputError(
          f"checkpoint.init_from: {where} has parameter {path} as "
          f"{a.get(path, 'missing')} but this run needs {b.get(path, 'missing')}; only "
          "settings that keep the parameter shapes (e.g. the positional encoding) may differ.")


def load_params(spec: str, abstract_params: Any) -> tuple[int, Any]:
  """``(step, params)`` of the run ``spec`` names, restored into ``abstract_params``' shardings.

  Args:
    spec: ``"<workdir>[:step]"``; no step = the newest intact checkpoint.
    abstract_params: the new run's parameters as ``jax.ShapeDtypeStruct`` with their shardings
      (``Setup.abstract_state["params"]``).

  Raises:
    errors.BadInputError (a ValueError): a bad spec, no such workdir / checkpoint / step, or a
      source whose parameters differ in shape.
  """
  workdir, step = parse_spec(spec)
  try:
    _, model_cfg, _ = rundir.read_config(workdir, step)
  except FileNotFoundError as e:  # errors.NoCheckpointError: here a bad setting
    raise errors.BadInputError(f"checkpoint.init_from={spec!r}: {e}") from e
  where = f"{workdir}" + (f" step {step}" if step is not None else "")
  check_compatible(rundir.abstract_params(model_cfg)[1], abstract_params, where)
  ckpt = checkpoint_lib.Checkpointer.for_reading(rundir.existing_checkpoint_dir(workdir))
  try:
    step, params, _ = ckpt.restore_params(abstract_params, step)
  finally:
    ckpt.close()
  return int(step), params


def warm_start(state: dict[str, Any], abstract_params: Any, spec: str) -> dict[str, Any]:
  """A fresh train ``state`` with its ``params`` replaced by those of ``spec``'s checkpoint."""
  _, params = load_params(spec, abstract_params)
  return {**state, "params": params}
