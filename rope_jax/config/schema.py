"""The typed config sections: the one place that says what a valid config is.

Layer 0 of the house (beside ``rope.py``): imports nothing of the project but the kernel.
Shapes: H head dimension.
"""

from __future__ import annotations

import dataclasses

import jax

from rope_jax import rope as rope_lib


@dataclasses.dataclass(frozen=True)
class RopeConfig:
  """A positional encoding; field meanings as in ``rope_jax.rope.apply_rope``."""

  variant: str = "p_rope"
  fraction: float = 1.0
  theta: float = rope_lib.DEFAULT_THETA
  scale_factor: float = 1.0
  layout: str = "split_half"

  def validate(self, head_dim: int) -> None:
    rope_lib.validate_rope_args(head_dim, theta=self.theta, fraction=self.fraction,
                                variant=self.variant, layout=self.layout,
                                scale_factor=self.scale_factor)

  def apply(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    """Rotates ``x [B, L, N, H]`` at ``positions [B, L]``."""
    return rope_lib.apply_rope(x, positions, **dataclasses.asdict(self))

  def tables(self, positions: jax.Array, head_dim: int):
    """cos/sin tables ``[B, L, 1, R/2]`` at ``positions [B, L]`` (None for NoPE)."""
    return rope_lib.rope_tables(positions, head_dim, theta=self.theta, fraction=self.fraction,
                                variant=self.variant, scale_factor=self.scale_factor)

  def apply_tables(self, x: jax.Array, tables) -> jax.Array:
    """Rotates ``x [B, L, N, H]`` with tables from :meth:`tables`."""
    return rope_lib.apply_rope_tables(x, tables, layout=self.layout)
