"""The paper's §4–5 measurements on a model over token prompts (the library behind
``python -m rope_jax.analyze``, ``experiments/frequency_usage_compare.py`` and
``experiments/gemma7b_analysis.py``).

    run = measure.load_run("/runs/tiny_rope")                 # parameters on the host CPU
    tokenizer = measure.run_tokenizer(run)
    prompts = measure.encode_prompts(tokenizer, measure.read_prompts(), run.model_config)
    m = measure.measure(run.model, prompts)                   # Measurement

A run is restored through ``rope_jax.checkpoint.rundir`` (never through the trainer). The model
is called in one place, :func:`_forward`, with ``return_intermediates=True`` (the training
computation, ``attention_impl="xla"``). Averages are over every real token of every prompt
(padding excluded). No matplotlib here: figures and files are ``rope_jax.analysis.report``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rope_jax import errors
from rope_jax.analysis import chunks as chunks_lib
from rope_jax.analysis import frequency_usage as frequency_usage_lib
from rope_jax.analysis import positional_heads as positional_heads_lib
from rope_jax.analysis import prompt_sets
from rope_jax.checkpoint import rundir
from rope_jax.data import text as text_lib
from rope_jax.model import generate as generate_lib
from rope_jax.model import transformer as model_lib

DEFAULT_PROMPTS = prompt_sets.path("shakespeare")
HEAD_KINDS = positional_heads_lib.HEAD_KINDS  # ("diagonal", "previous_token")
USAGE_NAMES = ("q", "k", "v")
# What the forward pass keeps of each layer's intermediates.
FORWARD_NAMES = (*USAGE_NAMES, "q_rot", "k_rot", "attn")
# The previous-token score needs a previous token.
MIN_PROMPT_TOKENS = 2


# ----------------------------------------------------------------------------------------------
# Inputs: the run, prompts, tokens.


def load_run(workdir: str, step: int | None = None, *, verify: bool = True,
             device: jax.Device | None = None) -> rundir.Restored:
  """Restores a run's parameters (``rundir.load``; the host CPU, or ``device``).

  Raises:
    errors.NoCheckpointError: no such workdir or step, no committed checkpoint, or none that
      reads back intact.
    ValueError: the checkpoint has no (valid) config metadata.
  """
  restored = rundir.load(workdir, step, verify=verify, device=device)
  return restored


def read_prompts(path: str | None = None) -> list[str]:
  """Prompts from a text file, one per line (blank and ``#`` lines skipped), or a shipped set by
  name (``prompt_sets.NAMES``: "shakespeare", "italian", ...); default: the Shakespeare quotes."""
  path = prompt_sets.resolve(path)
  if not os.path.isfile(path):
    raise errors.BadInputError(
        f"prompts file {path!r} does not exist (shipped sets: {', '.join(prompt_sets.NAMES)}).")
  with open(path, encoding="utf-8") as f:
    prompts = [line.strip() for line in f]
  prompts = [p for p in prompts if p and not p.startswith("#")]
  if not prompts:
    raise errors.BadInputError(
        f"prompts file {path!r} holds no prompt (one per line; '#' lines skipped).")
  return prompts


def run_tokenizer(restored: rundir.Restored, vocab: str = "") -> text_lib.Tokenizer:
  """The run's tokenizer (``text.load_tokenizer`` of its config; ``vocab`` overrides it: a
  SentencePiece path, e.g. Gemma's ``tokenizer.model``, or ``"bytes"``).

  Raises:
    errors.BadInputError: imported weights without a vocabulary, or a vocabulary larger than the
      model's embedding table.
    FileNotFoundError: the vocabulary file is missing.
  """
  data = restored.config.get("data")
  if restored.imported and not vocab and not (data and data.get("vocab_path")):
    raise errors.BadInputError(
        "this checkpoint holds imported weights (rope_jax.import_gemma) and its config names "
        "no vocabulary: pass --vocab_path=<the model's tokenizer.model>.")
  tokenizer = text_lib.load_tokenizer(vocab, restored.config)
  size = restored.model_config.vocab_size
  # Bytes: ids are checked per prompt (encode_prompts); ASCII fits a table of 128.
  if isinstance(tokenizer, text_lib.SentencePieceTokenizer) and tokenizer.vocab_size > size:
    raise errors.BadInputError(
        f"the vocabulary ({tokenizer.path}, {tokenizer.vocab_size} pieces) is larger than the "
        f"model's embedding table (model.vocab_size={size}): it is not this model's; pass "
        "--vocab_path.")
  return tokenizer


def encode_prompts(tokenizer: text_lib.Tokenizer, texts: Sequence[str],
                   cfg: model_lib.ModelConfig, *, add_bos: bool = True) -> list[list[int]]:
  """Token ids per prompt (BOS first); every prompt needs >= 2 tokens (a previous token)."""
  return text_lib.encode_prompts(tokenizer, texts, add_bos=add_bos, vocab_size=cfg.vocab_size,
                                 min_tokens=MIN_PROMPT_TOKENS)


def chunk_frequencies(cfg: model_lib.ModelConfig) -> np.ndarray | None:
  """``[H/2]`` rad/token of every chunk (0 = identity), or None if layers differ (global_rope)."""
  ropes = {cfg.layer_rope(l) for l in range(cfg.num_layers)}
  if len(ropes) != 1:
    return None
  return chunks_lib.chunk_frequencies(ropes.pop(), cfg.head_dim)


# ----------------------------------------------------------------------------------------------
# Measurement.


@dataclasses.dataclass
class Measurement:
  """What one pass over the prompts measured.

  Attributes:
    usage: ``{"q": [num_layers, N, H/2], "k"/"v": [num_layers, K, H/2]}`` float32 mean chunk
      2-norms over every real token, chunk 0 = highest frequency (activation units).
    scores: ``{"diagonal", "previous_token": [num_layers, N]}`` mean α_{i,i} / α_{i,i-1} over
      every query with a previous token (attention-weight units, 0..1): the *mean score*.
    min_scores: the same keys, the minimum over those queries: the paper's definition (a head is
      diagonal iff α_{i,i} > 1 - ε for every query, i.e. iff its min score > 1 - ε).
    attention: ``[num_layers, N, P, P]`` attention weights of prompt ``prompt_index`` (P tokens).
    prompt_index: which prompt ``attention`` is of.
    num_tokens: real tokens averaged over (``usage``).
    num_queries: queries averaged over (``scores``).
  """

  usage: dict[str, np.ndarray]
  scores: dict[str, np.ndarray]
  min_scores: dict[str, np.ndarray]
  attention: np.ndarray
  prompt_index: int
  num_tokens: int
  num_queries: int


def _forward(model: model_lib.Transformer):
  """Jitted ``(tokens, positions, segment_ids) -> per-layer {FORWARD_NAMES}``.

  The one call of the Transformer in rope_jax.analysis. The graph is a static argument of one
  module-level jit, so every pass over a model of one architecture and one batch shape reuses
  one compilation; the parameters are read from ``model`` when this is called.
  """
  graphdef, state = nnx.split(model)
  return lambda *args: _apply(graphdef, state, *args)


@functools.partial(jax.jit, static_argnums=(0,))
def _apply(graphdef, state, tokens, positions, segment_ids):
  inter = nnx.merge(graphdef, state)(tokens, positions, segment_ids,
                                     return_intermediates=True).intermediates
  return [{name: layer[name] for name in FORWARD_NAMES} for layer in inter]


@dataclasses.dataclass
class Batch:
  """One forward pass over prompts ``start .. start + B - 1`` (right-padded to a common length).

  Attributes:
    start: index of the batch's first prompt.
    tokens, mask: ``[B, L]`` int32 ids and bool validity (``generate.pad_prompts``).
    positions, segment_ids: ``[B, L]`` (``generate.prompt_layout``; padding has segment 0).
    layers: per layer ``{name: array}`` for ``FORWARD_NAMES`` (``[B, L, N|K, H]``; ``attn``
      ``[B, N, L, L]``).
  """

  start: int
  tokens: np.ndarray
  mask: np.ndarray
  positions: np.ndarray
  segment_ids: np.ndarray
  layers: list[dict[str, jax.Array]]


def batches(model: model_lib.Transformer, prompts: Sequence[Sequence[int]], *,
            batch_size: int = 16):
  """Yields a :class:`Batch` per ``batch_size`` prompts (the one forward loop of analysis)."""
  if not prompts:
    raise errors.BadInputError("measure needs at least one prompt.")
  if batch_size < 1:
    raise errors.BadInputError(f"batch_size must be >= 1, got {batch_size}.")
  forward = _forward(model)
  length = max(len(p) for p in prompts)
  for start in range(0, len(prompts), batch_size):
    tokens, mask = generate_lib.pad_prompts(list(prompts[start:start + batch_size]),
                                            side="right", length=length)
    positions, segment_ids, _ = generate_lib.prompt_layout(jnp.asarray(mask))
    layers = forward(jnp.asarray(tokens), positions, segment_ids)
    yield Batch(start, tokens, mask, np.asarray(positions), np.asarray(segment_ids), layers)


def measure(model: model_lib.Transformer, prompts: Sequence[Sequence[int]], *,
            batch_size: int = 16, prompt_index: int = 0) -> Measurement:
  """Frequency usage, positional-head scores and one prompt's attention over token prompts.

  Prompts are right-padded to the longest one and run ``batch_size`` at a time; batch means are
  combined weighted by their token (usage) or query (scores) counts, so the result is the mean
  over all prompts' tokens whatever the batching.

  Args:
    model: the model (``attention_impl="xla"``; parameters on the device to run on).
    prompts: token ids per prompt, each with at least 2 tokens.
    batch_size: prompts per forward pass.
    prompt_index: the prompt whose attention weights are kept.
  """
  if prompts and not 0 <= prompt_index < len(prompts):
    raise errors.BadInputError(
        f"prompt index must be in [0, {len(prompts)}), got {prompt_index}.")
  cfg = model.cfg
  ropes = [cfg.layer_rope(layer) for layer in range(cfg.num_layers)]
  sums: dict[str, np.ndarray] = {}
  mins: dict[str, np.ndarray] = {}
  num_tokens = num_queries = 0
  attention = None
  for batch in batches(model, prompts, batch_size=batch_size):
    start, mask, inter = batch.start, batch.mask, batch.layers
    chunk = prompts[start:start + len(mask)]
    n_tok = int(mask.sum())
    n_q = sum(len(p) - 1 for p in chunk)
    for name in USAGE_NAMES:
      per_layer = [np.asarray(frequency_usage_lib.mean_chunk_norms(values[name], mask, rope=rope))
                   for values, rope in zip(inter, ropes)]
      sums[name] = sums.get(name, 0.0) + np.stack(per_layer) * n_tok
    attn = [values["attn"] for values in inter]
    scores = positional_heads_lib.positional_head_scores(attn, mask, batch.segment_ids)
    for kind, value in scores.items():
      sums[kind] = sums.get(kind, 0.0) + np.asarray(value) * n_q
    lows = positional_heads_lib.positional_head_min_scores(attn, mask, batch.segment_ids)
    for kind, value in lows.items():
      mins[kind] = np.minimum(mins.get(kind, np.inf), np.asarray(value))
    num_tokens += n_tok
    num_queries += n_q
    if start <= prompt_index < start + len(chunk):
      row, p = prompt_index - start, len(prompts[prompt_index])
      attention = np.stack([np.asarray(values["attn"][row, :, :p, :p]) for values in inter])
  return Measurement(
      usage={name: (sums[name] / num_tokens).astype(np.float32) for name in USAGE_NAMES},
      scores={kind: (sums[kind] / num_queries).astype(np.float32) for kind in HEAD_KINDS},
      min_scores={kind: mins[kind].astype(np.float32) for kind in HEAD_KINDS},
      attention=attention, prompt_index=prompt_index, num_tokens=num_tokens,
      num_queries=num_queries)


def rounded(x: Any, digits: int = 5) -> list:
  """``x`` as nested lists of floats rounded to ``digits`` (for JSON)."""
  return np.round(np.asarray(x, np.float64), digits).tolist()


def top_heads(m: Measurement, k: int) -> dict[str, list[dict[str, Any]]]:
  """The ``k`` best heads of each kind with their q / k chunk norms (``[H/2]`` each).

  With K < N key/value heads, query head n reads key head ``n // (N / K)``.
  """
  num_heads, num_kv = m.usage["q"].shape[1], m.usage["k"].shape[1]
  out = {}
  for kind in HEAD_KINDS:
    scores = m.scores[kind]
    order = np.argsort(-scores, axis=None, kind="stable")[:k]
    entries = []
    for flat in order:
      layer, head = np.unravel_index(flat, scores.shape)
      kv_head = int(head) // (num_heads // num_kv)
      entries.append({"layer": int(layer), "head": int(head), "kv_head": kv_head,
                      "score": float(scores[layer, head]),
                      "q_usage": rounded(m.usage["q"][layer, head]),
                      "k_usage": rounded(m.usage["k"][layer, kv_head])})
    out[kind] = entries
  return out
