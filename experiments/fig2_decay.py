"""Fig. 2 (a, b) and Fig. 9 of the paper: RoPE does not decay activations by itself (SPEC §2a).

(a) all-ones queries and keys decay with distance, as RoFormer's relative upper bound says;
(b) i.i.d. Gaussian queries and keys (a fresh pair at every position) give noise around 0 with
no decay (Prop. 3.2: the expectation is 0 at every distance); (c) one Gaussian pair repeated at
every position (Fig. 9) shows no clear decay either.

The paper does not state H or θ for this figure; the defaults follow Gemma (H = 256, θ = 10k).

  python -m experiments.fig2_decay --out /tmp/figs [--head_dim 256 --theta 10000 \
      --fraction 1.0 --variant p_rope --layout split_half --max_distance 5000]

Writes ``fig2_decay.png`` and ``fig2_decay.npz`` (the curves) into ``--out``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import jax
import numpy as np

from rope_jax import rope
from rope_jax.analysis import decay
from rope_jax.analysis import plots
from rope_jax.config.schema import RopeConfig


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--head_dim", type=int, default=256)
  parser.add_argument("--theta", type=float, default=rope.DEFAULT_THETA)
  parser.add_argument("--fraction", type=float, default=1.0, help="p of p-RoPE")
  parser.add_argument("--variant", default="p_rope", choices=rope.VARIANTS)
  parser.add_argument("--layout", default="split_half", choices=rope.LAYOUTS)
  parser.add_argument("--max_distance", type=int, default=5000, help="tokens")
  parser.add_argument("--num_points", type=int, default=2001, help="distances on the x axis")
  parser.add_argument("--num_samples", type=int, default=16, help="Gaussian draws for the band")
  parser.add_argument("--num_pairs", type=int, default=3, help="repeated pairs drawn (Fig. 9)")
  parser.add_argument("--seed", type=int, default=0)
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[str]:
  args = parse_args(argv)
  encoding = RopeConfig(theta=args.theta, fraction=args.fraction, variant=args.variant,
                        layout=args.layout)
  distances = np.unique(np.linspace(0, args.max_distance, args.num_points).round().astype(int))
  iid_rng, repeated_rng = jax.random.split(jax.random.key(args.seed))
  ones = np.asarray(decay.all_ones_activation(
      distances, head_dim=args.head_dim, rope=encoding))
  bound = decay.roformer_relative_upper_bound(distances, head_dim=args.head_dim, rope=encoding)
  iid = np.asarray(decay.iid_gaussian_activation(
      iid_rng, distances, head_dim=args.head_dim, num_samples=args.num_samples, rope=encoding))
  repeated = np.asarray(decay.repeated_gaussian_activation(
      repeated_rng, distances, head_dim=args.head_dim, num_samples=args.num_pairs, rope=encoding))

  os.makedirs(args.out, exist_ok=True)
  np.savez(os.path.join(args.out, "fig2_decay.npz"), distances=distances, all_ones=ones,
           roformer_bound=bound, iid_gaussian=iid, repeated_gaussian=repeated)
  title = (f"Does RoPE decay with distance?  H = {args.head_dim}, θ = {args.theta:g}, "
           f"{args.variant} p = {args.fraction:g}, {args.layout}")
  fig = plots.plot_decay(distances, head_dim=args.head_dim, all_ones=ones, bound=bound,
                         iid_gaussian=iid, repeated_gaussian=repeated, title=title)
  path = plots.save_figure(fig, os.path.join(args.out, "fig2_decay.png"))
  mean, stderr = decay.mean_and_stderr(iid)
  print(f"all-ones: a(0)/H = {ones[0] / args.head_dim:.4f}, "
        f"a({distances[-1]})/H = {ones[-1] / args.head_dim:.4f}; "
        f"i.i.d. Gaussian: max |mean|/s.e. over distances = {np.max(np.abs(mean) / stderr):.2f}")
  print(f"wrote {path}")
  return [path]


if __name__ == "__main__":
  main()
