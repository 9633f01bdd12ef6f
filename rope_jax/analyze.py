r"""Analysis CLI: the paper's §4–5 measurements on a trained (or imported) run.

    python -m rope_jax.analyze --workdir=/runs/tiny_rope --analysis=frequency_usage --out=/tmp/fu
    python -m rope_jax.analyze --workdir=/runs/gemma7b --vocab_path=/ckpts/gemma/tokenizer.model \
        --analysis=frequency_usage,heads,patterns --layer=1 --head=5 --out=/tmp/gemma7b

The run's newest intact checkpoint (or ``--step``) is restored onto the host CPU, parameters only
(``rope_jax.checkpoint.rundir``), whatever mesh trained it. The prompts (``--prompts``, one per
line; default: ten Shakespeare quotes in ``rope_jax/analysis/prompts.txt``, as the paper's
Figs 3–4) are tokenized with the run's vocabulary (``rope_jax.data.get_vocabulary`` of its data
config; ``--vocab_path`` overrides, and imported weights need it), BOS first, and run through the
model with ``return_intermediates=True`` (the training computation, ``attention_impl="xla"``).
Averages are over every real token of every prompt (padding excluded).

``--analysis`` (one or more, comma-separated) writes into ``--out`` (heads and layers 0-indexed):

* ``frequency_usage`` (SPEC §2b; Figs 3, 4, value control): mean 2-norm of every RoPE chunk of
  the pre-rotation queries, keys and values, high → low frequency. ``frequency_usage.json``
  (``q``, ``k``, ``v``: ``[num_layers, heads, H/2]``; ``chunk_frequencies``: ``[H/2]``),
  ``frequency_usage.csv``, ``frequency_usage_layers.png`` (per layer, mean over heads) and
  ``frequency_usage_layer<L>_heads.png`` per head for ``--layer`` (default: first and last).
* ``heads`` (SPEC §2c): diagonal (mean α_{i,i}) and previous-token (mean α_{i,i-1}) score of
  every head, over queries that have a previous token. ``positional_heads.json`` (``diagonal``,
  ``previous_token``: ``[num_layers, num_heads]``; ``top``: the ``--top_heads`` best heads of
  each kind with their q/k chunk norms; ``heads_above``: heads with score > 1 - ``--epsilon``),
  ``positional_heads.csv``, ``positional_heads.png`` and
  ``positional_heads_top_frequency_usage.png``.
* ``patterns``: attention weights of ``--layer`` (default 0), ``--head`` (default every head) on
  prompt ``--prompt_index``: ``attention_L<l>_prompt<p>.json`` / ``.csv`` and
  ``attention_L<l>H<h>_prompt<p>.png``.

Errors a user can fix (no such workdir or step, unknown analysis, a bad layer / head, a missing
vocabulary) exit with status 1 and one line on stderr, no traceback.

The functions here (:func:`measure`, :func:`write_frequency_usage`, ...) are importable without
defining any absl flag (the flags are defined only when run as a program), so scripts such as
``experiments/frequency_usage_compare.py`` and the Table 2 job reuse them.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from rope_jax.checkpoint import manager as checkpoint_lib
from rope_jax.model import generate as generate_lib
from rope_jax.model import transformer as model_lib
from rope_jax import rope as rope_lib
from rope_jax.analysis import frequency_usage as frequency_usage_lib
from rope_jax.analysis import positional_heads as positional_heads_lib
from rope_jax.checkpoint import rundir as restore

ANALYSES: tuple[str, ...] = ("frequency_usage", "heads", "patterns")
DEFAULT_PROMPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "analysis",
                               "prompts.txt")
BOS_ID = 2
HEAD_KINDS = positional_heads_lib.HEAD_KINDS  # ("diagonal", "previous_token")
USAGE_NAMES = ("q", "k", "v")
USAGE_TITLES = {"q": "queries q", "k": "keys k", "v": "values v (control: never rotated)"}
SCORE_UNITS = "mean attention weight α (probability)"
# Errors whose message is the whole story (the CLI prints it on one line, no traceback).
USER_ERRORS = (FileNotFoundError, ValueError, checkpoint_lib.CorruptCheckpointError)


# ----------------------------------------------------------------------------------------------
# Inputs: analyses, prompts, vocabulary.


def parse_analyses(spec: str | Sequence[str]) -> tuple[str, ...]:
  """``"heads,patterns"`` (or a list) -> validated names; ValueError listing the valid ones."""
  names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
  names = [s for s in names if s]
  unknown = [s for s in names if s not in ANALYSES]
  if unknown or not names:
    raise ValueError(f"unknown analysis {', '.join(map(repr, unknown)) or '(none given)'}; "
                     f"valid: {', '.join(ANALYSES)} (comma-separated for several).")
  return tuple(dict.fromkeys(names))


def read_prompts(path: str | None = None) -> list[str]:
  """Prompts from a text file, one per line (blank and ``#`` lines skipped); default: built-in."""
  path = path or DEFAULT_PROMPTS
  if not os.path.isfile(path):
    raise FileNotFoundError(f"prompts file {path!r} does not exist.")
  with open(path, encoding="utf-8") as f:
    prompts = [line.strip() for line in f]
  prompts = [p for p in prompts if p and not p.startswith("#")]
  if not prompts:
    raise ValueError(f"prompts file {path!r} holds no prompt (one per line; '#' lines skipped).")
  return prompts


def load_vocabulary(restored: restore.Restored, vocab_path: str = "") -> Any:
  """The run's SentencePiece vocabulary (``rope_jax.data.get_vocabulary`` of its data config).

  Args:
    restored: the run (its ``config.data`` names the vocabulary).
    vocab_path: overrides ``data.vocab_path`` (e.g. Gemma's ``tokenizer.model``).

  Returns:
    A ``seqio.SentencePieceVocabulary``.

  Raises:
    ValueError: imported weights without a vocabulary path, or a vocabulary larger than the
      model's embedding table.
    FileNotFoundError: the vocabulary file is missing.
  """
  from rope_jax import data as data_lib  # pylint: disable=g-import-not-at-top  (TensorFlow)
  section = restored.config.get("data")
  data_cfg = ml_collections.ConfigDict(
      section.to_dict() if section is not None else data_lib.default_config().to_dict())
  if vocab_path:
    data_cfg.vocab_path = vocab_path
  if restored.imported and not data_cfg.get("vocab_path"):
    raise ValueError(
        "this checkpoint holds imported weights (rope_jax.import_gemma) and its config names "
        "no vocabulary: pass --vocab_path=<the model's tokenizer.model>.")
  vocab = data_lib.get_vocabulary(data_cfg)
  if vocab.vocab_size > restored.model_config.vocab_size:
    raise ValueError(
        f"the vocabulary ({data_cfg.get('vocab_path') or 'the offline default'}, "
        f"{vocab.vocab_size} pieces) is larger than the model's embedding table "
        f"(model.vocab_size={restored.model_config.vocab_size}): it is not this model's; pass "
        "--vocab_path.")
  return vocab


def encode_prompts(vocab: Any, texts: Sequence[str], *, vocab_size: int,
                   add_bos: bool = True) -> list[list[int]]:
  """Token ids per prompt (BOS first); every prompt needs >= 2 tokens (a previous token)."""
  prompts = []
  for i, text in enumerate(texts):
    ids = ([BOS_ID] if add_bos else []) + [int(t) for t in vocab.encode(text)]
    if len(ids) < 2:
      raise ValueError(f"prompt {i} ({text!r}) has {len(ids)} token(s); every prompt needs at "
                       "least 2 (the previous-token score needs a previous token).")
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
      raise ValueError(f"token id {bad[0]} of prompt {i} does not fit model.vocab_size="
                       f"{vocab_size}.")
    prompts.append(ids)
  return prompts


def token_pieces(vocab: Any, ids: Sequence[int]) -> list[str]:
  """Readable SentencePiece pieces of ``ids`` (``▁`` marks a word start), for tick labels."""
  tokenizer = getattr(vocab, "tokenizer", None)
  if tokenizer is None:
    return [vocab.decode([int(i)]) for i in ids]
  return [tokenizer.id_to_piece(int(i)) for i in ids]


# ----------------------------------------------------------------------------------------------
# Measurement.


def layer_chunking(cfg: model_lib.ModelConfig, layer: int) -> tuple[str, int | None]:
  """``(layout, rotary_dim)`` of a layer's RoPE chunks (``frequency_usage`` arguments)."""
  rope = cfg.layer_rope(layer)
  if rope.variant != "partial":
    return rope.layout, None
  _, rotary_dim = rope_lib.rotary_frequencies(cfg.head_dim, theta=rope.theta,
                                              fraction=rope.fraction, variant=rope.variant)
  return rope.layout, rotary_dim


def chunk_frequencies(cfg: model_lib.ModelConfig) -> np.ndarray | None:
  """``[H/2]`` rad/token of every chunk (0 = identity), or None if layers differ (global_rope)."""
  ropes = {cfg.layer_rope(l) for l in range(cfg.num_layers)}
  if len(ropes) != 1:
    return None
  rope = ropes.pop()
  return rope_lib.chunk_frequencies(cfg.head_dim, theta=rope.theta, fraction=rope.fraction,
                                    variant=rope.variant)


@dataclasses.dataclass
class Measurement:
  """What one pass over the prompts measured.

  Attributes:
    usage: ``{"q": [num_layers, N, H/2], "k"/"v": [num_layers, K, H/2]}`` float32 mean chunk
      2-norms over every real token, chunk 0 = highest frequency (activation units).
    scores: ``{"diagonal", "previous_token": [num_layers, N]}`` mean α_{i,i} / α_{i,i-1} over
      every query with a previous token (attention-weight units, 0..1).
    attention: ``[num_layers, N, P, P]`` attention weights of prompt ``prompt_index`` (P tokens).
    prompt_index: which prompt ``attention`` is of.
    num_tokens: real tokens averaged over (``usage``).
    num_queries: queries averaged over (``scores``).
  """

  usage: dict[str, np.ndarray]
  scores: dict[str, np.ndarray]
  attention: np.ndarray
  prompt_index: int
  num_tokens: int
  num_queries: int


def _forward(model: model_lib.Transformer):
  """Jitted ``(tokens, positions, segment_ids) -> per-layer {q, k, v, attn}``."""
  graphdef, state = nnx.split(model)

  @jax.jit
  def forward(state, tokens, positions, segment_ids):
    inter = nnx.merge(graphdef, state)(tokens, positions, segment_ids,
                                       return_intermediates=True).intermediates
    return [{name: layer[name] for name in (*USAGE_NAMES, "attn")} for layer in inter]

  return lambda *args: forward(state, *args)


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
  if not prompts:
    raise ValueError("measure needs at least one prompt.")
  if not 0 <= prompt_index < len(prompts):
    raise ValueError(f"prompt index must be in [0, {len(prompts)}), got {prompt_index}.")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  cfg = model.cfg
  forward = _forward(model)
  length = max(len(p) for p in prompts)
  sums: dict[str, np.ndarray] = {}
  num_tokens = num_queries = 0
  attention = None
  for start in range(0, len(prompts), batch_size):
    chunk = list(prompts[start:start + batch_size])
    tokens, mask = generate_lib.pad_prompts(chunk, side="right", length=length)
    positions, segment_ids, _ = generate_lib.prompt_layout(jnp.asarray(mask))
    inter = forward(jnp.asarray(tokens), positions, segment_ids)
    n_tok = int(mask.sum())
    n_q = sum(len(p) - 1 for p in chunk)
    for name in USAGE_NAMES:
      per_layer = []
      for layer, values in enumerate(inter):
        layout, rotary_dim = layer_chunking(cfg, layer)
        per_layer.append(np.asarray(frequency_usage_lib.mean_chunk_norms(
            values[name], mask, layout=layout, rotary_dim=rotary_dim)))
      sums[name] = sums.get(name, 0.0) + np.stack(per_layer) * n_tok
    scores = positional_heads_lib.positional_head_scores(
        [values["attn"] for values in inter], mask, np.asarray(segment_ids))
    for kind, value in scores.items():
      sums[kind] = sums.get(kind, 0.0) + np.asarray(value) * n_q
    num_tokens += n_tok
    num_queries += n_q
    if start <= prompt_index < start + len(chunk):
      row, p = prompt_index - start, len(prompts[prompt_index])
      attention = np.stack([np.asarray(values["attn"][row, :, :p, :p]) for values in inter])
  return Measurement(
      usage={name: (sums[name] / num_tokens).astype(np.float32) for name in USAGE_NAMES},
      scores={kind: (sums[kind] / num_queries).astype(np.float32) for kind in HEAD_KINDS},
      attention=attention, prompt_index=prompt_index, num_tokens=num_tokens,
      num_queries=num_queries)


def run_info(restored: restore.Restored, workdir: str, texts: Sequence[str],
             m: Measurement) -> dict[str, Any]:
  """The JSON header of every output: which run, step, encoding, prompts and token counts."""
  cfg = restored.model_config
  return {
      "workdir": workdir,
      "step": restored.step,
      "positional_encoding": restore.describe_positional_encoding(cfg),
      "model": {"num_layers": cfg.num_layers, "num_heads": cfg.num_heads,
                "num_kv_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
                "rope": dataclasses.asdict(cfg.rope)},
      "num_prompts": len(texts),
      "num_tokens": m.num_tokens,
      "num_queries": m.num_queries,
      "prompts": list(texts),
  }


# ----------------------------------------------------------------------------------------------
# Outputs.


def write_json(path: str, value: Any) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=1, ensure_ascii=False)
  return path


def write_csv(path: str, header: Sequence[str], rows: Any) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  return path


def _round(x: np.ndarray, digits: int = 5) -> list:
  return np.round(np.asarray(x, np.float64), digits).tolist()


def _short_title(info: Mapping[str, Any]) -> str:
  name = os.path.basename(os.path.normpath(str(info["workdir"])))
  return (f"{name} ({info['positional_encoding']}), step {info['step']}, "
          f"{info['num_prompts']} prompts / {info['num_tokens']} tokens")


def _label_rows(fig: Any, labels: Mapping[str, tuple[str, Sequence[str] | None]]) -> None:
  """Sets the y label (and tick labels) of the panels of ``fig`` titled as in ``labels``."""
  for ax in fig.axes:
    if ax.get_title() in labels:
      ylabel, ticks = labels[ax.get_title()]
      ax.set_ylabel(ylabel)
      if ticks is not None:
        ax.set_yticks(range(len(ticks)), labels=ticks, fontsize=8)


def _integer_rows(fig: Any) -> None:
  """Integer y ticks (layers, heads) on every heatmap panel of ``fig``."""
  from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
  for ax in fig.axes:
    if ax.images:
      ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def plot_head_scores(scores: Mapping[str, np.ndarray], *, title: str = "") -> Any:
  """Diagonal / previous-token scores as layer × head heatmaps (0..1), one panel per kind."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(5.0 * len(scores), 4.2), layout="constrained")
  axes = fig.subplots(1, len(scores), squeeze=False)[0]
  for ax, (kind, values) in zip(axes, scores.items()):
    values = np.asarray(values)
    image = ax.imshow(values, aspect="auto", interpolation="nearest", cmap="magma", vmin=0,
                      vmax=1)
    fig.colorbar(image, ax=ax, label=SCORE_UNITS)
    offset = "α_{i,i}" if kind == "diagonal" else "α_{i,i-1}"
    ax.set(title=f"{kind.replace('_', '-')} score (mean {offset})", xlabel="head",
           ylabel="layer")
    ax.set_xticks(range(values.shape[1]))
    if values.shape[0] <= 32:
      ax.set_yticks(range(values.shape[0]))
    if values.size <= 256:
      for (l, h), v in np.ndenumerate(values):
        ax.text(h, l, f"{v:.2f}", ha="center", va="center", fontsize=7,
                color="black" if v > 0.6 else "white")
  if title:
    fig.suptitle(title)
  return fig


def write_frequency_usage(m: Measurement, info: Mapping[str, Any], out: str, *,
                          freqs: np.ndarray | None, layers: Sequence[int]) -> list[str]:
  """Fig. 3 (per layer) and Fig. 4 (per head of each of ``layers``) PNGs, JSON and CSV."""
  from rope_jax.analysis import plots  # pylint: disable=g-import-not-at-top
  result = dict(info)
  result.update({
      "units": "mean 2-norm of each RoPE chunk of the pre-rotation activations "
               "(activation units); chunk 0 = highest frequency",
      "shapes": {name: list(m.usage[name].shape) for name in USAGE_NAMES},
      "chunk_frequencies": None if freqs is None else _round(freqs, 10),
      **{name: _round(m.usage[name]) for name in USAGE_NAMES},
  })
  paths = [write_json(os.path.join(out, "frequency_usage.json"), result)]
  rows = ((name, layer, head, chunk, "" if freqs is None else f"{freqs[chunk]:.6g}",
           f"{value:.6g}")
          for name in USAGE_NAMES
          for (layer, head, chunk), value in np.ndenumerate(m.usage[name]))
  paths.append(write_csv(os.path.join(out, "frequency_usage.csv"),
                          ("activation", "layer", "head", "chunk", "frequency_rad_per_token",
                           "mean_chunk_norm"), rows))
  title = _short_title(info)
  fig = plots.plot_frequency_usage(
      {USAGE_TITLES[name]: m.usage[name].mean(axis=1) for name in USAGE_NAMES},
      row_label="layer", freqs=freqs,
      title=f"Frequency usage per layer (mean over heads and tokens)\n{title}")
  _integer_rows(fig)
  paths.append(plots.save_figure(fig, os.path.join(out, "frequency_usage_layers.png")))
  for layer in layers:
    fig = plots.plot_frequency_usage(
        {USAGE_TITLES[name]: m.usage[name][layer] for name in USAGE_NAMES},
        row_label="head", freqs=freqs,
        title=f"Frequency usage of layer {layer} per head (0-indexed; mean over tokens)\n{title}")
    _integer_rows(fig)
    if m.usage["k"].shape[1] != m.usage["q"].shape[1]:
      _label_rows(fig, {USAGE_TITLES[n]: ("key/value head", None) for n in ("k", "v")})
    paths.append(plots.save_figure(
        fig, os.path.join(out, f"frequency_usage_layer{layer}_heads.png")))
  return paths


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
                      "q_usage": _round(m.usage["q"][layer, head]),
                      "k_usage": _round(m.usage["k"][layer, kv_head])})
    out[kind] = entries
  return out


def write_heads(m: Measurement, info: Mapping[str, Any], out: str, *,
                freqs: np.ndarray | None, epsilon: float, top_k: int) -> list[str]:
  """Positional-head scores (JSON, CSV, heatmaps) and the frequency usage of the top heads."""
  from rope_jax.analysis import plots  # pylint: disable=g-import-not-at-top
  if not 0 < epsilon < 1:
    raise ValueError(f"epsilon must be in (0, 1), got {epsilon}.")
  if top_k < 1:
    raise ValueError(f"top_heads must be >= 1, got {top_k}.")
  best = top_heads(m, top_k)
  threshold = 1.0 - epsilon
  result = dict(info)
  result.update({
      "units": "mean attention weight over queries with a previous token (0..1)",
      "shapes": {kind: list(m.scores[kind].shape) for kind in HEAD_KINDS},
      **{kind: _round(m.scores[kind]) for kind in HEAD_KINDS},
      "epsilon": epsilon,
      "heads_above": {kind: [{"layer": l, "head": h, "score": s} for l, h, s in
                             positional_heads_lib.heads_above(m.scores[kind], threshold)]
                      for kind in HEAD_KINDS},
      "chunk_frequencies": None if freqs is None else _round(freqs, 10),
      "top": best,
  })
  paths = [write_json(os.path.join(out, "positional_heads.json"), result)]
  rows = ((layer, head, f"{m.scores['diagonal'][layer, head]:.6g}",
           f"{m.scores['previous_token'][layer, head]:.6g}")
          for (layer, head), _ in np.ndenumerate(m.scores["diagonal"]))
  paths.append(write_csv(os.path.join(out, "positional_heads.csv"),
                          ("layer", "head", "diagonal", "previous_token"), rows))
  title = _short_title(info)
  paths.append(plots.save_figure(
      plot_head_scores(m.scores, title=f"Positional heads (0-indexed)\n{title}"),
      os.path.join(out, "positional_heads.png")))
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
  _label_rows(fig, {name: ("head (kind, layer, head, score)", labels) for name in panels})
  paths.append(plots.save_figure(
      fig, os.path.join(out, "positional_heads_top_frequency_usage.png")))
  return paths


def write_patterns(m: Measurement, info: Mapping[str, Any], out: str, *, layer: int,
                   heads: Sequence[int], pieces: Sequence[str]) -> list[str]:
  """Attention weights ``[P, P]`` of ``heads`` of ``layer`` on one prompt: JSON, CSV, PNGs."""
  from rope_jax.analysis import plots  # pylint: disable=g-import-not-at-top
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
      "attention": [_round(attn[h]) for h in heads],
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
  title = _short_title(info)
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
    raise ValueError(f"--{name}={value} is out of range: the model has {size} {what} "
                     f"(0-indexed, 0..{size - 1}).")


def analyze(workdir: str, analyses: str | Sequence[str], out: str, *, step: int | None = None,
            prompts: str | None = None, layer: int | None = None, head: int | None = None,
            prompt_index: int = 0, vocab_path: str = "", batch_size: int = 16,
            epsilon: float = 0.5, top_heads_k: int = 3, add_bos: bool = True,
            verify: bool = True) -> list[str]:
  """Restores ``workdir`` onto the host CPU, runs ``analyses`` and writes into ``out``.

  Arguments as the CLI flags (see the module docstring). Returns the written paths.

  Raises:
    FileNotFoundError, ValueError, checkpoint.CorruptCheckpointError: problems a user can fix,
      raised before any array is read where possible.
  """
  names = parse_analyses(analyses)
  texts = read_prompts(prompts)
  _, cfg, _ = restore.read_config(workdir, step)  # Cheap checks before reading any array.
  _check_index("layer", layer, cfg.num_layers, "layers")
  _check_index("head", head, cfg.num_heads, "query heads per layer")
  _check_index("prompt_index", prompt_index, len(texts), "prompts")
  with jax.default_device(restore.host_device()):
    restored = restore.load(workdir, step, verify=verify)
    vocab = load_vocabulary(restored, vocab_path)
    token_ids = encode_prompts(vocab, texts, vocab_size=cfg.vocab_size, add_bos=add_bos)
    m = measure(restored.model, token_ids, batch_size=batch_size, prompt_index=prompt_index)
  info = run_info(restored, workdir, texts, m)
  freqs = chunk_frequencies(cfg)
  paths: list[str] = []
  os.makedirs(out, exist_ok=True)
  if "frequency_usage" in names:
    layers = [layer] if layer is not None else sorted({0, cfg.num_layers - 1})
    paths += write_frequency_usage(m, info, out, freqs=freqs, layers=layers)
  if "heads" in names:
    paths += write_heads(m, info, out, freqs=freqs, epsilon=epsilon, top_k=top_heads_k)
  if "patterns" in names:
    heads = [head] if head is not None else list(range(cfg.num_heads))
    paths += write_patterns(m, info, out, layer=layer or 0, heads=heads,
                            pieces=token_pieces(vocab, token_ids[prompt_index]))
  return paths


# ----------------------------------------------------------------------------------------------
# CLI.


def define_flags() -> None:
  """Defines the CLI's absl flags (only when run as a program: importing defines none)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/ (rope_jax.train or "
                      "rope_jax.import_gemma).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest intact one).")
  flags.DEFINE_string("analysis", None, f"One or more of {', '.join(ANALYSES)}, "
                      "comma-separated.")
  flags.DEFINE_string("prompts", None, "Text file, one prompt per line ('#' lines skipped); "
                      "default: ten Shakespeare quotes (rope_jax/analysis/prompts.txt).")
  flags.DEFINE_integer("layer", None, "Layer (0-indexed) of the per-head frequency-usage figure "
                       "(default: first and last) and of the attention patterns (default 0).")
  flags.DEFINE_integer("head", None, "Head (0-indexed) of the attention patterns (default: all).")
  flags.DEFINE_integer("prompt_index", 0, "Prompt (0-indexed) of the attention patterns.")
  flags.DEFINE_string("out", None, "Output directory (created).")
  flags.DEFINE_string("vocab_path", "", "SentencePiece model overriding the run's data.vocab_path "
                      "(needed for imported Gemma weights: Gemma's tokenizer.model).")
  flags.DEFINE_integer("batch_size", 16, "Prompts per forward pass.")
  flags.DEFINE_float("epsilon", 0.5, "heads: list heads whose mean score exceeds 1 - epsilon.")
  flags.DEFINE_integer("top_heads", 3, "heads: how many top heads of each kind to detail.")
  flags.DEFINE_bool("add_bos", True, "Prepend BOS to every prompt.")
  flags.DEFINE_bool("verify", True, "Check the restored arrays against their save-time "
                    "fingerprints.")


def _quiet_orbax() -> None:
  """Drops Orbax's INFO records and its 'read only' warnings (analysis never writes)."""
  import logging  # pylint: disable=g-import-not-at-top
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top

  class _Filter(logging.Filter):

    def filter(self, record: logging.LogRecord) -> bool:
      if "/orbax/" not in record.pathname:
        return True
      return record.levelno >= logging.WARNING and "read only" not in record.getMessage() \
          and "read_only" not in record.getMessage()

  absl_logging.get_absl_handler().addFilter(_Filter())
  logging.getLogger().addFilter(_Filter())
  for handler in logging.getLogger().handlers:
    handler.addFilter(_Filter())


def main(argv: Sequence[str]) -> None:
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  flag_values = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {list(argv[1:])}")
  _quiet_orbax()
  try:
    for name in ("workdir", "analysis", "out"):
      if not flag_values[name].value:
        raise ValueError(f"--{name} is required.")
    paths = analyze(
        flag_values.workdir, flag_values.analysis, flag_values.out, step=flag_values.step,
        prompts=flag_values.prompts, layer=flag_values.layer, head=flag_values.head,
        prompt_index=flag_values.prompt_index, vocab_path=flag_values.vocab_path,
        batch_size=flag_values.batch_size, epsilon=flag_values.epsilon,
        top_heads_k=flag_values.top_heads, add_bos=flag_values.add_bos,
        verify=flag_values.verify)
  except USER_ERRORS as e:
    message = " ".join(str(e).split())
    print(f"rope_jax.analyze: error: {message}", file=sys.stderr)
    sys.exit(1)
  print(f"Wrote {len(paths)} files to {flag_values.out}:")
  for path in paths:
    print(f"  {path}")


if __name__ == "__main__":
  from absl import app as _app  # pylint: disable=g-import-not-at-top
  define_flags()
  _app.run(main)
