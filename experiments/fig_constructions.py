"""Positional heads: Thm 5.3 (RoPE can build them) and Prop. 5.2 (NoPE cannot) (SPEC §2c).

Thm 5.3 puts ψ in one RoPE chunk of frequency g: q_i = k_j = ψ gives a diagonal head and
k_j = ρ(g)ψ a previous-token head, with logits ‖ψ‖² cos((j − i + offset) g). This script draws

* ``thm53_alpha_vs_norm_{diagonal,previous_token}.png``: min over queries of α on the target
  against ‖ψ‖ for a few frequencies; all tend to 1, dotted lines are the closed-form sufficient
  norm (``positional_heads.sufficient_norm``);
* ``thm53_norm_vs_frequency.png``: the ‖ψ‖ needed for α > 1 − ε at every chunk of the ladder;
  the fast end needs the least, the slow end grows like 1/g (and, in float32, the slowest chunks
  cannot be resolved at all: 1 − cos g is below float32 resolution);
* ``thm53_attention_patterns.png``: the two constructed heads at the highest frequency;
* ``prop52_nope_counterexample.png``: α_{3,3} on [bos, x, x] for random single heads,
  NoPE (never above 1/2) against RoPE.

  python -m experiments.fig_constructions --out /tmp/figs [--head_dim 64 --seq_len 32 --eps 0.05]

Also writes ``constructions.npz`` with the numbers.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rope_jax import rope
from rope_jax.analysis import plots
from rope_jax.analysis import positional_heads as ph
from rope_jax.config.schema import RopeConfig


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--head_dim", type=int, default=64)
  parser.add_argument("--theta", type=float, default=rope.DEFAULT_THETA)
  parser.add_argument("--layout", default="split_half", choices=rope.LAYOUTS)
  parser.add_argument("--seq_len", type=int, default=32, help="L, tokens")
  parser.add_argument("--eps", type=float, default=0.05, help="target α > 1 - eps")
  parser.add_argument("--num_heads", type=int, default=2000, help="random heads for Prop. 5.2")
  parser.add_argument("--seed", type=int, default=0)
  return parser.parse_args(argv)


def needed_norm(alpha: np.ndarray, norms: np.ndarray, eps: float) -> float:
  """Smallest grid norm from which ``alpha [S]`` stays above 1 - eps; NaN if never."""
  above = alpha > 1 - eps
  ok = np.flatnonzero(~above)
  first = 0 if not ok.size else ok[-1] + 1
  return float(norms[first]) if first < len(norms) else float("nan")


def prop52_alphas(args, *, width: int = 16, weight_scale: float = 2.0) -> tuple[np.ndarray, ...]:
  """α_{3,3} on [bos, x, x] for ``num_heads`` random heads, NoPE and RoPE."""
  kq, kk, kb, kx = jax.random.split(jax.random.key(args.seed), 4)
  n = args.num_heads
  w_q = jax.random.normal(kq, (n, width, width)) * weight_scale / np.sqrt(width)
  w_k = jax.random.normal(kk, (n, width, width)) * weight_scale / np.sqrt(width)
  x_bos, x = jax.random.normal(kb, (n, width)), jax.random.normal(kx, (n, width))
  attend = jax.jit(jax.vmap(
      lambda a, b, c, d, encoding: ph.repeated_token_attention(a, b, c, d, rope=encoding),
      in_axes=(0, 0, 0, 0, None)), static_argnums=4)
  nope, full = (RopeConfig(theta=args.theta, fraction=p, layout=args.layout) for p in (0.0, 1.0))
  return (np.asarray(attend(w_q, w_k, x_bos, x, nope)[:, 2, 2]),
          np.asarray(attend(w_q, w_k, x_bos, x, full)[:, 2, 2]))


def main(argv: Sequence[str] | None = None) -> list[str]:
  args = parse_args(argv)
  H, L, eps = args.head_dim, args.seq_len, args.eps
  freqs = rope.frequency_ladder(H, args.theta)
  norms = np.logspace(-1, 4.5, 300)
  kw = dict(head_dim=H, seq_len=L, rope=RopeConfig(theta=args.theta, layout=args.layout))
  os.makedirs(args.out, exist_ok=True)
  paths, record = [], {"norms": norms, "freqs": freqs}

  # min_i α_target(‖ψ‖) for every chunk: logits scale as ‖ψ‖², so one unit-norm head per chunk.
  alpha = {}
  for kind in ph.HEAD_KINDS:
    unit = jnp.stack([ph.construction_logits(kind, chunk=c, **kw) for c in range(H // 2)])
    scaled = unit[:, None] * jnp.asarray(norms**2, jnp.float32)[None, :, None, None]
    alpha[kind] = np.asarray(ph.min_target_attention(ph.causal_attention(scaled), kind))  # [H/2, S]
    record[f"min_alpha_{kind}"] = alpha[kind]
  sufficient = np.array([ph.sufficient_norm(g, L, eps) for g in freqs])
  record["sufficient_norm"] = sufficient

  shown = sorted({0, H // 16, H // 8, H // 4})
  for kind in ph.HEAD_KINDS:
    labels = {c: f"chunk {c}, g = {freqs[c]:.3g} rad/token" for c in shown}
    fig = plots.plot_target_attention_vs_norm(
        norms, {labels[c]: alpha[kind][c] for c in shown}, eps=eps,
        sufficient={labels[c]: sufficient[c] for c in shown},
        title=f"Thm 5.3 {kind.replace('_', '-')} head: min_i α on the target vs ‖ψ‖ "
              f"(H = {H}, L = {L}; dotted: sufficient norm)")
    paths.append(plots.save_figure(fig, os.path.join(args.out, f"thm53_alpha_vs_norm_{kind}.png")))

  # float32 logits cannot resolve the gap ‖ψ‖²(1 - cos g) once 1 - cos g nears float32
  # resolution: those chunks are left out (NaN) rather than shown as kernel noise.
  resolvable = 1.0 - np.cos(freqs) > 8 * np.finfo(np.float32).eps
  needed = {kind: np.where(resolvable, [needed_norm(a, norms, eps) for a in alpha[kind]], np.nan)
            for kind in ph.HEAD_KINDS}
  record.update({f"needed_norm_{k}": v for k, v in needed.items()})
  fig = plots.plot_norm_vs_frequency(
      freqs, {k.replace("_", "-") + " head (float32 kernel)": v for k, v in needed.items()},
      sufficient=sufficient,
      title=f"‖ψ‖ needed for α > 1 − {eps} at every query (H = {H}, θ = {args.theta:g}, L = {L})\n"
            f"({int((~resolvable).sum())} slowest chunks omitted: 1 − cos g below float32 "
            "resolution)")
  paths.append(plots.save_figure(fig, os.path.join(args.out, "thm53_norm_vs_frequency.png")))

  small = dict(kw, seq_len=16)
  patterns = {
      f"{kind.replace('_', '-')} head, chunk 0 (g = {freqs[0]:.3g}), ‖ψ‖ = {sufficient[0]:.1f}":
      np.asarray(ph.causal_attention(ph.construction_logits(kind, norm=sufficient[0], **small)))
      for kind in ph.HEAD_KINDS}
  fig = plots.plot_attention(patterns, title="Thm 5.3 constructions at the highest frequency")
  paths.append(plots.save_figure(fig, os.path.join(args.out, "thm53_attention_patterns.png")))

  alpha_nope, alpha_rope = prop52_alphas(args)
  record.update(alpha33_nope=alpha_nope, alpha33_rope=alpha_rope)
  fig = plots.plot_nope_counterexample(
      alpha_nope, alpha_rope,
      title=f"Prop. 5.2: α₃,₃ on [bos, x, x] for {args.num_heads} random heads\n"
            f"NoPE: α₃,₃ = α₃,₂ ≤ 1/2 in every head (max {alpha_nope.max():.6f} in float32)")
  paths.append(plots.save_figure(fig, os.path.join(args.out, "prop52_nope_counterexample.png")))

  np.savez(os.path.join(args.out, "constructions.npz"), **record)
  print(f"needed ‖ψ‖ at g = 1: diagonal {needed['diagonal'][0]:.3g}, previous-token "
        f"{needed['previous_token'][0]:.3g} (sufficient {sufficient[0]:.3g}); "
        f"NoPE max α₃,₃ = {alpha_nope.max():.6f}, RoPE max α₃,₃ = {alpha_rope.max():.4f}")
  print("wrote", *paths, sep="\n  ")
  return paths


if __name__ == "__main__":
  main()
