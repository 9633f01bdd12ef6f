"""Context extension of RoPE: the frequency vector (and attention factor) of each scaling type.

Types and parameter names are those of Hugging Face ``rope_parameters`` (``rope_type`` plus its
keys), so a config read from a HF checkpoint maps one to one. Every function here is pure host
math in float64 numpy; nothing is traced.

Notation: ``dim`` is the width the ladder is spread over (H for p-RoPE, R for partial rotary),
``θ`` the base, ``g_i = θ^(-2i/dim)`` (i = 0..dim/2-1, fastest first) the unscaled ladder, and
``λ_i = 2π / g_i`` its wavelengths in tokens. ``L0 = original_max_position_embeddings`` is the
context length the model was trained at and ``s = factor`` the extension factor (>= 1).

* ``"default"``: ``g_i``.
* ``"linear"`` (position interpolation, Chen et al. 2023; HF "linear"): ``g_i / s``.
* ``"ntk"`` (NTK-aware, bloc97 2023): a larger base ``θ' = θ · s^(dim/(dim-2))``, so the
  slowest pair is interpolated by s and the fastest is unchanged.
* ``"dynamic"`` (dynamic NTK, emozilla 2023; HF "dynamic"): the NTK base for the stretch
  ``s·n/L0 - (s-1)``, ``θ' = θ · (s·n/L0 - (s-1))^(dim/(dim-2))``, with ``n = max(seq_len, L0)``
  the current length: no change up to L0, then a base that grows with the length.
* ``"yarn"`` (Peng et al. 2023, arXiv 2309.00071; HF "yarn"): "NTK-by-parts". A pair that turns
  more than ``beta_fast`` (32) times over L0 keeps ``g_i``; one that turns fewer than
  ``beta_slow`` (1) times becomes ``g_i / s``; in between a linear ramp over the pair index.
  The ramp ends are the (fractional) pair indices where ``L0 / λ = β``:
  ``d(β) = dim · ln(L0 / (2π β)) / (2 ln θ)``, floored/ceiled when ``truncate`` (default True)
  and clipped to ``[0, dim - 1]`` as HF does. With ``r_i = clip((i - lo) / (hi - lo), 0, 1)``
  (``hi += 0.001`` if equal): ``g'_i = g_i · (1 - r_i) + (g_i / s) · r_i``. The attention factor
  ("mscale", the square root of the paper's 1/t) multiplies queries and keys:
  ``attention_factor`` if given, else ``m(s, mscale) / m(s, mscale_all_dim)`` if both are given
  (DeepSeek), else ``m(s, 1)``, with ``m(s, a) = 0.1·a·ln(s) + 1`` (1 for s <= 1).
* ``"llama3"`` (Llama 3.1; HF "llama3"): pairs with ``λ < L0 / high_freq_factor`` keep ``g_i``,
  pairs with ``λ > L0 / low_freq_factor`` become ``g_i / s``, and in between
  ``g' = (1 - a)·g/s + a·g`` with
  ``a = (L0/λ - low_freq_factor) / (high_freq_factor - low_freq_factor)``.

Parameters of a type are given as a mapping ``name -> value`` in which None means "not set";
a missing required one, one the type does not take, or a bad value is a ValueError naming it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

ROPE_TYPES: tuple[str, ...] = ("default", "linear", "ntk", "dynamic", "yarn", "llama3")
# rope type -> (required parameters, optional parameters); HF ``rope_parameters`` names.
PARAMETERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "default": ((), ()),
    "linear": (("factor",), ()),
    "ntk": (("factor",), ()),
    "dynamic": (("factor", "original_max_position_embeddings"), ()),
    "yarn": (("factor", "original_max_position_embeddings"),
             ("beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim",
              "truncate")),
    "llama3": (("factor", "original_max_position_embeddings", "low_freq_factor",
                "high_freq_factor"), ()),
}
PARAMETER_NAMES: tuple[str, ...] = (
    "factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor",
    "beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim", "truncate")
YARN_DEFAULTS = {"beta_fast": 32.0, "beta_slow": 1.0, "truncate": True}


def _given(params: Mapping[str, Any] | None) -> dict[str, Any]:
  return {k: v for k, v in dict(params or {}).items() if v is not None}


def _positive(name: str, value: Any, rope_type: str, *, at_least: float | None = None) -> None:
  ok = (not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
        and math.isfinite(value) and (value >= at_least if at_least is not None else value > 0))
  if not ok:
    bound = f">= {at_least}" if at_least is not None else "> 0"
    raise ValueError(f"rope.{name} must be a finite number {bound} for rope type "
                     f"{rope_type!r}, got {value!r}.")


def validate_rope_scaling(rope_type: str, params: Mapping[str, Any] | None = None) -> None:
  """Raises ValueError naming an unknown type, a missing/foreign parameter or a bad value."""
  if rope_type not in ROPE_TYPES:
    raise ValueError(f"rope.type must be one of {ROPE_TYPES}, got {rope_type!r}.")
  given = _given(params)
  unknown = sorted(set(given) - set(PARAMETER_NAMES))
  if unknown:
    raise ValueError(f"Unknown rope parameter(s) {unknown}; known: {list(PARAMETER_NAMES)}.")
  required, optional = PARAMETERS[rope_type]
  missing = [k for k in required if k not in given]
  if missing:
    raise ValueError(f"rope type {rope_type!r} needs rope.{', rope.'.join(missing)} "
                     f"(required: {list(required)}).")
  foreign = sorted(set(given) - set(required) - set(optional))
  if foreign:
    raise ValueError(f"rope type {rope_type!r} does not take rope.{', rope.'.join(foreign)}; "
                     f"it takes {list(required + optional)}.")
  if "factor" in given:
    _positive("factor", given["factor"], rope_type, at_least=1.0)
  if "original_max_position_embeddings" in given:
    value = given["original_max_position_embeddings"]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
      raise ValueError(f"rope.original_max_position_embeddings must be a positive int for rope "
                       f"type {rope_type!r}, got {value!r}.")
  for name in ("low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow",
               "attention_factor", "mscale", "mscale_all_dim"):
    if name in given:
      _positive(name, given[name], rope_type)
  if rope_type == "llama3" and given["high_freq_factor"] <= given["low_freq_factor"]:
    raise ValueError(
        f"rope.high_freq_factor ({given['high_freq_factor']}) must be > rope.low_freq_factor "
        f"({given['low_freq_factor']}) for rope type 'llama3'.")
  if rope_type == "yarn":
    fast = given.get("beta_fast", YARN_DEFAULTS["beta_fast"])
    slow = given.get("beta_slow", YARN_DEFAULTS["beta_slow"])
    if fast <= slow:
      raise ValueError(f"rope.beta_fast ({fast}) must be > rope.beta_slow ({slow}) for rope type "
                       "'yarn'.")
    if ("mscale" in given) != ("mscale_all_dim" in given):
      raise ValueError("rope.mscale and rope.mscale_all_dim go together for rope type 'yarn' "
                       f"(got only {'mscale' if 'mscale' in given else 'mscale_all_dim'}).")
    if not isinstance(given.get("truncate", True), (bool, np.bool_)):
      raise ValueError(f"rope.truncate must be a bool, got {given['truncate']!r}.")


def _check_dim(dim: int, theta: float) -> None:
  if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0 or dim % 2:
    raise ValueError(f"The rotated width (dim) must be a positive even int, got {dim!r}.")
  if not (math.isfinite(theta) and theta > 0):
    raise ValueError(f"theta (the base wavelength) must be a finite number > 0, got {theta!r}.")


def _ladder(dim: int, theta: float) -> np.ndarray:
  return float(theta) ** (-2.0 * np.arange(dim // 2, dtype=np.float64) / dim)


def _ntk_base(theta: float, dim: int, stretch: float) -> float:
  if dim <= 2:
    raise ValueError(f"NTK scaling needs a rotated width > 2 (it uses dim/(dim-2)), got {dim}.")
  return float(theta) * stretch ** (dim / (dim - 2))


def _yarn_ramp(dim: int, theta: float, p: Mapping[str, Any]) -> np.ndarray:
  """``r_i`` in [0, 1], ``[dim/2]``: 0 keeps ``g_i``, 1 divides it by the factor."""
  l0 = p["original_max_position_embeddings"]

  def pair_index(turns: float) -> float:  # The pair i whose L0 / λ_i equals ``turns``.
    return dim * math.log(l0 / (turns * 2 * math.pi)) / (2 * math.log(theta))

  lo = pair_index(p.get("beta_fast", YARN_DEFAULTS["beta_fast"]))
  hi = pair_index(p.get("beta_slow", YARN_DEFAULTS["beta_slow"]))
  if p.get("truncate", YARN_DEFAULTS["truncate"]):
    lo, hi = math.floor(lo), math.ceil(hi)
  lo, hi = max(lo, 0), min(hi, dim - 1)
  if lo == hi:
    hi += 0.001  # As HF: no division by zero.
  return np.clip((np.arange(dim // 2, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)


def scaled_frequencies(
    dim: int,
    theta: float,
    rope_type: str = "default",
    params: Mapping[str, Any] | None = None,
    *,
    seq_len: int | None = None,
) -> np.ndarray:
  """The ladder of a scaling type, float64 ``[dim/2]`` in rad/token, fastest first.

  Args:
    dim: the rotated width the ladder is spread over (even).
    theta: base θ > 0.
    rope_type: one of ``ROPE_TYPES``.
    params: HF-named parameters of the type (None values = unset).
    seq_len: the current sequence length, read by ``"dynamic"`` only (None = ``L0``).
  """
  validate_rope_scaling(rope_type, params)
  _check_dim(dim, theta)
  p = _given(params)
  g = _ladder(dim, theta)
  if rope_type == "default":
    return g
  s = float(p["factor"])
  if rope_type == "linear":
    return g / s
  if rope_type == "ntk":
    return _ladder(dim, _ntk_base(theta, dim, s))
  if rope_type == "dynamic":
    l0 = p["original_max_position_embeddings"]
    n = l0 if seq_len is None else max(int(seq_len), l0)
    return _ladder(dim, _ntk_base(theta, dim, s * n / l0 - (s - 1.0)))
  if rope_type == "yarn":
    r = _yarn_ramp(dim, theta, p)
    return g * (1.0 - r) + (g / s) * r
  # "llama3"
  l0 = float(p["original_max_position_embeddings"])
  low, high = float(p["low_freq_factor"]), float(p["high_freq_factor"])
  wavelength = 2 * math.pi / g
  a = (l0 / wavelength - low) / (high - low)
  smoothed = (1.0 - a) * g / s + a * g
  out = np.where(wavelength > l0 / low, g / s, g)
  medium = (wavelength >= l0 / high) & (wavelength <= l0 / low)
  return np.where(medium, smoothed, out)


def _mscale(scale: float, coefficient: float = 1.0) -> float:
  return 1.0 if scale <= 1.0 else 0.1 * coefficient * math.log(scale) + 1.0


def attention_factor(rope_type: str = "default", params: Mapping[str, Any] | None = None) -> float:
  """The factor queries and keys are multiplied by (logits by its square); 1 except for YaRN."""
  validate_rope_scaling(rope_type, params)
  p = _given(params)
  if rope_type != "yarn":
    return 1.0
  if "attention_factor" in p:
    return float(p["attention_factor"])
  s = float(p["factor"])
  if "mscale" in p:
    return _mscale(s, float(p["mscale"])) / _mscale(s, float(p["mscale_all_dim"]))
  return _mscale(s)
