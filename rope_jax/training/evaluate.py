"""Held-out evaluation of a model on any data task and length: perplexity and probe accuracy.

Used after training (the CPU Table 2 job, notebooks on restored checkpoints) to compare
positional encodings on the same fixed validation sets: the language-modelling perplexity at 1x,
2x and 4x the training length (length generalisation) and the exact-match accuracy of the
synthetic probes (positional: copy, reverse; semantic: associative recall). Validation
iterators do not depend on the run's seed, so every model sees the same tokens.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from rope_jax.model import losses
from rope_jax.model import transformer as model_lib


@functools.partial(jax.jit, static_argnums=0)
def _batch_sums(graphdef: nnx.GraphDef, params: Any, batch: dict[str, jax.Array]
                ) -> dict[str, jax.Array]:
  """Σ w·ce, Σ w and Σ w·[argmax = target] over one batch ([B, L] arrays)."""
  logits = nnx.merge(graphdef, params)(batch["inputs"], batch["positions"],
                                       batch["segment_ids"]).logits
  _, aux = losses.cross_entropy(logits, batch["targets"], batch["weights"])
  hits = (jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32) * batch["weights"]
  return {"loss_sum": aux["loss"] * aux["num_tokens"], "weight_sum": aux["num_tokens"],
          "correct_sum": hits.sum()}


def evaluate(model: model_lib.Transformer, data_config: ml_collections.ConfigDict, *,
             task: str, seq_len: int, batch_size: int, num_batches: int) -> dict[str, float]:
  """Mean loss, perplexity and token accuracy on the first ``num_batches`` validation batches.

  Args:
    model: the decoder (e.g. restored onto the host CPU).
    data_config: a ``config.data`` section; ``task`` replaces its task (mixture settings drop).
    task: a data task (``"offline"``, ``"probe_copy"``, ...).
    seq_len: row length in tokens.
    batch_size: rows per batch.
    num_batches: how many validation batches (a fixed set, independent of any seed).

  Returns:
    ``loss`` (nats per weighted target token), ``perplexity`` (e^loss), ``accuracy``
    (exact-match fraction of weighted targets: ``rope_jax.data.probes.accuracy`` summed over
    batches, i.e. the probes' answer accuracy) and ``tokens`` (Σ weights).
  """
  from rope_jax import data  # pylint: disable=g-import-not-at-top
  cfg = ml_collections.ConfigDict(data_config.to_dict())
  cfg.task, cfg.mixture = task, ""
  it = data.make_iterator(cfg, split="validation", global_batch_size=batch_size,
                          seq_len=seq_len, seed=0, process_index=0, process_count=1)
  graphdef, params = nnx.split(model, nnx.Param)
  totals = {"loss_sum": 0.0, "weight_sum": 0.0, "correct_sum": 0.0}
  for _ in range(num_batches):
    sums = _batch_sums(graphdef, params, {k: jnp.asarray(v) for k, v in next(it).items()})
    for k in totals:
      totals[k] += float(sums[k])
  w = max(totals["weight_sum"], 1.0)
  loss = totals["loss_sum"] / w
  return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)),
          "accuracy": totals["correct_sum"] / w, "tokens": totals["weight_sum"]}

