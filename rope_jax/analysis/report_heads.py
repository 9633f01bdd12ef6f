"""Files and figures of the head anatomy, head types and domain ablation (``rope_jax.analyze``).

Writers (heads and layers 0-indexed; each returns the paths it wrote into ``out``):

* :func:`write_cauchy_schwarz` (Tables 3–5): ``cauchy_schwarz_L<l>H<h>_prompt<p>.{json,csv,md,png}``
  and ``..._tokens.csv``: per pair kind and chunk, the activation ``q^{(k)}·k^{(k)}`` against
  its bound ``‖q^{(k)}‖‖k^{(k)}‖``; per query token its BOS / diagonal / previous-token pair.
* :func:`write_head_types` (T6HH; App. E.1): ``head_types.{json,csv,png}`` (BOS / sink and
  marker heads, mean and strict scores) and ``head_bands.{csv,png}`` (per-band logit
  contributions of the top head of every type: which bands carry what).
* :func:`write_domains` (Fig. 19): ``domains_frequency_usage.png``, ``domains_profiles.png``,
  ``domains.{json,csv,md}``: frequency usage per shipped prompt set and its cosine similarity to
  the first set's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rope_jax.analysis import anatomy as anatomy_lib
from rope_jax.analysis import cauchy_schwarz as cs
from rope_jax.analysis import chunks
from rope_jax.analysis import compare as compare_lib
from rope_jax.analysis import plots
from rope_jax.analysis import plots_heads
from rope_jax.analysis import measure as measure_lib
from rope_jax.analysis.measure import Measurement
from rope_jax.analysis.measure import rounded
from rope_jax.analysis.files import short_title
from rope_jax.analysis.files import write_csv
from rope_jax.analysis.files import write_json
from rope_jax.analysis.files import write_markdown


def _summary_json(summary: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
  return {kind: {key: (int(v) if key == "count" else rounded(v)) for key, v in s.items()}
          for kind, s in summary.items()}


def band_labels(bands: Sequence[tuple[int, int]], freqs: np.ndarray | None) -> list[str]:
  return [cs.band_label(b, freqs) for b in bands]


def write_cauchy_schwarz(a: anatomy_lib.HeadAnatomy, info: Mapping[str, Any], out: str, *,
                         freqs: np.ndarray | None, pieces: Sequence[str],
                         prompt_index: int) -> list[str]:
  """Tables 3–5 for one head on one prompt: JSON, CSV (per kind × chunk), tokens CSV, MD, PNG."""
  stem = os.path.join(out, f"cauchy_schwarz_L{a.layer}H{a.head}_prompt{prompt_index}")
  labels = band_labels(a.bands, freqs)
  result = dict(info)
  result.update({
      "layer": a.layer, "head": a.head, "kv_head": a.kv_head, "prompt_index": prompt_index,
      "tokens": list(pieces),
      "units": "activation = q_rot^(k)·k_rot^(k) (raw dot product of the rotated chunks); "
               "bound = ‖q^(k)‖‖k^(k)‖ (Cauchy–Schwarz); logit contribution = logit_scale × "
               "activation summed over a band; chunk 0 = highest frequency",
      "logit_scale": a.logit_scale, "softmax_error": a.softmax_error,
      "chunk_frequencies": None if freqs is None else rounded(freqs, 10),
      "pair_kinds": list(a.kinds), "summary": _summary_json(a.summary),
      "bands": [list(b) for b in a.bands], "band_labels": labels,
      "band_logit_contribution_by_kind": {k: rounded(v) for k, v in a.band_by_kind.items()},
  })
  paths = [write_json(stem + ".json", result)]
  paths.append(write_csv(stem + ".csv", ("kind", "chunk", "frequency_rad_per_token", "pairs",
                                         "mean_activation", "mean_bound", "alignment",
                                         "mean_cosine"), cs.table_rows(a.summary, freqs)))
  rows = []
  p = len(pieces)
  for i in range(1, p):
    for kind, j in (("bos", 0), ("previous_token", i - 1), ("diagonal", i)):
      if kind == "previous_token" and j == 0:
        continue
      act, bound = a.activations[i, j], a.bounds[i, j]
      rows.append((i, pieces[i], kind, j, pieces[j], f"{act.sum():.6g}", f"{bound.sum():.6g}",
                   f"{a.attention[i, j]:.6g}",
                   *(f"{act[s:e].sum():.6g}/{bound[s:e].sum():.6g}" for s, e in a.bands)))
  paths.append(write_csv(stem + "_tokens.csv",
                         ("query", "query_token", "kind", "key", "key_token", "activation",
                          "bound", "attention", *(f"{l} act/bound" for l in labels)), rows))
  md_rows = []
  for kind, s in a.summary.items():
    if not s["count"]:
      continue
    per_band = [f"{s['activation'][b0:b1].sum():.3g} / {s['bound'][b0:b1].sum():.3g}"
                for b0, b1 in a.bands]
    md_rows.append((kind, s["count"], f"{s['total_activation']:.4g}", f"{s['total_bound']:.4g}",
                    *per_band))
  paths.append(write_markdown(stem + ".md", ("pair kind", "pairs", "mean Σ_k q⁽ᵏ⁾·k⁽ᵏ⁾",
                                             "mean Σ_k ‖q⁽ᵏ⁾‖‖k⁽ᵏ⁾‖",
                                             *(f"{l}: act / bound" for l in labels)), md_rows))
  fig = plots_heads.plot_cauchy_schwarz(
      a.summary, a.band_by_kind, labels,
      title=f"Layer {a.layer} head {a.head} (key head {a.kv_head}), prompt {prompt_index}: "
            f"per-frequency activation vs Cauchy–Schwarz bound\n{short_title(info)}")
  paths.append(plots.save_figure(fig, stem + ".png"))
  return paths


def _top(values: np.ndarray, k: int) -> list[tuple[int, int, float]]:
  values = np.nan_to_num(np.asarray(values, np.float64), nan=-np.inf)
  order = np.argsort(-values, axis=None, kind="stable")[:k]
  return [(int(l), int(h), float(values[l, h]))
          for l, h in (np.unravel_index(f, values.shape) for f in order)]


def write_head_types(htm: anatomy_lib.HeadTypeMeasurement, m: Measurement,
                     info: Mapping[str, Any], out: str, *,
                     anatomies: Sequence[tuple[str, int, anatomy_lib.HeadAnatomy]],
                     freqs: np.ndarray | None, epsilon: float, top_k: int) -> list[str]:
  """BOS / marker head scores (mean and strict) and the band contributions of the top heads.

  Args:
    htm: :func:`anatomy.measure_head_types`.
    m: the measurement (its diagonal / previous-token scores are shown beside).
    anatomies: ``(type, prompt_index, HeadAnatomy)`` of the heads whose bands are shown.
  """
  threshold = 1.0 - epsilon
  types = {"bos": htm.scores["bos"], f"marker ({htm.marker})": htm.scores["marker"]}
  result = dict(info)
  result.update({
      "units": "attention mass on the type's target keys (0..1); mean over queries i >= 1 "
               "('mean') and the minimum over them ('strict', the paper's kind of definition: "
               "a head is of the type iff strict > 1 - epsilon)",
      "definitions": {
          "bos": "target: key 0 (BOS) for every query",
          "marker": f"target: the previous token when it is a {htm.marker} marker, else BOS "
                    "(App. E.1's apostrophe head)"},
      "marker": htm.marker, "num_after_marker": htm.num_after_marker, "epsilon": epsilon,
      "bos": {"mean": rounded(htm.scores["bos"].mean), "strict": rounded(htm.scores["bos"].strict)},
      "marker_scores": {"mean": rounded(htm.scores["marker"].mean),
                        "strict": rounded(htm.scores["marker"].strict)},
      "heads_strict": {name: [{"layer": l, "head": h, "strict": s}
                              for l, h, s in _top(t.strict, t.strict.size) if s > threshold]
                       for name, t in types.items()},
      "top_mean": {name: [{"layer": l, "head": h, "mean": s} for l, h, s in _top(t.mean, top_k)]
                   for name, t in types.items()},
      "bands": {f"{kind} L{a.layer}H{a.head} prompt {p}": {
          "band_labels": band_labels(a.bands, freqs),
          "band_logit_contribution_by_kind": {k: rounded(v) for k, v in a.band_by_kind.items()},
          "softmax_error": a.softmax_error} for kind, p, a in anatomies},
  })
  paths = [write_json(os.path.join(out, "head_types.json"), result)]
  rows = ((l, h, *(f"{v:.6g}" for v in (htm.scores["bos"].mean[l, h], htm.scores["bos"].strict[l, h],
                                        htm.scores["marker"].mean[l, h],
                                        htm.scores["marker"].strict[l, h],
                                        m.scores["diagonal"][l, h], m.min_scores["diagonal"][l, h],
                                        m.scores["previous_token"][l, h],
                                        m.min_scores["previous_token"][l, h])))
          for (l, h), _ in np.ndenumerate(htm.scores["bos"].mean))
  paths.append(write_csv(os.path.join(out, "head_types.csv"),
                         ("layer", "head", "bos_mean", "bos_strict", "marker_mean",
                          "marker_strict", "diagonal_mean", "diagonal_strict",
                          "previous_token_mean", "previous_token_strict"), rows))
  panels = {}
  for name, t in types.items():
    panels[f"{name}: mean"] = t.mean
    panels[f"{name}: strict (min)"] = t.strict
  paths.append(plots.save_figure(plots.plot_score_panels(
      panels, units="attention mass on the targets", title=f"Head types ({htm.num_after_marker} queries follow a {htm.marker})\n"
                    f"{short_title(info)}"), os.path.join(out, "head_types.png")))
  if anatomies:
    labels = band_labels(anatomies[0][2].bands, freqs)
    band_rows = [(kind, a.layer, a.head, p, key_kind, labels[b], f"{v[b]:.6g}")
                 for kind, p, a in anatomies for key_kind, v in a.band_by_kind.items()
                 for b in range(len(v))]
    paths.append(write_csv(os.path.join(out, "head_bands.csv"),
                           ("head_type", "layer", "head", "prompt", "key_kind", "band",
                            "mean_logit_contribution"), band_rows))
    fig = plots_heads.plot_band_contributions(
        [(f"{kind}: L{a.layer}H{a.head} (prompt {p})", a.band_by_kind) for kind, p, a in anatomies],
        labels, title=f"Which frequency bands carry what: mean logit contribution by key kind\n"
                      f"{short_title(info)}")
    paths.append(plots.save_figure(fig, os.path.join(out, "head_bands.png")))
  return paths


def write_domains(usage: Mapping[str, Mapping[str, np.ndarray]], info: Mapping[str, Any],
                  out: str, *, freqs: np.ndarray | None, bands: Sequence[tuple[int, int]],
                  num_prompts: Mapping[str, int]) -> list[str]:
  """Fig. 19: frequency usage per prompt set (``{set: {"q", "k", "v": [layers, heads, H/2]}}``)."""
  names = list(usage)
  reference = names[0]
  rows_titles = {"q": "queries q", "k": "keys k", "v": "values v (control)"}
  fig = compare_lib.plot_compare(
      [f"{n} ({num_prompts[n]} prompts)" for n in names],
      [{k: usage[n][k].mean(axis=1) for k in rows_titles} for n in names], rows=rows_titles,
      xlabel="RoPE chunk k (high → low frequency)", ylabel="layer",
      units="mean chunk 2-norm ‖x⁽ᵏ⁾‖\n(activation units)", freqs=[freqs] * len(names),
      title=f"Frequency usage by prompt domain (Fig. 19)\n{short_title(info)}")
  paths = [plots.save_figure(fig, os.path.join(out, "domains_frequency_usage.png"))]
  fig = compare_lib.plot_profiles(
      {n: {k: usage[n][k].mean(axis=(0, 1)) for k in ("q", "k")} for n in names},
      panels={"q": "queries q", "k": "keys k"}, freqs=[freqs],
      ylabel="mean chunk 2-norm (over layers, heads, tokens)",
      title=f"Frequency usage profile by prompt domain\n{short_title(info)}")
  paths.append(plots.save_figure(fig, os.path.join(out, "domains_profiles.png")))
  similarity = {n: {k: compare_lib.profile_similarity(usage[n][k], usage[reference][k])
                    for k in ("q", "k", "v")} for n in names}
  shares = {n: {k: compare_lib.band_fractions(usage[n][k].mean(axis=(0, 1)), bands)
                for k in ("q", "k")} for n in names}
  labels = band_labels(bands, freqs)
  result = dict(info)
  result.update({
      "units": "mean chunk 2-norm per layer, head, chunk (chunk 0 = highest frequency)",
      "reference": reference, "num_prompts": dict(num_prompts),
      "cosine_similarity_to_reference": similarity,
      "band_labels": labels,
      "band_share": {n: {k: rounded(v) for k, v in s.items()} for n, s in shares.items()},
      "usage": {n: {k: rounded(v) for k, v in u.items()} for n, u in usage.items()},
  })
  paths.append(write_json(os.path.join(out, "domains.json"), result))
  rows = ((n, k, layer, head, chunk, f"{value:.6g}") for n in names for k in ("q", "k", "v")
          for (layer, head, chunk), value in np.ndenumerate(usage[n][k]))
  paths.append(write_csv(os.path.join(out, "domains.csv"),
                         ("prompt_set", "activation", "layer", "head", "chunk",
                          "mean_chunk_norm"), rows))
  md_rows = [(n, num_prompts[n], *(f"{similarity[n][k]:.4f}" for k in ("q", "k", "v")),
              *(f"{x:.3f}" for x in shares[n]["k"])) for n in names]
  paths.append(write_markdown(
      os.path.join(out, "domains.md"),
      ("prompt set", "prompts", f"cos(q, {reference})", f"cos(k, {reference})",
       f"cos(v, {reference})", *(f"k share {l}" for l in labels)), md_rows))
  return paths


# ----------------------------------------------------------------------------------------------
# The jobs (called by report.analyze with its restored run and measurement).


def parse_bands(spec: int | str) -> int | str:
  """``--bands``: ``"4"`` -> 4 equal bands; ``"0:4,4:32"`` stays a range spec."""
  if isinstance(spec, int) or not str(spec).strip().isdigit():
    return spec
  return int(str(spec).strip())


def layer_frequencies(cfg, layer: int) -> np.ndarray:
  """``[H/2]`` chunk frequencies (rad/token) of one layer's encoding."""
  return chunks.chunk_frequencies(cfg.layer_rope(layer), cfg.head_dim)


def choose_head(m: Measurement, layer: int | None, head: int | None) -> tuple[int, int]:
  """``(layer, head)``: as given, else the best diagonal head (mean score) of ``layer`` / all."""
  scores = np.asarray(m.scores["diagonal"])
  if layer is None and head is None:
    flat = int(np.argmax(scores))
    return int(flat // scores.shape[1]), int(flat % scores.shape[1])
  if head is None:
    return int(layer), int(np.argmax(scores[layer]))
  return int(layer or 0), int(head)


def cauchy_schwarz_job(model, m: Measurement, info: Mapping[str, Any], out: str, *,
                       token_ids: Sequence[Sequence[int]], pieces: Sequence[str],
                       prompt_index: int, layer: int | None, head: int | None,
                       bands: int | str) -> list[str]:
  """Tables 3–5 for ``--layer/--head`` (default: the best diagonal head) on one prompt."""
  layer, head = choose_head(m, layer, head)
  a = anatomy_lib.head_anatomy(model, token_ids[prompt_index], layer=layer, head=head,
                               bands=bands)
  return write_cauchy_schwarz(a, info, out, freqs=layer_frequencies(model.cfg, layer),
                              pieces=pieces, prompt_index=prompt_index)


def head_types_job(model, m: Measurement, info: Mapping[str, Any], out: str, *,
                   token_ids: Sequence[Sequence[int]], pieces: Sequence[Sequence[str]],
                   prompt_index: int, marker: str, bands: int | str, epsilon: float,
                   top_k: int, batch_size: int) -> list[str]:
  """BOS / marker / positional head types and the bands of the top head of each."""
  htm = anatomy_lib.measure_head_types(model, token_ids, pieces, marker=marker,
                                       batch_size=batch_size)
  marked = [i for i, mk in enumerate(htm.markers) if mk[:-1].any()]
  marker_prompt = marked[0] if marked else prompt_index
  tops = {"bos": (_top(htm.scores["bos"].mean, 1)[0], prompt_index),
          "marker": (_top(htm.scores["marker"].mean, 1)[0], marker_prompt),
          "diagonal": (_top(m.scores["diagonal"], 1)[0], prompt_index),
          "previous_token": (_top(m.scores["previous_token"], 1)[0], prompt_index)}
  needed = sorted({p for _, p in tops.values()})
  (batch,) = list(measure_lib.batches(model, [token_ids[p] for p in needed],
                                      batch_size=len(needed)))
  anatomies = [(kind, p, anatomy_lib.decompose(model.cfg, batch, needed.index(p), layer=layer,
                                               head=head, bands=bands, markers=htm.markers[p]))
               for kind, ((layer, head, _), p) in tops.items()]
  freqs = layer_frequencies(model.cfg, 0)
  return write_head_types(htm, m, info, out, anatomies=anatomies, freqs=freqs, epsilon=epsilon,
                          top_k=top_k)


def domains_job(model, info: Mapping[str, Any], out: str, *, tokenizer, sets: Sequence[str],
                bands: int | str, add_bos: bool, batch_size: int) -> list[str]:
  """Fig. 19: the frequency usage of every shipped prompt set in ``sets``."""
  usage, counts = {}, {}
  for name in sets:
    texts = measure_lib.read_prompts(name)
    ids = measure_lib.encode_prompts(tokenizer, texts, model.cfg, add_bos=add_bos)
    usage[name] = measure_lib.measure(model, ids, batch_size=batch_size).usage
    counts[name] = len(texts)
  freqs = layer_frequencies(model.cfg, 0)
  return write_domains(usage, info, out, freqs=freqs,
                       bands=cs.band_slices(model.cfg.head_dim // 2, bands), num_prompts=counts)
