"""Error of the rotation angle ``position × frequency`` against float64, at every position.

For each θ, every position 0..2^20 and all H/2 = 128 frequencies of a head of width 256, the
angle from ``rope_jax.angles.exact_angles`` (fixed-point turns) and from the plain float32
product are compared with the float64 product (itself within ~1e-10 rad at 2^20), modulo 2π.

    python -m benchmarks.angle_error            # writes the "angle_error" section of BENCHMARKS.md
"""

from __future__ import annotations

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import report
from rope_jax import angles

_LOG2_POSITIONS = flags.DEFINE_integer("log2_positions", 20, "Positions 0..2^N are checked.")
_HEAD_DIM = flags.DEFINE_integer("head_dim", 256, "H; the H/2 frequencies of the ladder.")
_WRITE = flags.DEFINE_bool("write", True, "Write the section of BENCHMARKS.md.")
THETAS = (1e4, 5e5, 1e6)
CHUNK = 1 << 15


def max_errors(theta: float, head_dim: int, last: int) -> tuple[float, float, int]:
  """(max |exact - float64|, max |float32 - float64|, position of the former) in radians."""
  freqs = theta ** (-2.0 * np.arange(head_dim // 2) / head_dim)
  exact = jax.jit(lambda p: angles.exact_angles(p, freqs))
  plain = jax.jit(lambda p: angles.float32_angles(p, freqs))
  worst, worst32, where = 0.0, 0.0, 0
  for start in range(0, last + 1, CHUNK):
    pos = np.arange(start, min(start + CHUNK, last + 1), dtype=np.int32)
    want = pos[:, None].astype(np.float64) * freqs
    for fn, is_exact in ((exact, True), (plain, False)):
      got = np.asarray(fn(jnp.asarray(pos)), np.float64)
      err = np.abs(np.remainder(got - want + np.pi, 2 * np.pi) - np.pi)
      if is_exact and err.max() > worst:
        worst, where = float(err.max()), int(pos[np.argmax(err.max(axis=1))])
      elif not is_exact:
        worst32 = max(worst32, float(err.max()))
  return worst, worst32, where


def main(_):
  last = 2**_LOG2_POSITIONS.value
  rows = []
  for theta in THETAS:
    worst, worst32, where = max_errors(theta, _HEAD_DIM.value, last)
    rows.append([f"{theta:g}", f"{worst:.2e}", str(where), f"{worst32:.2e}"])
    print(f"theta={theta:g}: exact {worst:.3e} rad (at p={where}), float32 {worst32:.3e} rad")
  body = (
      "## Rotation-angle error against float64\n\n"
      f"`python -m benchmarks.angle_error` · every position 0..2^{_LOG2_POSITIONS.value}, all "
      f"{_HEAD_DIM.value // 2} frequencies of H = {_HEAD_DIM.value} · {report.machine_line()}\n\n"
      "Max |angle − float64 angle| modulo 2π, in radians. `exact_angles` forms the angle in "
      "64-bit fixed-point turns (uint32 arithmetic wraps modulo one turn) and converts once to "
      "float32 in [-π, π); the float32 product is what RoPE implementations usually compute.\n\n"
      + report.markdown_table(["θ", "exact_angles", "at position", "float32 product"], rows))
  if _WRITE.value:
    report.write_section("angle_error", body)


if __name__ == "__main__":
  app.run(main)
