"""Rotary positional encodings as pure functions: RoPE, p-RoPE and the paper's controls.

Notation follows Barbero et al. (2025), "Round and Round We Go!" (SPEC.md §1):

* Head dimension H (even). Query/key vectors are split into H/2 two-dimensional chunks
  ("pairs"); pair i rotates by the angle ``position * g_i``.
* The frequency ladder is ``g_i = θ^(-2i/H)`` for ``i = 0 .. H/2-1``, fastest first:
  ``g_0 = 1`` rad/token and ``g_{H/2-1} ≈ 1/θ``.

Variants (``variant=``, each with a fraction ``p`` in [0, 1]):

* ``"p_rope"`` (the paper's §6.1): keep the highest ``int(p·H//2)`` frequencies of the ladder
  unchanged and make the rest identity (frequency 0: cos = 1, sin = 0). Channels stay in place.
  ``p = 1`` is RoPE, ``p = 0`` is NoPE.
* ``"reversed"`` (Table 2 control): the same count of kept frequencies, but the *lowest* are kept
  and the highest are made identity.
* ``"partial"`` (GPT-NeoX ``rotary_pct``, HF ``partial_rotary_factor``): rotate only the first
  ``R = 2·int(p·H//2)`` dims with a ladder re-spread over R, ``θ^(-2i/R)``; the rest pass
  through. Unlike p-RoPE it keeps a ~1/θ slowest frequency.

Pairing (``layout=``): ``"split_half"`` pairs ``(x[i], x[i + D/2])`` (Gemma, GPT-NeoX
``rotate_half``); ``"interleaved"`` pairs ``(x[2i], x[2i+1])`` (RoFormer, original Llama).
D is the rotated width (H, or R for ``"partial"``).

Shapes: ``x`` is ``[..., L, N, H]`` and ``positions`` is ``[..., L]`` with the same leading dims
(``[B, L, N, H]`` and ``[B, L]`` in a model; ``[L, N, H]`` and ``[L]`` under ``vmap``).
Positions are integer token indices (any values: packed sequences restart at 0, decoding offsets).
Angles of integer positions are formed exactly (``rope_jax.angles``: fixed-point turns, reduced to
[-π, π), within ~3e-7 rad of float64 at any int32 position) and are float32, whatever the input
dtype; fractional positions (analysis) use the float32 product. The output has the input's dtype.

Context extension (``rope_type`` and its Hugging Face ``rope_parameters``, ``rope_params``):
``"linear"``, ``"ntk"``, ``"dynamic"``, ``"yarn"``, ``"llama3"`` rescale the ladder *before* the
variant keeps or removes pairs (``rope_jax.rope_scaling``); ``dim`` of those formulas is H (R for
``"partial"``). ``scale_factor`` is the older spelling of ``"linear"`` and cannot be combined
with a ``rope_type``. YaRN's attention factor scales logits, not rotations
(``rope_scaling.attention_factor``).

All hyperparameters are static Python values, validated once at each public entry
(:func:`apply_rope`, :func:`rope_tables`, :func:`rotary_frequencies`, ...; the private helpers
they call trust their arguments), so a bad value raises a ``ValueError`` at trace time, before
anything is compiled.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from rope_jax import angles as angles_lib
from rope_jax import rope_scaling

Variant = Literal["p_rope", "reversed", "partial"]
Layout = Literal["split_half", "interleaved"]

VARIANTS: tuple[str, ...] = ("p_rope", "reversed", "partial")
LAYOUTS: tuple[str, ...] = ("split_half", "interleaved")
DEFAULT_THETA = 10_000.0


def validate_rope_args(
    head_dim: int,
    *,
    theta: float = DEFAULT_THETA,
    fraction: float = 1.0,
    variant: str = "p_rope",
    layout: str = "split_half",
    scale_factor: float = 1.0,
    rope_type: str = "default",
    rope_params: Mapping[str, Any] | None = None,
) -> None:
  """Raises ValueError naming the bad value and what is allowed."""
  if isinstance(head_dim, bool) or not isinstance(head_dim, (int, np.integer)):
    raise ValueError(f"head_dim must be a positive even int, got {head_dim!r}.")
  if head_dim <= 0 or head_dim % 2:
    raise ValueError(f"head_dim must be a positive even int, got {head_dim}.")
  if not np.isfinite(theta) or theta <= 0:
    raise ValueError(f"theta (the base wavelength) must be a finite number > 0, got {theta!r}.")
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"fraction p must be in [0, 1], got {fraction!r}.")
  if variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
  if layout not in LAYOUTS:
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
  if not np.isfinite(scale_factor) or scale_factor < 1.0:
    raise ValueError(
        f"scale_factor (linear position interpolation) must be >= 1, got {scale_factor!r}.")
  rope_scaling.validate_rope_scaling(rope_type, rope_params)
  if rope_type != "default" and scale_factor != 1.0:
    raise ValueError(
        f"scale_factor={scale_factor!r} (the older spelling of rope type 'linear') cannot be "
        f"combined with rope type {rope_type!r}; use rope type 'linear' with factor instead.")


def frequency_ladder(head_dim: int, theta: float = DEFAULT_THETA) -> np.ndarray:
  """Standard RoPE frequencies ``g_i = θ^(-2i/H)``, i = 0..H/2-1, fastest first.

  Returns:
    float64 numpy array ``[H/2]`` in radians per token.
  """
  validate_rope_args(head_dim, theta=theta)
  return _ladder(head_dim, theta)


def _ladder(head_dim: int, theta: float) -> np.ndarray:
  return float(theta) ** (-2.0 * np.arange(head_dim // 2, dtype=np.float64) / head_dim)


def num_rotated_pairs(head_dim: int, fraction: float) -> int:
  """Number of rotating 2-D pairs kept by p-RoPE: ``int(p·H // 2)``, as in the paper's code."""
  return int(fraction * head_dim // 2)


def rotary_frequencies(
    head_dim: int,
    *,
    theta: float = DEFAULT_THETA,
    fraction: float = 1.0,
    variant: str = "p_rope",
    rope_type: str = "default",
    rope_params: Mapping[str, Any] | None = None,
    seq_len: int | None = None,
) -> tuple[np.ndarray, int]:
  """Per-pair angular frequencies of a variant, and the rotated width.

  Args:
    head_dim: H, the per-head dimension (even).
    theta: base wavelength θ (10,000 for Gemma).
    fraction: p in [0, 1].
    variant: ``"p_rope"``, ``"reversed"`` or ``"partial"``.
    rope_type, rope_params: context extension (``rope_jax.rope_scaling``), applied to the
      ladder before the variant removes pairs.
    seq_len: the current length, read by ``rope_type="dynamic"`` only.

  Returns:
    ``(freqs, rotary_dim)``: ``freqs`` is a float64 array ``[rotary_dim/2]`` in rad/token with
    0 for identity pairs; dims ``[rotary_dim, H)`` are never touched. ``rotary_dim`` is H for
    ``p_rope``/``reversed`` and ``R = 2·int(p·H//2)`` for ``partial``.
  """
  validate_rope_args(head_dim, theta=theta, fraction=fraction, variant=variant,
                     rope_type=rope_type, rope_params=rope_params)
  return _rotary_frequencies(head_dim, theta, fraction, variant, rope_type, rope_params, seq_len)


def _rotary_frequencies(head_dim: int, theta: float, fraction: float, variant: str,
                        rope_type: str = "default", rope_params: Mapping[str, Any] | None = None,
                        seq_len: int | None = None) -> tuple[np.ndarray, int]:
  """:func:`rotary_frequencies` for arguments already validated."""
  kept = num_rotated_pairs(head_dim, fraction)

  def ladder(dim: int) -> np.ndarray:
    if rope_type == "default":
      return _ladder(dim, theta)
    return rope_scaling.scaled_frequencies(dim, theta, rope_type, rope_params, seq_len=seq_len)

  if variant == "partial":
    rotary_dim = 2 * kept
    if rotary_dim == 0:
      return np.zeros((0,), np.float64), 0
    return ladder(rotary_dim), rotary_dim
  freqs = ladder(head_dim)
  removed = head_dim // 2 - kept
  if variant == "p_rope":
    freqs[kept:] = 0.0  # The slowest (1-p) fraction becomes identity.
  else:  # "reversed"
    freqs[:removed] = 0.0  # The fastest (1-p) fraction becomes identity.
  return freqs, head_dim


def rope_angles(positions: jax.Array, freqs: np.ndarray, scale_factor: float = 1.0) -> jax.Array:
  """Rotation angles ``positions[..., None] * freqs / scale_factor`` in float32 radians.

  Integer positions: exact (``rope_jax.angles.exact_angles``), reduced to [-π, π). Float
  positions: the float32 product, unreduced.

  Args:
    positions: integer or float ``[..., L]``.
    freqs: ``[F]`` rad/token (static numpy).
    scale_factor: linear position-interpolation factor (>= 1).

  Returns:
    float32 ``[..., L, F]`` in radians.
  """
  f = np.asarray(freqs, np.float64) / scale_factor
  if jnp.issubdtype(positions.dtype, jnp.integer):
    return angles_lib.exact_angles(positions, f)
  return angles_lib.float32_angles(positions, f)


def to_pairs(x: jax.Array, layout: str = "split_half") -> jax.Array:
  """Views the last axis ``[..., D]`` as its 2-D rotation pairs ``[..., D/2, 2]``.

  Pair i is ``(x[i], x[i + D/2])`` for ``"split_half"`` and ``(x[2i], x[2i+1])`` for
  ``"interleaved"``: the chunks ``q^{(i)}`` of the paper, fastest frequency first.
  """
  if layout not in LAYOUTS:
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
  half = x.shape[-1] // 2
  if layout == "split_half":
    return jnp.swapaxes(x.reshape(*x.shape[:-1], 2, half), -1, -2)
  return x.reshape(*x.shape[:-1], half, 2)


def chunk_frequencies(
    head_dim: int,
    *,
    theta: float = DEFAULT_THETA,
    fraction: float = 1.0,
    variant: str = "p_rope",
    rope_type: str = "default",
    rope_params: Mapping[str, Any] | None = None,
    seq_len: int | None = None,
) -> np.ndarray:
  """Frequency of every 2-D chunk of a head, ``[H/2]`` rad/token, 0 for identity chunks.

  Chunks are ordered as ``to_pairs(x[..., :R])`` followed by ``to_pairs(x[..., R:])`` where R is
  the rotated width; for ``p_rope``/``reversed`` (R = H) that is exactly ``to_pairs(x)``.
  """
  freqs, rotary_dim = rotary_frequencies(head_dim, theta=theta, fraction=fraction, variant=variant,
                                         rope_type=rope_type, rope_params=rope_params,
                                         seq_len=seq_len)
  return np.concatenate([freqs, np.zeros(((head_dim - rotary_dim) // 2,), np.float64)])


def rotate(x: jax.Array, cos: jax.Array, sin: jax.Array, layout: str = "split_half") -> jax.Array:
  """Rotates each 2-D pair of the last axis of ``x`` by the angle whose cos/sin are given.

  Args:
    x: ``[..., D]`` with D even, any float dtype.
    cos, sin: broadcastable to ``[..., D/2]`` (float32); pair i uses ``cos[..., i]``.
    layout: ``"split_half"`` (pair i is ``(x[i], x[i+D/2])``) or ``"interleaved"``
      (pair i is ``(x[2i], x[2i+1])``).

  Returns:
    float32 ``[..., D]``: ``(a, b) -> (a·cos - b·sin, b·cos + a·sin)`` per pair.
  """
  half = x.shape[-1] // 2
  # View [..., D] as pairs: [..., 2, D/2] (split-half) or [..., D/2, 2] (interleaved).
  pair_shape, member_axis = ((2, half), -2) if layout == "split_half" else ((half, 2), -1)
  xp = x.astype(jnp.float32).reshape(*x.shape[:-1], *pair_shape)
  a = jnp.take(xp, 0, axis=member_axis)
  b = jnp.take(xp, 1, axis=member_axis)
  out = jnp.stack([a * cos - b * sin, b * cos + a * sin], axis=member_axis)
  return out.reshape(x.shape)


# Cody-Waite split of pi/2 (the first two parts have trailing zero bits, so k * part is exact for
# |k| < 2^12) and the minimax polynomials of Cephes' sinf/cosf on [-pi/4, pi/4].
_PIO2 = (np.float32(1.5703125), np.float32(4.837512969970703125e-4),
         np.float32(7.54978995489188216e-8))
_SIN_POLY = (np.float32(-1.9515295891e-4), np.float32(8.3321608736e-3),
             np.float32(-1.6666654611e-1))
_COS_POLY = (np.float32(2.443315711809948e-5), np.float32(-1.388731625493765e-3),
             np.float32(4.166664568298827e-2))


def sincos(angles: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(cos, sin)`` of float32 ``angles [...]`` (radians) in elementwise arithmetic only.

  The angle is reduced to ``r`` in [-pi/4, pi/4] around the nearest multiple ``k·pi/2``, two short
  polynomials give cos r and sin r, and the quadrant ``k mod 4`` picks and signs them (a select,
  not a branch). Within ~1e-7 of float64 cos/sin of the same float32 angle for |angle| up to
  ~1e5 (beyond that the float32 angle itself is the larger error); exactly (1, 0) at 0. Unlike
  ``jnp.cos``/``jnp.sin`` (scalar library calls on XLA:CPU) this vectorises, so evaluating it per
  position of every row costs a fraction of one pass over the queries.
  """
  a = angles.astype(jnp.float32)
  k = jnp.round(a * np.float32(2.0 / np.pi))
  r = ((a - k * _PIO2[0]) - k * _PIO2[1]) - k * _PIO2[2]
  return _sincos_quadrant(r, k.astype(jnp.int32) & 3)  # Two's complement: -1 & 3 == 3.


def _sincos_quadrant(r: jax.Array, quadrant: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(cos, sin)`` of ``quadrant·π/2 + r`` for float32 ``r`` in [-π/4, π/4], int ``quadrant``
  in 0..3 (the polynomials of :func:`sincos`)."""
  r2 = r * r
  s = r + r * r2 * ((_SIN_POLY[0] * r2 + _SIN_POLY[1]) * r2 + _SIN_POLY[2])
  c = 1.0 - 0.5 * r2 + r2 * r2 * ((_COS_POLY[0] * r2 + _COS_POLY[1]) * r2 + _COS_POLY[2])
  cos = jnp.where(quadrant == 0, c, jnp.where(quadrant == 1, -s, jnp.where(quadrant == 2, -c, s)))
  sin = jnp.where(quadrant == 0, s, jnp.where(quadrant == 1, c, jnp.where(quadrant == 2, -s, -c)))
  return cos, sin


def rope_tables(
    positions: jax.Array,
    head_dim: int,
    *,
    theta: float = DEFAULT_THETA,
    fraction: float = 1.0,
    variant: str = "p_rope",
    scale_factor: float = 1.0,
    rope_type: str = "default",
    rope_params: Mapping[str, Any] | None = None,
    seq_len: int | None = None,
) -> tuple[jax.Array, jax.Array] | None:
  """cos/sin tables of a variant at ``positions``, shared by queries and keys (and by layers).

  Evaluated directly at every position, whatever its value (packed documents restarting at 0,
  decoding offsets, negative or fractional positions): no table indexed by position, no branch
  on the data. Only the rotating frequencies are evaluated; identity pairs get exactly cos = 1,
  sin = 0, so p-RoPE costs less than RoPE here, never more. The result passes through
  ``lax.optimization_barrier`` so that XLA materialises it once instead of fusing the
  evaluation into every rotation that reads it (XLA:CPU would redo it for every head and pair
  member: 16x for Gemma's [B, L, 8, 256]).

  Args:
    positions: ``[..., L]`` integer (or float) token positions.
    head_dim: H.
    theta, fraction, variant, scale_factor, rope_type, rope_params: as in :func:`apply_rope`.
    seq_len: the length ``"dynamic"`` scaling reads (static); None = ``L``.

  Returns:
    ``(cos, sin)``, each float32 ``[..., L, 1, R/2]`` (R the rotated width; the 1 broadcasts
    over heads), or None when nothing rotates (NoPE).
  """
  validate_rope_args(head_dim, theta=theta, fraction=fraction, variant=variant,
                     scale_factor=scale_factor, rope_type=rope_type, rope_params=rope_params)
  return _tables(positions, head_dim, theta, fraction, variant, scale_factor, rope_type,
                 rope_params, seq_len)


def _tables(positions: jax.Array, head_dim: int, theta: float, fraction: float, variant: str,
            scale_factor: float, rope_type: str = "default",
            rope_params: Mapping[str, Any] | None = None, seq_len: int | None = None
            ) -> tuple[jax.Array, jax.Array] | None:
  """:func:`rope_tables` for arguments already validated."""
  freqs, _ = _rotary_frequencies(head_dim, theta, fraction, variant, rope_type, rope_params,
                                 positions.shape[-1] if seq_len is None else seq_len)
  nonzero = np.flatnonzero(freqs)
  if nonzero.size == 0:
    return None
  lo, hi = int(nonzero[0]), int(nonzero[-1]) + 1  # Rotating pairs are one contiguous run.
  kept = freqs[lo:hi] / scale_factor
  if jnp.issubdtype(positions.dtype, jnp.integer):  # Exact angles, range-reduced in integers.
    quadrant, r = angles_lib.quarter_turns(angles_lib.exact_turns(positions, kept))
    cos, sin = _sincos_quadrant(r, quadrant)
  else:
    cos, sin = sincos(angles_lib.float32_angles(positions, kept))
  cos, sin = jax.lax.optimization_barrier((cos, sin))  # [..., L, F']
  pad = [(0, 0)] * (cos.ndim - 1) + [(lo, freqs.size - hi)]  # Identity pairs: exactly 1 and 0.
  cos = jnp.pad(cos, pad, constant_values=1.0)[..., None, :]
  sin = jnp.pad(sin, pad, constant_values=0.0)[..., None, :]
  return cos, sin


def apply_rope_tables(
    x: jax.Array,
    tables: tuple[jax.Array, jax.Array] | None,
    *,
    layout: str = "split_half",
) -> jax.Array:
  """Rotates ``x [..., L, N, H]`` with tables from :func:`rope_tables` (one fused pass).

  The first ``R = 2·cos.shape[-1]`` dims are rotated with ``layout`` pairing; the rest pass
  through. Returns ``x.dtype``.
  """
  if tables is None:
    return x
  cos, sin = tables
  rotary_dim = 2 * cos.shape[-1]
  if rotary_dim == x.shape[-1]:
    return rotate(x, cos, sin, layout).astype(x.dtype)
  rotated = rotate(x[..., :rotary_dim], cos, sin, layout).astype(x.dtype)
  return jnp.concatenate([rotated, x[..., rotary_dim:]], axis=-1)


def apply_rope(
    x: jax.Array,
    positions: jax.Array,
    *,
    theta: float = DEFAULT_THETA,
    fraction: float = 1.0,
    variant: str = "p_rope",
    layout: str = "split_half",
    scale_factor: float = 1.0,
    rope_type: str = "default",
    rope_params: Mapping[str, Any] | None = None,
    seq_len: int | None = None,
) -> jax.Array:
  """Applies RoPE / p-RoPE / reversed / partial rotary to queries or keys.

  Args:
    x: ``[..., L, N, H]`` queries or keys (``[B, L, N, H]`` in the model).
    positions: ``[..., L]`` integer token positions, same leading dims as ``x``.
    theta: base wavelength θ > 0.
    fraction: p in [0, 1]; see the module docstring for what each variant keeps.
    variant: ``"p_rope"`` (default; p = 1 is RoPE, p = 0 is NoPE), ``"reversed"``, ``"partial"``.
    layout: ``"split_half"`` (Gemma) or ``"interleaved"`` (RoFormer).
    scale_factor: linear position interpolation, positions are divided by it (>= 1).
    rope_type: context extension, one of ``rope_scaling.ROPE_TYPES`` ("default": none).
    rope_params: its Hugging Face ``rope_parameters`` (``factor``, ...; None values unset).
    seq_len: the length ``"dynamic"`` reads (static); None = ``L``.

  Returns:
    ``[..., L, N, H]`` in ``x.dtype``. Identity pairs (and NoPE entirely) are bit-exact copies.
  """
  if x.ndim < 3:
    raise ValueError(f"x must be [..., L, N, H] (at least 3 dims), got shape {x.shape}.")
  head_dim = x.shape[-1]
  validate_rope_args(head_dim, theta=theta, fraction=fraction, variant=variant, layout=layout,
                     scale_factor=scale_factor, rope_type=rope_type, rope_params=rope_params)
  if positions.shape != x.shape[:-2]:
    raise ValueError(
        f"positions must have shape {x.shape[:-2]} (x's leading [..., L] dims for x of shape "
        f"{x.shape} = [..., L, N, H]), got {positions.shape}.")
  tables = _tables(positions, head_dim, theta, fraction, variant, scale_factor, rope_type,
                   rope_params, seq_len)
  return apply_rope_tables(x, tables, layout=layout)
