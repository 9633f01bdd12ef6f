"""Whole-answer exact match of a model on a probe task, at any length, with its 95% interval.

The probes' answer accuracy in ``evaluate.py`` counts answer tokens; the long-context probes are
scored per row (``rope_jax.data.scoring``): a passkey is found when all its digits are, an MQAR
row when every queried value is, a flip-flop row when every read is right. Rows come from the
task's fixed validation set (independent of any run's seed), so every model sees the same rows.

    model, config, step = rundir.load_model(workdir)
    probe_eval.score(model, config.data, task="probe_passkey", seq_len=512, num_examples=64,
                     settings={"passkey_depth": 0.5})
    probe_eval.passkey_grid(model, config.data, lengths=(128, 256, 512), depths=(0, .5, 1))
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from rope_jax.data import scoring
from rope_jax.model import transformer as model_lib


@functools.partial(jax.jit, static_argnums=0)
def _predict(graphdef: nnx.GraphDef, params: Any, batch: dict[str, jax.Array]) -> jax.Array:
  """Greedy next-token ids ``[B, L]`` (teacher forcing) for a batch of ``[B, L]`` arrays."""
  out = nnx.merge(graphdef, params)(batch["inputs"], batch["positions"], batch["segment_ids"])
  return jnp.argmax(out.logits, -1)


def probe_config(data_config: ml_collections.ConfigDict, task: str,
                 settings: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
  """A copy of ``data_config`` with ``task`` and ``data.long_probe`` ``settings`` (no mixture)."""
  cfg = ml_collections.ConfigDict(data_config.to_dict())
  cfg.task, cfg.mixture = task, ""
  for key, value in (settings or {}).items():
    if key not in cfg.long_probe:
      raise ValueError(f"Unknown long-probe setting {key!r}; known: {sorted(cfg.long_probe)}.")
    cfg.long_probe[key] = value
  from rope_jax.data import config as data_config_lib  # pylint: disable=g-import-not-at-top
  return data_config_lib.validate(cfg)


def solved(model: model_lib.Transformer, data_config: ml_collections.ConfigDict, *, task: str,
           seq_len: int, num_examples: int, batch_size: int = 32, start: int = 0,
           settings: Mapping[str, Any] | None = None) -> np.ndarray:
  """``[num_examples]`` bool: which validation rows the model answers exactly.

  Args:
    model: the decoder (e.g. ``rundir.load_model``).
    data_config: a ``config.data`` section (its probe settings are the defaults).
    task: a probe task, e.g. ``"probe_passkey"``, ``"probe_flipflop"``, ``"probe_copy"``.
    seq_len: row length in tokens.
    num_examples: rows to score: the validation rows ``start .. start + num_examples - 1``.
    batch_size: rows per forward pass.
    start: the first validation row (disjoint ranges give independent rows).
    settings: ``data.long_probe`` overrides, e.g. ``{"passkey_depth": 0.25}``.

  Raises:
    ValueError: a bad task or setting, or a token id outside the model's vocabulary.
  """
  from rope_jax.data import tasks  # pylint: disable=g-import-not-at-top
  if num_examples < 1 or batch_size < 1 or start < 0:
    raise ValueError(f"num_examples ({num_examples}) and batch_size ({batch_size}) must be >= 1 "
                     f"and start ({start}) >= 0.")
  if not task.startswith("probe_"):
    raise ValueError(f"Task {task!r} is not a probe; probe tasks: "
                     f"{[t for t in tasks.TASKS if t.startswith('probe_')]}.")
  cfg = probe_config(data_config, task, settings)
  kwargs = tasks.probe_kwargs(cfg, tasks.get_vocabulary(cfg))
  generator = tasks.probe_generator(task)
  batch_size = min(batch_size, num_examples)
  graphdef, params = nnx.split(model, nnx.Param)
  vocab = model.cfg.vocab_size
  out = []
  for first in range(start, start + num_examples, batch_size):  # full batches: one compile
    batch = generator.make_batch(task.removeprefix("probe_"), range(first, first + batch_size),
                                 seed=0, split="validation", seq_len=seq_len, **kwargs)
    if batch["inputs"].max() >= vocab:
      raise ValueError(f"Task {task!r} uses token id {int(batch['inputs'].max())} but the model's "
                       f"vocabulary has {vocab}; raise model.vocab_size or shrink the probe.")
    ids = _predict(graphdef, params, {k: jnp.asarray(v) for k, v in batch.items()})
    out.append(scoring.exact_match(np.asarray(ids), batch))
  return np.concatenate(out)[:num_examples]


def score(model: model_lib.Transformer, data_config: ml_collections.ConfigDict, **kwargs
          ) -> scoring.Score:
  """Exact-match accuracy with its Wilson 95% interval (arguments as :func:`solved`)."""
  return scoring.Score.of(solved(model, data_config, **kwargs))


def passkey_grid(model: model_lib.Transformer, data_config: ml_collections.ConfigDict, *,
                 lengths: Sequence[int], depths: Sequence[float], num_examples: int,
                 batch_size: int = 32) -> list[dict[str, Any]]:
  """The needle-in-a-haystack grid: one cell per (length, depth) with its :class:`Score`.

  Each depth gets its own validation rows (depth ``i``: rows ``i*n .. (i+1)*n - 1``), so cells
  pooled over depths are independent rows; each length reuses them (a paired comparison).

  Returns:
    ``[{"seq_len", "depth", "correct", "total", "accuracy", "lo", "hi"}, ...]``, lengths
    outer, depths inner.
  """
  cells = []
  for seq_len in lengths:
    for i, depth in enumerate(depths):
      s = score(model, data_config, task="probe_passkey", seq_len=int(seq_len),
                num_examples=num_examples, batch_size=batch_size, start=i * num_examples,
                settings={"passkey_depth": float(depth)})
      cells.append({"seq_len": int(seq_len), "depth": float(depth), **s.to_dict()})
  return cells
