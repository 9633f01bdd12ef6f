"""Inside one head of a model, and head types over prompts (Tables 3–5, App. E.1, T6HH).

    anatomy.head_anatomy(run.model, prompt_ids, layer=0, head=2, bands=4)   # HeadAnatomy
    anatomy.measure_head_types(run.model, prompts, pieces, marker="apostrophe")

:func:`head_anatomy` decomposes the attention logits of one head on one prompt into its RoPE
chunks (``cauchy_schwarz``): per (query, key) pair and chunk, the activation
``q_rot^{(k)} · k_rot^{(k)}`` and its Cauchy–Schwarz bound, summarised by pair kind (BOS,
diagonal, previous token, marker, other), and the per-band contribution to the logits. It checks
itself: ``logit_scale · Σ_k activation`` through a causal softmax must give the model's own
attention weights (``softmax_error``).

:func:`measure_head_types` scores every head as a BOS / attention-sink head and as a marker
(apostrophe / punctuation) head (``head_types``), mean and strict (min over queries).

The forward pass is ``measure.batches`` (the one call of the Transformer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from rope_jax import errors
from rope_jax.analysis import cauchy_schwarz as cs
from rope_jax.analysis import head_types as head_types_lib
from rope_jax.analysis import measure as measure_lib
from rope_jax.analysis import positional_heads as positional_heads_lib
from rope_jax.model import transformer as model_lib


def logit_scale(cfg: model_lib.ModelConfig) -> float:
  """The factor between ``q_rot · k_rot`` and the attention logit, as the model scales its
  queries (``ModelConfig.attention_scale()`` where the config has it, else ``H**-0.5``); checked
  against the model's own weights by ``softmax_error``."""
  scale = getattr(cfg, "attention_scale", None)
  return float(scale()) if callable(scale) else float(cfg.head_dim) ** -0.5


@dataclasses.dataclass
class HeadAnatomy:
  """One head on one prompt of P tokens, decomposed into its RoPE chunks.

  Attributes:
    layer, head, kv_head: 0-indexed (query head ``head`` reads key head ``kv_head``).
    activations: float32 ``[P, P, H/2]`` per-chunk ``q_rot_i^{(k)} · k_rot_j^{(k)}`` (all pairs;
      only ``codes >= 0`` count).
    bounds: float32 ``[P, P, H/2]`` ``‖q_i^{(k)}‖ ‖k_j^{(k)}‖``.
    codes, kinds: :func:`cauchy_schwarz.pair_kinds` (BOS, diagonal, previous, marker, other).
    summary: :func:`cauchy_schwarz.summarize_by_kind` per chunk.
    bands: the chunk bands ``[(start, stop)]``.
    band_logits: float64 ``[P, P, num_bands]`` contribution of each band to the logit
      (``logit_scale`` × the band's activation); their sum is the logit.
    band_by_kind: ``{kind: [num_bands]}`` mean band contribution over the pairs of a kind.
    attention: float32 ``[P, P]`` the model's own attention weights of this head.
    softmax_error: max |causal softmax(Σ band_logits) − attention| (≈ 1e-6 when the
      decomposition is the model's logit).
    logit_scale: the scale used.
  """

  layer: int
  head: int
  kv_head: int
  activations: np.ndarray
  bounds: np.ndarray
  codes: np.ndarray
  kinds: tuple[str, ...]
  summary: dict
  bands: list[tuple[int, int]]
  band_logits: np.ndarray
  band_by_kind: dict[str, np.ndarray]
  attention: np.ndarray
  softmax_error: float
  logit_scale: float


def head_anatomy(model: model_lib.Transformer, prompt: Sequence[int], *, layer: int, head: int,
                 bands: int | str = 4, markers: Sequence[bool] | None = None) -> HeadAnatomy:
  """Decomposes head ``head`` of layer ``layer`` on ``prompt`` (BOS first) by chunk and band.

  Args:
    model: the model (``attention_impl="xla"``).
    prompt: token ids, at least 2.
    layer, head: 0-indexed query head.
    bands: :func:`cauchy_schwarz.band_slices` spec (number of equal bands or ``"0:4,4:32"``).
    markers: optional bool ``[P]`` marker tokens (a ``"marker"`` pair kind).
  """
  (batch,) = list(measure_lib.batches(model, [list(prompt)], batch_size=1))
  return decompose(model.cfg, batch, 0, layer=layer, head=head, bands=bands, markers=markers)


def decompose(cfg: model_lib.ModelConfig, batch: measure_lib.Batch, row: int, *, layer: int,
              head: int, bands: int | str = 4,
              markers: Sequence[bool] | None = None) -> HeadAnatomy:
  """:func:`head_anatomy` of prompt ``row`` of a forward pass already made (``measure.batches``)."""
  if not 0 <= layer < cfg.num_layers:
    raise errors.BadInputError(f"layer must be in [0, {cfg.num_layers}), got {layer}.")
  if not 0 <= head < cfg.num_heads:
    raise errors.BadInputError(f"head must be in [0, {cfg.num_heads}), got {head}.")
  p = int(batch.mask[row].sum())
  if p < 2:
    raise errors.BadInputError(f"the prompt needs >= 2 tokens, got {p}.")
  rope = cfg.layer_rope(layer)
  band_list = cs.band_slices(cfg.head_dim // 2, bands)
  values = batch.layers[layer]
  kv_head = head // (cfg.num_heads // cfg.num_kv_heads)
  q_rot = np.asarray(values["q_rot"][row, :p, head], np.float32)
  k_rot = np.asarray(values["k_rot"][row, :p, kv_head], np.float32)
  act = np.asarray(cs.chunk_activations(q_rot, k_rot, rope=rope))
  bound = np.asarray(cs.chunk_bounds(np.asarray(values["q"][row, :p, head]),
                                     np.asarray(values["k"][row, :p, kv_head]), rope=rope))
  codes, kinds = cs.pair_kinds(p, bos=True, markers=markers)
  scale = logit_scale(cfg)
  band_logits = scale * cs.band_sums(act.astype(np.float64), band_list)
  attention = np.asarray(values["attn"][row, head, :p, :p], np.float32)
  recomputed = np.asarray(positional_heads_lib.causal_attention(band_logits.sum(-1)))
  return HeadAnatomy(
      layer=layer, head=head, kv_head=kv_head, activations=act, bounds=bound, codes=codes,
      kinds=kinds, summary=cs.summarize_by_kind(act, bound, codes, kinds), bands=band_list,
      band_logits=band_logits, band_by_kind=cs.contributions_by_kind(band_logits, codes, kinds),
      attention=attention, softmax_error=float(np.max(np.abs(recomputed - attention))),
      logit_scale=scale)


@dataclasses.dataclass
class HeadTypeMeasurement:
  """Head-type scores of every head over prompts.

  Attributes:
    scores: ``{"bos", "marker": head_types.TypeScores}`` (``.mean`` / ``.strict``
      ``[num_layers, N]``).
    marker: the marker kind (``head_types.MARKER_KINDS``).
    num_after_marker: queries that follow a marker (0: the marker score is the BOS score).
    markers: per prompt, bool ``[P]`` marker tokens.
  """

  scores: dict[str, head_types_lib.TypeScores]
  marker: str
  num_after_marker: int
  markers: list[np.ndarray]


def measure_head_types(model: model_lib.Transformer, prompts: Sequence[Sequence[int]],
                       pieces: Sequence[Sequence[str]], *, marker: str = "apostrophe",
                       batch_size: int = 16) -> HeadTypeMeasurement:
  """BOS and marker head scores of every head over token prompts (``pieces``: their pieces)."""
  if len(pieces) != len(prompts) or any(len(a) != len(b) for a, b in zip(prompts, pieces)):
    raise errors.BadInputError("pieces must hold one piece per token of every prompt.")
  markers = [head_types_lib.marker_tokens(ps, marker) for ps in pieces]
  scores = {kind: head_types_lib.TypeScores() for kind in head_types_lib.HEAD_TYPES}
  after = 0
  for batch in measure_lib.batches(model, prompts, batch_size=batch_size):
    mask = batch.mask
    rows = np.zeros(mask.shape, bool)
    for r, m in enumerate(markers[batch.start:batch.start + len(mask)]):
      rows[r, :len(m)] = m
    attn = [np.asarray(values["attn"]) for values in batch.layers]
    queries = head_types_lib.query_mask(mask)
    scores["bos"].add(attn, head_types_lib.bos_targets(mask), queries)
    scores["marker"].add(attn, head_types_lib.marker_targets(rows, mask), queries)
    after += int((rows[:, :-1] & queries[:, 1:]).sum())
  return HeadTypeMeasurement(scores=scores, marker=marker, num_after_marker=after,
                             markers=markers)
