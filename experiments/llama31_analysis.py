r"""The paper's App. C (Llama 3.1 8B corroboration, SPEC §2e) over an imported run directory.

App. C repeats the Gemma 7B analyses on Llama 3.1 8B (θ = 500k, GQA 32 query / 8 key-value
heads, head_dim 128): Llama still prefers the low frequencies but over a *wider spread* than
Gemma (Fig. 10 against Gemma's Fig. 13), and its diagonal heads are again built from the highest
frequencies (Fig. 11). This script writes those figures for any imported run (Llama, Mistral,
Qwen-style; a Gemma run gives Fig. 13's side):

  python -m rope_jax.import_hf --src=/ckpts/Meta-Llama-3.1-8B --out=/runs/llama31_8b
  python -m experiments.llama31_analysis --workdir=/runs/llama31_8b \
      --token_ids=quotes_llama3.json --out=/tmp/llama31_figs

Prompts: Llama 3's tokenizer is a byte-level BPE that ``rope_jax.data`` does not load, so pass
the prompts already tokenized (``--token_ids``: a JSON list of token-id lists, BOS included, e.g.
``json.dump([tok(t).input_ids for t in quotes], f)`` with the model's own tokenizer); or
``--prompts`` (a shipped set name, default ``shakespeare``, or a file) with ``--vocab`` (a
SentencePiece model, or ``bytes``) for a run whose vocabulary rope_jax reads.

Writes into ``--out`` (layers and heads 0-indexed; key heads are GQA key/value heads):

* Fig. 10: ``frequency_usage_layers.png`` (mean chunk norm of q / k / v per layer) and
  ``frequency_usage_layer<L>_heads.png`` (per head of ``--layer``), with ``frequency_usage.json``
  / ``.csv``;
* ``fig11_diagonal_heads.png``: chunk norms of the top diagonal heads' queries and keys (Fig. 11),
  and ``cauchy_schwarz_L<l>H<h>_prompt0.*`` for the best one (activation vs bound per chunk);
* ``positional_heads.json`` / ``.csv`` / ``.png`` / ``_strict.png``: mean and strict scores;
* ``spread.json`` / ``spread.md``: per layer and overall, the share of the q / k norm in each
  frequency band and the band onset (the fastest chunk reaching half the maximum key norm, and
  its frequency): the numbers behind "a wider spread of low frequencies".

The measurement is the library's (``rope_jax.analysis.measure``, ``report``, ``report_heads``,
``compare``); only the choice of figures is this script's.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from rope_jax import errors
from rope_jax.analysis import cauchy_schwarz as cs
from rope_jax.analysis import compare
from rope_jax.analysis import measure as measure_lib
from rope_jax.analysis import positional_heads
from rope_jax.analysis import report
from rope_jax.analysis import report_heads


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="run dir with checkpoints/ (imported)")
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--token_ids", default="",
                      help="JSON list of token-id lists (BOS included): prompts already tokenized")
  parser.add_argument("--prompts", default=None,
                      help="shipped prompt set name or text file (with --vocab); default "
                           "shakespeare")
  parser.add_argument("--vocab", default="", help="SentencePiece model, or 'bytes'")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default newest)")
  parser.add_argument("--layer", type=int, default=0, help="layer of the per-head figure")
  parser.add_argument("--epsilon", type=float, default=0.5,
                      help="heads above 1 - ε (strict: every query; mean: on average)")
  parser.add_argument("--top_heads", type=int, default=4, help="diagonal heads in Fig. 11")
  parser.add_argument("--bands", default="4", help="frequency bands (count or 0:8,8:64 ranges)")
  parser.add_argument("--batch_size", type=int, default=8, help="prompts per forward pass")
  return parser.parse_args(argv)


def read_token_ids(path: str, vocab_size: int) -> list[list[int]]:
  """``--token_ids``: a JSON list of lists of ints, each >= 2 tokens and < vocab_size."""
  try:
    with open(path, encoding="utf-8") as f:
      ids = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise errors.BadInputError(f"--token_ids={path!r} is not a readable JSON file: {e}") from e
  if (not isinstance(ids, list) or not ids
      or not all(isinstance(p, list) and all(isinstance(t, int) for t in p) for p in ids)):
    raise errors.BadInputError(f"--token_ids={path!r} must hold a JSON list of token-id lists.")
  for i, p in enumerate(ids):
    if len(p) < measure_lib.MIN_PROMPT_TOKENS:
      raise errors.BadInputError(f"--token_ids prompt {i} has {len(p)} token(s); need >= 2.")
    bad = [t for t in p if not 0 <= t < vocab_size]
    if bad:
      raise errors.BadInputError(f"--token_ids prompt {i}: id {bad[0]} does not fit "
                                 f"model.vocab_size={vocab_size}.")
  return ids


def spread(usage: dict[str, np.ndarray], freqs: np.ndarray,
           bands: list[tuple[int, int]]) -> dict[str, Any]:
  """Band shares per layer and overall, and the key-norm band onset (App. C's comparison)."""
  out: dict[str, Any] = {"band_labels": [cs.band_label(b, freqs) for b in bands]}
  for name in ("q", "k"):
    per_layer = usage[name].mean(axis=1)  # [layers, H/2]
    overall = per_layer.mean(axis=0)
    onset = compare.band_onset(overall)
    out[name] = {
        "band_share_overall": np.round(compare.band_fractions(overall, bands), 4).tolist(),
        "band_share_per_layer": np.round(compare.band_fractions(per_layer, bands), 4).tolist(),
        "onset_chunk": onset, "onset_frequency_rad_per_token": float(freqs[onset]),
        "onset_chunk_per_layer": [compare.band_onset(p) for p in per_layer],
    }
  return out


def main(argv: Sequence[str] | None = None) -> list[str]:
  args = parse_args(argv)
  from rope_jax.analysis import plots  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  bands = report_heads.parse_bands(args.bands)
  with jax.default_device(jax.devices("cpu")[0]):
    restored = measure_lib.load_run(args.workdir, args.step)
    cfg = restored.model_config
    if not 0 <= args.layer < cfg.num_layers:
      raise errors.BadInputError(f"--layer must be in [0, {cfg.num_layers}), got {args.layer}.")
    band_list = cs.band_slices(cfg.head_dim // 2, bands)
    if args.token_ids:
      prompts = read_token_ids(args.token_ids, cfg.vocab_size)
      texts = [f"<{len(p)} token ids>" for p in prompts]
      pieces = [str(t) for t in prompts[0]]
    else:
      texts = measure_lib.read_prompts(args.prompts)
      tokenizer = measure_lib.run_tokenizer(restored, args.vocab)
      prompts = measure_lib.encode_prompts(tokenizer, texts, cfg)
      pieces = [tokenizer.piece(t) for t in prompts[0]]
    m = measure_lib.measure(restored.model, prompts, batch_size=args.batch_size)
    info = report.run_info(restored, args.workdir, texts, m)
    freqs = report_heads.layer_frequencies(cfg, 0)
    os.makedirs(args.out, exist_ok=True)
    paths = report.write_frequency_usage(m, info, args.out, freqs=freqs, layers=[args.layer])
    paths += report.write_heads(m, info, args.out, freqs=freqs, epsilon=args.epsilon,
                                top_k=args.top_heads)
    best = measure_lib.top_heads(m, args.top_heads)["diagonal"]
    panels = {"queries q": np.asarray([e["q_usage"] for e in best]),
              "keys k (GQA key head)": np.asarray([e["k_usage"] for e in best])}
    fig = plots.plot_frequency_usage(
        panels, row_label="head", freqs=freqs,
        title=f"Fig. 11: the top {len(best)} diagonal heads (mean α_ii)\n"
              f"{report.short_title(info)}")
    labels = [f"L{e['layer']}H{e['head']} (kv {e['kv_head']}, {e['score']:.2f})" for e in best]
    plots.label_rows(fig, {name: ("head (layer, head, key head, score)", labels)
                           for name in panels})
    paths.append(plots.save_figure(fig, os.path.join(args.out, "fig11_diagonal_heads.png")))
    paths += report_heads.cauchy_schwarz_job(
        restored.model, m, info, args.out, token_ids=prompts, pieces=pieces, prompt_index=0,
        layer=best[0]["layer"], head=best[0]["head"], bands=band_list)
  numbers = spread(m.usage, freqs, band_list)
  numbers.update({"workdir": args.workdir, "step": restored.step,
                  "positional_encoding": info["positional_encoding"],
                  "theta": cfg.layer_rope(0).theta})
  paths.append(report.write_json(os.path.join(args.out, "spread.json"), numbers))
  rows = [(name, numbers[name]["onset_chunk"],
           f"{numbers[name]['onset_frequency_rad_per_token']:.3g}",
           *numbers[name]["band_share_overall"]) for name in ("q", "k")]
  paths.append(report.write_markdown(
      os.path.join(args.out, "spread.md"),
      ("activation", "onset chunk", "onset g (rad/token)",
       *(f"share {l}" for l in numbers["band_labels"])), rows))
  strict = positional_heads.heads_above(m.min_scores["diagonal"], 1.0 - args.epsilon)
  print(f"diagonal heads (strict, > {1 - args.epsilon:g} on every query): "
        f"{[(l, h) for l, h, _ in strict] or 'none'}")
  print(f"key-norm onset: chunk {numbers['k']['onset_chunk']} "
        f"(g = {numbers['k']['onset_frequency_rad_per_token']:.3g} rad/token)")
  print(f"wrote {len(paths)} files to {args.out}")
  return paths


if __name__ == "__main__":
  main()
