"""Files and figures of the §4–5 measurements, and the whole ``rope_jax.analyze`` job.

Every writer takes a ``measure.Measurement`` and the JSON header of its run (:func:`run_info`) and
returns the paths it wrote into ``out`` (heads and layers 0-indexed):

* :func:`write_frequency_usage` (SPEC §2b; Figs 3, 4, value control): ``frequency_usage.json``
  (``q``, ``k``, ``v``: ``[num_layers, heads, H/2]``; ``chunk_frequencies``: ``[H/2]``),
  ``frequency_usage.csv``, ``frequency_usage_layers.png`` (per layer, mean over heads) and
  ``frequency_usage_layer<L>_heads.png`` per head for each layer asked for.
* :func:`write_heads` (SPEC §2c): ``positional_heads.json`` (``diagonal``, ``previous_token``:
  the *mean* scores ``[num_layers, num_heads]``; ``strict``: the paper's definition, the min
  over queries; ``heads_strict`` / ``heads_above``: heads whose strict / mean score exceeds
  1 - epsilon; ``top``: the best heads of each kind with their q/k chunk norms),
  ``positional_heads.csv``, ``positional_heads.png`` (mean), ``positional_heads_strict.png``
  and ``positional_heads_top_frequency_usage.png``.
* :func:`write_patterns`: attention weights of one layer's heads on one prompt:
  ``attention_L<l>_prompt<p>.json`` / ``.csv`` and ``attention_L<l>H<h>_prompt<p>.png``.

:func:`analyze` restores a run, measures it and writes the analyses asked for (the CLI's job);
``cauchy_schwarz`` (Tables 3–5), ``head_types`` (BOS / marker heads, band contributions) and
``domains`` (Fig. 19) are written by ``report_heads``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from rope_jax import errors
from rope_jax.analysis import cauchy_schwarz
from rope_jax.analysis import head_types
from rope_jax.analysis import plots
from rope_jax.analysis import prompt_sets
from rope_jax.analysis import report_heads
from rope_jax.analysis import positional_heads as positional_heads_lib
from rope_jax.analysis.measure import HEAD_KINDS
from rope_jax.analysis.measure import Measurement
from rope_jax.analysis.measure import USAGE_NAMES
from rope_jax.analysis.measure import rounded
from rope_jax.analysis import measure as measure_lib
from rope_jax.analysis.files import short_title
from rope_jax.analysis.files import write_csv
from rope_jax.analysis.files import write_json
from rope_jax.analysis.files import write_markdown
from rope_jax.checkpoint import rundir
from rope_jax.config import presets

ANALYSES: tuple[str, ...] = ("frequency_usage", "heads", "patterns", "cauchy_schwarz",
                             "head_types", "domains")
USAGE_TITLES = {"q": "queries q", "k": "keys k", "v": "values v (control: never rotated)"}


def parse_analyses(spec: str | Sequence[str]) -> tuple[str, ...]:
  """``"heads,patterns"`` (or a list) -> validated names; BadInputError listing the valid ones."""
  names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
  names = [s for s in names if s]
  unknown = [s for s in names if s not in ANALYSES]
  if unknown or not names:
    raise errors.BadInputError(
        f"unknown analysis {', '.join(map(repr, unknown)) or '(none given)'}; "
        f"valid: {', '.join(ANALYSES)} (comma-separated for several).")
  return tuple(dict.fromkeys(names))


def run_info(restored: rundir.Restored, workdir: str, texts: Sequence[str],
             m: Measurement) -> dict[str, Any]:
  """The JSON header of every output: which run, step, encoding, prompts and token counts."""
  cfg = restored.model_config
  return {
      "workdir": workdir,
      "step": restored.step,
      "positional_encoding": presets.describe(cfg),
      "model": {"num_layers": cfg.num_layers, "num_heads": cfg.num_heads,
                "num_kv_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
                "rope": dataclasses.asdict(cfg.rope)},
      "num_prompts": len(texts),
      "num_tokens": m.num_tokens,
      "num_queries": m.num_queries,
      "prompts": list(texts),
  }


def write_frequency_usage(m: Measurement, info: Mapping[str, Any], out: str, *,
                          freqs: np.ndarray | None, layers: Sequence[int]) -> list[str]:
  """Fig. 3 (per layer) and Fig. 4 (per head of each of ``layers``) PNGs, JSON and CSV."""
  result = dict(info)
  result.update({
      "units": "mean 2-norm of each RoPE chunk of the pre-rotation activations "
               "(activation units); chunk 0 = highest frequency",
      "shapes": {name: list(m.usage[name].shape) for name in USAGE_NAMES},
      "chunk_frequencies": None if freqs is None else rounded(freqs, 10),
      **{name: rounded(m.usage[name]) for name in USAGE_NAMES},
  })
  paths = [write_json(os.path.join(out, "frequency_usage.json"), result)]
  rows = ((name, layer, head, chunk, "" if freqs is None else f"{freqs[chunk]:.6g}",
           f"{value:.6g}")
          for name in USAGE_NAMES
          for (layer, head, chunk), value in np.ndenumerate(m.usage[name]))
  paths.append(write_csv(os.path.join(out, "frequency_usage.csv"),
                          ("activation", "layer", "head", "chunk", "frequency_rad_per_token",
                           "mean_chunk_norm"), rows))
  title = short_title(info)
  fig = plots.plot_frequency_usage(
      {USAGE_TITLES[name]: m.usage[name].mean(axis=1) for name in USAGE_NAMES},
      row_label="layer", freqs=freqs,
      title=f"Frequency usage per layer (mean over heads and tokens)\n{title}")
  plots.integer_rows(fig)
  paths.append(plots.save_figure(fig, os.path.join(out, "frequency_usage_layers.png")))
  for layer in layers:
    fig = plots.plot_frequency_usage(
        {USAGE_TITLES[name]: m.usage[name][layer] for name in USAGE_NAMES},
        row_label="head", freqs=freqs,
        title=f"Frequency usage of layer {layer} per head (0-indexed; mean over tokens)\n{title}")
    plots.integer_rows(fig)
    if m.usage["k"].shape[1] != m.usage["q"].shape[1]:
      plots.label_rows(fig, {USAGE_TITLES[n]: ("key/value head", None) for n in ("k", "v")})
    paths.append(plots.save_figure(
        fig, os.path.join(out, f"frequency_usage_layer{layer}_heads.png")))
  return paths



def write_heads(m: Measurement, info: Mapping[str, Any], out: str, *,
                freqs: np.ndarray | None, epsilon: float, top_k: int) -> list[str]:
  """Positional-head scores (JSON, CSV, heatmaps) and the frequency usage of the top heads."""
  if not 0 < epsilon < 1:
    raise errors.BadInputError(f"epsilon must be in (0, 1), got {epsilon}.")
  if top_k < 1:
    raise errors.BadInputError(f"top_heads must be >= 1, got {top_k}.")
  best = measure_lib.top_heads(m, top_k)
  threshold = 1.0 - epsilon
  result = dict(info)
  result.update({
      "units": "attention weight (0..1) over the queries with a previous token",
      "definitions": {
          "strict": "the paper's definition: a head is diagonal iff α_{i,i} > 1 - ε (previous-"
                    "token: α_{i,i-1} > 1 - ε) for every query; strict score = the minimum "
                    "over queries, heads_strict = heads whose strict score > 1 - epsilon",
          "mean": "a separate, softer statistic: the mean over queries (keys 'diagonal', "
                  "'previous_token'; heads_above = heads whose mean score > 1 - epsilon)"},
      "shapes": {kind: list(m.scores[kind].shape) for kind in HEAD_KINDS},
      **{kind: rounded(m.scores[kind]) for kind in HEAD_KINDS},
      "strict": {kind: rounded(m.min_scores[kind]) for kind in HEAD_KINDS},
      "epsilon": epsilon,
      "heads_strict": {kind: [{"layer": l, "head": h, "strict_score": s} for l, h, s in
                              positional_heads_lib.heads_above(m.min_scores[kind], threshold)]
                       for kind in HEAD_KINDS},
      "heads_above": {kind: [{"layer": l, "head": h, "score": s} for l, h, s in
                             positional_heads_lib.heads_above(m.scores[kind], threshold)]
                      for kind in HEAD_KINDS},
      "chunk_frequencies": None if freqs is None else rounded(freqs, 10),
      "top": best,
  })
  paths = [write_json(os.path.join(out, "positional_heads.json"), result)]
  rows = ((layer, head, *(f"{scores[kind][layer, head]:.6g}" for scores in (m.scores, m.min_scores)
                          for kind in HEAD_KINDS))
          for (layer, head), _ in np.ndenumerate(m.scores["diagonal"]))
  paths.append(write_csv(os.path.join(out, "positional_heads.csv"),
                          ("layer", "head", "diagonal", "previous_token", "diagonal_strict",
                           "previous_token_strict"), rows))
  title = short_title(info)
  paths.append(plots.save_figure(
      plots.plot_head_scores(m.scores, title=f"Positional heads (0-indexed)\n{title}"),
      os.path.join(out, "positional_heads.png")))
  strict = {kind: m.min_scores[kind] for kind in HEAD_KINDS}
  paths.append(plots.save_figure(
      plots.plot_head_scores(strict, statistic="min",
                             title=f"Positional heads, the paper's definition: min over queries "
                                   f"(> 1 - ε for a head)\n{title}"),
      os.path.join(out, "positional_heads_strict.png")))
  labels, q_rows, k_rows = [], [], []
  for kind in HEAD_KINDS:
    for e in best[kind]:
      short = "diag" if kind == "diagonal" else "prev"
      labels.append(f"{short} L{e['layer']}H{e['head']} ({e['score']:.2f})")
      q_rows.append(e["q_usage"])
      k_rows.append(e["k_usage"])
  panels = {"queries q of the top heads": np.asarray(q_rows),
            "keys k of the top heads": np.asarray(k_rows)}
  fig = plots.plot_frequency_usage(
      panels, row_label="head", freqs=freqs,
      title=f"Frequency usage of the top {top_k} diagonal (diag) and previous-token (prev) "
            f"heads (score in brackets)\n{title}")
  plots.label_rows(fig, {name: ("head (kind, layer, head, score)", labels) for name in panels})
  paths.append(plots.save_figure(
      fig, os.path.join(out, "positional_heads_top_frequency_usage.png")))
  return paths


def write_patterns(m: Measurement, info: Mapping[str, Any], out: str, *, layer: int,
                   heads: Sequence[int], pieces: Sequence[str]) -> list[str]:
  """Attention weights ``[P, P]`` of ``heads`` of ``layer`` on one prompt: JSON, CSV, PNGs."""
  p = m.prompt_index
  attn = m.attention[layer]  # [N, P, P]
  stem = f"attention_L{layer}_prompt{p}"
  result = dict(info)
  result.update({
      "layer": layer, "heads": list(heads), "prompt_index": p,
      "prompt": info["prompts"][p] if "prompts" in info else None,
      "tokens": list(pieces),
      "units": "softmax attention weight α_ij (query i, key j; causal)",
      "shape": [len(heads), attn.shape[1], attn.shape[2]],
      "attention": [rounded(attn[h]) for h in heads],
      "scores_on_this_prompt": {
          kind: [float(np.mean(np.diagonal(attn[h], offset=-off)[1 - off:]))
                 for h in heads]
          for kind, off in positional_heads_lib.TARGET_OFFSET.items()},
  })
  paths = [write_json(os.path.join(out, f"{stem}.json"), result)]
  rows = ((h, i, j, pieces[i], pieces[j], f"{attn[h, i, j]:.6g}")
          for h in heads for i in range(attn.shape[1]) for j in range(i + 1))
  paths.append(write_csv(os.path.join(out, f"{stem}.csv"),
                          ("head", "query", "key", "query_token", "key_token", "weight"), rows))
  title = short_title(info)
  for h in heads:
    fig = plots.plot_attention(
        attn[h], pieces,
        title=f"Attention of layer {layer} head {h} (0-indexed), prompt {p}\n{title}")
    size = 0.16 * len(pieces)  # Room for one readable tick label per token.
    fig.set_size_inches(max(5.0, 2.8 + size), max(4.4, 2.2 + size))
    paths.append(plots.save_figure(fig, os.path.join(out, f"attention_L{layer}H{h}_prompt{p}.png")))
  return paths


# ----------------------------------------------------------------------------------------------
# The whole job.


def _check_index(name: str, value: int | None, size: int, what: str) -> None:
  if value is not None and not 0 <= value < size:
    raise errors.BadInputError(f"--{name}={value} is out of range: the model has {size} {what} "
                               f"(0-indexed, 0..{size - 1}).")


def analyze(workdir: str, analyses: str | Sequence[str], out: str, *, step: int | None = None,
            prompts: str | None = None, layer: int | None = None, head: int | None = None,
            prompt_index: int = 0, vocab_path: str = "", batch_size: int = 16,
            epsilon: float = 0.5, top_heads_k: int = 3, add_bos: bool = True,
            verify: bool = True, bands: int | str = 4, marker: str = "apostrophe",
            domains: str = "all") -> list[str]:
  """Restores ``workdir`` onto the host CPU, runs ``analyses`` and writes into ``out``.

  Arguments as the flags of ``python -m rope_jax.analyze``. Returns the written paths; writes
  nothing when an input is bad.

  Raises:
    errors.BadInputError (a ValueError): a bad analysis name, prompts file, index or vocabulary.
    errors.NoCheckpointError: no such workdir or step, or no checkpoint that reads back intact.
  """
  names = parse_analyses(analyses)
  if not 0 < epsilon < 1:
    raise errors.BadInputError(f"epsilon must be in (0, 1), got {epsilon}.")
  if top_heads_k < 1:
    raise errors.BadInputError(f"top_heads must be >= 1, got {top_heads_k}.")
  bands = report_heads.parse_bands(bands)
  if marker not in head_types.MARKER_KINDS:
    raise errors.BadInputError(
        f"--marker={marker!r} is not one of {', '.join(head_types.MARKER_KINDS)}.")
  try:
    domain_sets = prompt_sets.parse_names(domains)
  except ValueError as e:
    raise errors.BadInputError(f"--domains: {e}") from e
  texts = measure_lib.read_prompts(prompts)
  _check_index("prompt_index", prompt_index, len(texts), "prompts")
  _, cfg, _ = rundir.read_config(workdir, step)  # Metadata only: bad indices fail before loading.
  _check_index("layer", layer, cfg.num_layers, "layers")
  _check_index("head", head, cfg.num_heads, "query heads per layer")
  try:
    cauchy_schwarz.band_slices(cfg.head_dim // 2, bands)
  except ValueError as e:
    raise errors.BadInputError(f"--bands: {e}") from e
  host = jax.devices("cpu")[0]
  with jax.default_device(host):
    restored = measure_lib.load_run(workdir, step, verify=verify)
    tokenizer = measure_lib.run_tokenizer(restored, vocab_path)
    token_ids = measure_lib.encode_prompts(tokenizer, texts, cfg, add_bos=add_bos)
    m = measure_lib.measure(restored.model, token_ids, batch_size=batch_size,
                            prompt_index=prompt_index)
  info = run_info(restored, workdir, texts, m)
  freqs = measure_lib.chunk_frequencies(cfg)
  paths: list[str] = []
  os.makedirs(out, exist_ok=True)
  if "frequency_usage" in names:
    layers = [layer] if layer is not None else sorted({0, cfg.num_layers - 1})
    paths += write_frequency_usage(m, info, out, freqs=freqs, layers=layers)
  if "heads" in names:
    paths += write_heads(m, info, out, freqs=freqs, epsilon=epsilon, top_k=top_heads_k)
  if "patterns" in names:
    heads = [head] if head is not None else list(range(cfg.num_heads))
    pieces = [tokenizer.piece(t) for t in token_ids[prompt_index]]
    paths += write_patterns(m, info, out, layer=layer or 0, heads=heads, pieces=pieces)
  all_pieces = [[tokenizer.piece(t) for t in ids] for ids in token_ids]
  with jax.default_device(host):
    if "cauchy_schwarz" in names:
      paths += report_heads.cauchy_schwarz_job(
          restored.model, m, info, out, token_ids=token_ids, pieces=all_pieces[prompt_index],
          prompt_index=prompt_index, layer=layer, head=head, bands=bands)
    if "head_types" in names:
      paths += report_heads.head_types_job(
          restored.model, m, info, out, token_ids=token_ids, pieces=all_pieces,
          prompt_index=prompt_index, marker=marker, bands=bands, epsilon=epsilon,
          top_k=top_heads_k, batch_size=batch_size)
    if "domains" in names:
      paths += report_heads.domains_job(restored.model, info, out, tokenizer=tokenizer,
                                        sets=domain_sets, bands=bands, add_bos=add_bos,
                                        batch_size=batch_size)
  return paths
