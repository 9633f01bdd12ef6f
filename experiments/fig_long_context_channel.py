"""Thm 6.1: a low-frequency semantic channel breaks over long context; a p-RoPE one does not.

One 2-D channel of frequency g: the query ψ looks for a target key ψ r tokens back, among
distractor keys m·ψ (margin m < 1) at every later position. A distractor overtakes the target at
``r* = ⌊arccos(m)/g⌋ + 1`` tokens (``semantic_channels.breaking_distance``); the kernel simulation
(``semantic_channels.simulate_channel``) checks it. p-RoPE turns the lowest frequencies into
identity channels (g = 0), which never break. Writes

* ``thm61_breaking_distance.png``: r* against g (log–log) for a few margins, closed form and
  simulation, with RoPE's lowest frequency (θ = 10k and 500k) and p-RoPE's lowest kept one marked;
* ``thm61_channel_attention.png``: α on the target against r for the lowest chunk of a head
  under RoPE (θ = 10k, 500k) and p-RoPE (identity);
* ``thm61_channel.npz``: the numbers.

  python -m experiments.fig_long_context_channel --out /tmp/figs [--head_dim 256 --margin 0.9]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np

from rope_jax import rope
from rope_jax.analysis import plots
from rope_jax.analysis import semantic_channels as sc
from rope_jax.config.schema import RopeConfig


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--head_dim", type=int, default=256)
  parser.add_argument("--theta", type=float, default=rope.DEFAULT_THETA)
  parser.add_argument("--long_theta", type=float, default=500_000.0, help="the larger base")
  parser.add_argument("--fraction", type=float, default=0.75, help="p of the p-RoPE compared")
  parser.add_argument("--margin", type=float, default=0.9, help="distractor match m in (0, 1)")
  parser.add_argument("--margins", type=float, nargs="+", default=[0.5, 0.9, 0.99])
  parser.add_argument("--gap", type=float, default=20.0,
                      help="‖ψ‖²(1 - m): the target's logit lead over a distractor at r = 0")
  parser.add_argument("--num_positions", type=int, default=12_000,
                      help="longest r simulated for the attention curves (tokens)")
  parser.add_argument("--sim_positions", type=int, default=4000,
                      help="longest r simulated for the breaking-distance markers (tokens)")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[str]:
  args = parse_args(argv)
  H, last = args.head_dim, args.head_dim // 2 - 1
  p_rope = RopeConfig(theta=args.theta, fraction=args.fraction)
  lowest = {
      f"RoPE θ = {args.theta:g}": sc.channel_frequency(H, last, rope=RopeConfig(theta=args.theta)),
      f"RoPE θ = {args.long_theta:g}": sc.channel_frequency(
          H, last, rope=RopeConfig(theta=args.long_theta)),
      f"{args.fraction:g}-RoPE (identity)": sc.channel_frequency(H, last, rope=p_rope),
  }
  kept = rope.num_rotated_pairs(H, args.fraction) - 1
  p_rope_slowest = sc.channel_frequency(H, kept, rope=p_rope)
  os.makedirs(args.out, exist_ok=True)
  paths = []

  # r* against g: closed form on a grid, simulation at the ladder's chunks that break in range.
  grid = np.logspace(-6.5, 0, 400)
  ladder = rope.frequency_ladder(H, args.theta)[:: max(H // 32, 1)]
  closed = {f"m = {m:g}": sc.breaking_distance(grid, m) for m in args.margins}
  sim_freqs = ladder[sc.breaking_distance(ladder, args.margin) <= args.sim_positions]
  sim_r = np.array([sc.simulate_channel(g, args.sim_positions, margin=args.margin).breaking_distance
                    for g in sim_freqs])
  fig = plots.plot_breaking_distance(
      grid, closed, simulated={f"m = {args.margin:g}": (sim_freqs, sim_r)},
      markers={
          f"RoPE lowest g, θ = {args.theta:g}": lowest[f"RoPE θ = {args.theta:g}"],
          f"RoPE lowest g, θ = {args.long_theta:g}": lowest[f"RoPE θ = {args.long_theta:g}"],
          f"{args.fraction:g}-RoPE lowest kept g": p_rope_slowest,
      },
      title=f"Thm 6.1: distance at which a distractor (match m) overtakes the target (H = {H})")
  paths.append(plots.save_figure(fig, os.path.join(args.out, "thm61_breaking_distance.png")))

  # α on the target against r for the head's lowest chunk under each encoding.
  norm = float(np.sqrt(args.gap / (1.0 - args.margin)))
  sims = {label: sc.simulate_channel(g, args.num_positions, margin=args.margin, norm=norm)
          for label, g in lowest.items()}
  def describe(label: str, g: float) -> str:
    r_star = sc.breaking_distance(g, args.margin)
    when = f"breaks at r* = {r_star:g} tokens" if np.isfinite(r_star) else "never breaks"
    return f"{label}: g = {g:.3g} rad/token, {when}"

  labels = {label: describe(label, g) for label, g in lowest.items()}
  fig = plots.plot_channel_attention(
      np.arange(1, args.num_positions + 1),
      {labels[k]: s.target_attention for k, s in sims.items()},
      breaking={labels[k]: s.breaking_distance for k, s in sims.items()},
      title=f"Thm 6.1: lowest chunk of an H = {H} head as a semantic channel "
            f"(m = {args.margin:g}, ‖ψ‖ = {norm:.1f})")
  paths.append(plots.save_figure(fig, os.path.join(args.out, "thm61_channel_attention.png")))

  np.savez(os.path.join(args.out, "thm61_channel.npz"), freq_grid=grid,
           margins=np.array(args.margins), **{f"closed_{k}": v for k, v in closed.items()},
           sim_freqs=sim_freqs, sim_breaking=sim_r,
           **{f"alpha_{k}": s.target_attention for k, s in sims.items()})
  for label, s in sims.items():
    print(f"{label}: g = {lowest[label]:.3g} rad/token, closed-form r* = "
          f"{sc.breaking_distance(lowest[label], args.margin):g}, simulated r* = "
          f"{s.breaking_distance:g} (within {args.num_positions} tokens)")
  print("wrote", *paths, sep="\n  ")
  return paths


if __name__ == "__main__":
  main()
