"""Low frequencies as semantic channels, and why they break over long context (§6; Thm 6.1).

The paper finds sparse high-norm bands at the lowest RoPE frequencies and reads them as semantic
"information channels". Thm 6.1 (case d = 2, one frequency g): over a long enough sequence no head
can keep its attention on a target token, because the rotation ``r·g`` eventually turns the
target away from the query while some non-target token stays aligned (Lemma A.2: irrational
rotations are dense). p-RoPE makes the lowest frequencies identity (g = 0): such a channel is
distance agnostic and never breaks.

Set-up used here (one 2-D channel of frequency g, ``s = ‖ψ‖²``):

* the query is ψ; the *target* key is ψ, a perfect semantic match, r tokens before the query;
* *distractor* keys are ``m·ψ`` with margin ``m ∈ (0, 1)`` (a weaker match, e.g. m = 0.9) at
  every position after the target, the query's own position included.

Logits: target ``s·cos(r g)``, distractor at distance Δ ``m·s·cos(Δ g)``. The strongest distractor
is the one at Δ = 0 (logit ``m·s``), so the target is overtaken at the first distance where
``cos(r g) < m``. For ``0 < g <= π`` that is ``r* = ⌊arccos(m)/g⌋ + 1`` tokens
(:func:`breaking_distance`); the simulation through the kernel (:func:`simulate_channel`) checks
it. For g = 0 (a p-RoPE identity channel) the target always wins: r* = ∞.

r* is where the *argmax* flips. The attention weight on the target starts falling earlier: r
distractors share the softmax mass, so α ≈ 1 / (1 + r·e^{-s(cos(rg) - m)}) near r*.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rope_jax import rope as rope_lib
from rope_jax.analysis.chunks import DEFAULT_ROPE
from rope_jax.analysis.chunks import chunk_frequencies
from rope_jax.config.schema import RopeConfig


def _check_margin(margin: float) -> None:
  if not 0.0 < margin < 1.0:
    raise ValueError(
        f"margin m (distractor match / target match) must be in (0, 1), got {margin}.")


def _check_freq(freq: float) -> None:
  if not 0.0 <= freq <= math.pi:
    raise ValueError(f"freq g must be in [0, π] rad/token (faster aliases), got {freq}.")


def channel_frequency(
    head_dim: int,
    chunk: int,
    *,
    rope: RopeConfig = DEFAULT_ROPE,
) -> float:
  """The frequency (rad/token) of chunk ``chunk`` of a head; 0 for an identity chunk.

  E.g. ``chunk = H/2 - 1``: RoPE's lowest frequency ``θ^{-(H-2)/H}`` with ``fraction=1``, and an
  identity channel with p-RoPE ``RopeConfig(fraction=p)``, p < 1.
  """
  freqs = chunk_frequencies(rope, head_dim)
  if not 0 <= chunk < len(freqs):
    raise ValueError(f"chunk must be in [0, H/2 = {len(freqs)}), got {chunk}.")
  return float(freqs[chunk])


def breaking_distance(freq, margin: float) -> np.ndarray | float:
  """Closed form: the first distance r (tokens) at which a distractor overtakes the target.

  ``r* = ⌊arccos(m) / g⌋ + 1`` for ``0 < g <= π``: for r < r*, ``r g <= arccos m <= π/2`` so
  ``cos(r g) >= m``; at r*, ``r g ∈ (arccos m, arccos m + g] ⊂ (arccos m, 2π - arccos m)`` since
  ``g <= π < 2π - 2 arccos m`` for ``m > 0``, so ``cos(r g) < m``. For g = 0, ``r* = ∞``.

  Args:
    freq: g in [0, π] rad/token (scalar or array).
    margin: m in (0, 1).

  Returns:
    float64 r* in tokens (``inf`` where g = 0), shaped like ``freq``.
  """
  _check_margin(margin)
  g = np.asarray(freq, np.float64)
  if np.any((g < 0) | (g > math.pi)) or np.any(~np.isfinite(g)):
    raise ValueError(f"freq g must be in [0, π] rad/token (faster aliases), got {freq}.")
  with np.errstate(divide="ignore"):
    r = np.where(g > 0, np.floor(np.arccos(margin) / np.where(g > 0, g, 1.0)) + 1, np.inf)
  return float(r) if r.ndim == 0 else r


class ChannelSimulation(NamedTuple):
  """A d = 2 channel simulated through the kernel; index r is the query r tokens after the target.

  Attributes:
    distances: int ``[R]``, r = 1 .. R (tokens).
    target_logit: float32 ``[R]``, ``⟨R(r) ψ, R(0) ψ⟩``.
    max_distractor_logit: float32 ``[R]``, the largest distractor logit the query r sees.
    target_attention: float32 ``[R]``, α on the target (causal softmax over target + distractors).
    breaking_distance: first r with ``max_distractor_logit > target_logit``; ``inf`` if none.
  """
  distances: np.ndarray
  target_logit: np.ndarray
  max_distractor_logit: np.ndarray
  target_attention: np.ndarray
  breaking_distance: float


def _rotate_channel(x: jax.Array, positions: np.ndarray, freq: float) -> jax.Array:
  """Rotates 2-D channel vectors ``x [L, 2]`` at ``positions [L]`` by the kernel's rotation."""
  return _rotate_by(x, rope_lib.rope_angles(positions, np.array([freq], np.float64)))  # [L, 1]


@jax.jit
def _rotate_by(x: jax.Array, angles: jax.Array) -> jax.Array:
  return rope_lib.rotate(x, jnp.cos(angles), jnp.sin(angles))


@jax.jit
def _channel_block(q_pos: jax.Array, queries: jax.Array, keys: jax.Array):
  """Target logit, max distractor logit and α on the target for rotated queries ``[b, 2]``."""
  logits = queries @ keys.T  # [b, R + 1]
  key_pos = jnp.arange(keys.shape[0])
  visible = key_pos[None, :] <= q_pos[:, None]
  distractor = jnp.where(visible & (key_pos[None, :] > 0), logits, -jnp.inf)
  alpha = jax.nn.softmax(jnp.where(visible, logits, -jnp.inf), axis=-1)[:, 0]
  return logits[:, 0], jnp.max(distractor, axis=-1), alpha


def simulate_channel(
    freq: float,
    num_positions: int,
    *,
    margin: float,
    norm: float = 1.0,
    block: int = 1024,
) -> ChannelSimulation:
  """Attention of a single-frequency channel: target at position 0, distractors at 1..R.

  Every token at position r = 1..R queries with ψ; keys are ψ at position 0 (the target) and
  ``m·ψ`` at positions 1..R (the query's own included). Queries are processed ``block`` at a time,
  so memory is ``O(block · R)``.

  Args:
    freq: g in [0, π] rad/token (0 = identity channel).
    num_positions: R, the number of query positions (the longest distance tested, tokens).
    margin: m in (0, 1), the distractors' match relative to the target's.
    norm: ‖ψ‖ (logits scale as ``norm²``).
    block: queries per block.
  """
  _check_freq(freq)
  _check_margin(margin)
  if num_positions < 1:
    raise ValueError(f"num_positions must be >= 1, got {num_positions}.")
  psi = np.full((2,), norm / np.sqrt(2.0), np.float32)
  key_pos = np.arange(num_positions + 1)
  key_scale = np.where(key_pos == 0, 1.0, margin).astype(np.float32)[:, None]
  keys = _rotate_channel(key_scale * psi, key_pos, freq)  # [R + 1, 2]
  block = min(block, num_positions)
  num_blocks = -(-num_positions // block)
  # Pad the queries to whole blocks (the tail runs past R and is cut): one compilation.
  q_pos = np.arange(1, num_blocks * block + 1)
  queries = np.asarray(_rotate_channel(np.broadcast_to(psi, (len(q_pos), 2)), q_pos, freq))
  outs = [_channel_block(q_pos[b * block:(b + 1) * block], queries[b * block:(b + 1) * block],
                         keys) for b in range(num_blocks)]
  target, distractor, alpha = (np.concatenate([np.asarray(o[i]) for o in outs])[:num_positions]
                               for i in range(3))
  broken = np.flatnonzero(distractor > target)
  return ChannelSimulation(
      distances=np.arange(1, num_positions + 1),
      target_logit=target,
      max_distractor_logit=distractor,
      target_attention=alpha,
      breaking_distance=float(broken[0] + 1) if broken.size else math.inf,
  )
