"""The paper's Gemma 7B analyses (SPEC §2b–2c) over an imported checkpoint and your prompts.

* Fig. 3: mean 2-norm of every RoPE chunk (frequency) of the queries and keys, per layer,
  averaged over heads and tokens; values as the control (App. E.2).
* Fig. 4: the same per head, for one layer (``--layer``, 0-indexed as the gemma library's
  ``layer_<i>``; the paper's "layer 1" with heads 5 and 8).
* §5: diagonal (mean α_{i,i}) and previous-token (mean α_{i,i-1}) score of every head, and the
  heads above ``1 - ε``, with their attention maps on the first prompt.

The paper used 10 Shakespeare quotes; the prompts file holds one prompt per line (blank lines
and lines starting with ``#`` are skipped). Import the weights first::

  python -m rope_jax.import_gemma --src=/ckpts/gemma-7b --config=configs/gemma_7b.py \
      --config.model.vocab_size=256000 --out=/runs/gemma7b
  python -m experiments.gemma7b_analysis --workdir=/runs/gemma7b --prompts=quotes.txt \
      --vocab=/ckpts/gemma-7b/tokenizer.model --out=/tmp/gemma7b_figs

Writes ``frequency_usage.npz``, ``fig3_frequency_usage_layers.png``,
``fig4_frequency_usage_layer<L>.png``, ``positional_heads.json`` and
``attention_<kind>_L<l>H<h>.png`` into ``--out``. Heads and layers are 0-indexed throughout.

The measurement is ``rope_jax.analysis.measure``'s (``load_run``, ``run_tokenizer``, ``measure``)
on the parameters restored by ``rope_jax.checkpoint.rundir`` (parameters only, moved onto the
first local device); only these figures and the head report are specific to this script.
``python -m rope_jax.analyze`` writes the general outputs (CSV, JSON, ...) of the same measurement.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from rope_jax.analysis import measure as measure_lib
from rope_jax.analysis import positional_heads
from rope_jax.analysis import report as report_lib
from rope_jax.model import transformer as model_lib


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="run dir with checkpoints/ (imported)")
  parser.add_argument("--prompts", required=True, help="text file, one prompt per line")
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--vocab", default="", help="SentencePiece model, or 'bytes'")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default newest)")
  parser.add_argument("--layer", type=int, default=1, help="layer of the per-head figure")
  parser.add_argument("--epsilon", type=float, default=0.5,
                      help="a head is diagonal / previous-token when its mean score > 1 - ε")
  parser.add_argument("--batch_size", type=int, default=8, help="prompts per forward pass")
  parser.add_argument("--no_bos", action="store_true", help="do not prepend BOS")
  return parser.parse_args(argv)


def analyse(model: model_lib.Transformer, prompts: Sequence[Sequence[int]], *,
            batch_size: int = 8) -> dict[str, Any]:
  """Frequency usage and positional-head scores over token prompts (``measure.measure``).

  Returns:
    ``{"q", "k", "v": [num_layers, heads, H/2]`` mean chunk norms (high → low frequency),
    ``"diagonal", "previous_token": [num_layers, N]`` mean attention scores,
    ``"attn_first": [num_layers, N, L, L]`` attention of the first prompt``}``.
  """
  m = measure_lib.measure(model, prompts, batch_size=batch_size)
  return {**m.usage, **m.scores, "attn_first": m.attention}


def main(argv: Sequence[str] | None = None) -> list[str]:
  args = parse_args(argv)
  from rope_jax.analysis import plots  # pylint: disable=g-import-not-at-top

  restored = measure_lib.load_run(args.workdir, args.step, device=jax.local_devices()[0])
  step, model, cfg = restored.step, restored.model, restored.model_config
  if not 0 <= args.layer < cfg.num_layers:
    raise ValueError(f"--layer must be in [0, {cfg.num_layers}), got {args.layer}.")
  tokenizer = measure_lib.run_tokenizer(restored, args.vocab)  # --vocab=bytes: UTF-8 bytes.
  prompts = measure_lib.encode_prompts(tokenizer, measure_lib.read_prompts(args.prompts), cfg,
                                       add_bos=not args.no_bos)
  result = analyse(model, prompts, batch_size=args.batch_size)

  os.makedirs(args.out, exist_ok=True)
  freqs = measure_lib.chunk_frequencies(cfg)  # None when the layers' encodings differ.
  np.savez(os.path.join(args.out, "frequency_usage.npz"),
           **({} if freqs is None else {"chunk_frequencies": freqs}),
           **{k: result[k] for k in ("q", "k", "v", "diagonal", "previous_token")})
  name = os.path.basename(os.path.normpath(args.workdir))
  where = f"{name} step {step}, {len(prompts)} prompts"
  paths = [plots.save_figure(plots.plot_frequency_usage(
      {kind: result[kind].mean(axis=1) for kind in ("q", "k", "v")}, row_label="layer",
      freqs=freqs, title=f"Fig. 3: mean chunk norm per layer ({where})"),
      os.path.join(args.out, "fig3_frequency_usage_layers.png"))]
  paths.append(plots.save_figure(plots.plot_frequency_usage(
      {kind: result[kind][args.layer] for kind in ("q", "k", "v")}, row_label="head",
      freqs=freqs, title=f"Fig. 4: layer {args.layer} per head ({where})"),
      os.path.join(args.out, f"fig4_frequency_usage_layer{args.layer}.png")))

  threshold = 1.0 - args.epsilon
  heads = {kind: positional_heads.heads_above(result[kind], threshold)
           for kind in ("diagonal", "previous_token")}
  report = {"checkpoint": args.workdir, "step": step, "num_prompts": len(prompts),
            "epsilon": args.epsilon, "heads": heads,
            "scores": {kind: np.round(result[kind], 4).tolist()
                       for kind in ("diagonal", "previous_token")}}
  paths.append(report_lib.write_json(os.path.join(args.out, "positional_heads.json"), report))
  for kind, found in heads.items():
    top = ", ".join(f"L{l}H{h} {s:.3f}" for l, h, s in found[:8]) or "none"
    print(f"{kind} heads (mean score > {threshold:g}): {top}")
    for layer, head, _ in found[:4]:
      fig = plots.plot_attention(result["attn_first"][layer][head],
                                 title=f"{kind} head L{layer}H{head}, first prompt")
      paths.append(plots.save_figure(
          fig, os.path.join(args.out, f"attention_{kind}_L{layer}H{head}.png")))
  k_layer = result["k"][args.layer]
  top_heads = np.argsort(-k_layer[:, : k_layer.shape[1] // 4].mean(axis=1))[:3]
  print(f"layer {args.layer}: heads with the most key norm in the highest quarter of "
        f"frequencies: {top_heads.tolist()}")
  print("wrote " + ", ".join(paths))
  return paths


if __name__ == "__main__":
  main()
