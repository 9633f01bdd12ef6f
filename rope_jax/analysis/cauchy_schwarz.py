"""Per-frequency activations against their Cauchy–Schwarz bound (Tables 3–5; SPEC §2c–2d).

A RoPE logit is a sum over the H/2 chunks (frequencies) of a head:
``a_{i,j} = Σ_k a^{(k)}_{i,j}`` with ``a^{(k)}_{i,j} = q_rot_i^{(k)} · k_rot_j^{(k)}``, the dot
product of the *rotated* 2-D chunks. By Cauchy–Schwarz ``|a^{(k)}_{i,j}| ≤ ‖q_i^{(k)}‖ ‖k_j^{(k)}‖``
(rotation keeps chunk norms), with equality iff the rotated chunks are parallel. The paper's
Tables 3–4 (Gemma 7B L1H5, a diagonal head) show the diagonal activations close to the bound
(q ≈ k, Thm 5.3) and the previous-token ones far below it. :func:`chunk_activations`,
:func:`chunk_bounds` and :func:`summarize_by_kind` make those tables for any head and tokens,
split by the kind of the (query, key) pair (:func:`pair_kinds`).

Bands (App. E.1: "which bands carry what"): :func:`band_slices` groups chunks into contiguous
bands, :func:`band_sums` sums the per-chunk activations of a band; times the model's logit scale
they add up to the head's attention logits exactly.

Conventions: one head at a time, ``q_rot`` ``[L, H]`` and ``k_rot`` ``[S, H]`` (post-rotation,
as the model's ``q_rot`` / ``k_rot`` intermediates); chunk 0 is the fastest frequency
(``chunks.rope_chunks``). Activations are raw dot products (activation units², before the logit
scale).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rope_jax.analysis.chunks import DEFAULT_ROPE
from rope_jax.analysis.chunks import check_rope
from rope_jax.analysis.chunks import unchecked_chunks
from rope_jax.config.schema import RopeConfig

# Kinds of a (query i, key j) pair, j <= i; query 0 (one key: itself) is never counted.
PAIR_KINDS: tuple[str, ...] = ("diagonal", "previous_token", "other")
# With ``bos=True`` key 0 is its own kind for every query (it wins over previous_token at i = 1);
# with markers, a previous key that is a marker token (e.g. an apostrophe) is "marker".
BOS_KIND, MARKER_KIND = "bos", "marker"
NOT_COUNTED = -1


def chunk_activations(q_rot: jax.Array, k_rot: jax.Array, *,
                      rope: RopeConfig = DEFAULT_ROPE) -> jax.Array:
  """Per-chunk activations ``a^{(k)}_{i,j} = q_rot_i^{(k)} · k_rot_j^{(k)}``.

  Args:
    q_rot: ``[..., L, H]`` rotated queries of one head.
    k_rot: ``[..., S, H]`` rotated keys of the same head.
    rope: the encoding that defines the chunks.

  Returns:
    float32 ``[..., L, S, H/2]``; the sum over the last axis is ``q_rot @ k_rot.T``.
  """
  _check_pair(q_rot, k_rot)
  return _chunk_activations(q_rot, k_rot, rope=check_rope(rope, np.shape(q_rot)[-1]))


@functools.partial(jax.jit, static_argnames=("rope",))
def _chunk_activations(q_rot, k_rot, *, rope):
  q = unchecked_chunks(jnp.asarray(q_rot, jnp.float32), rope)  # [..., L, H/2, 2]
  k = unchecked_chunks(jnp.asarray(k_rot, jnp.float32), rope)  # [..., S, H/2, 2]
  return jnp.einsum("...lcx,...scx->...lsc", q, k, precision=jax.lax.Precision.HIGHEST)


def chunk_bounds(q: jax.Array, k: jax.Array, *, rope: RopeConfig = DEFAULT_ROPE) -> jax.Array:
  """Cauchy–Schwarz bounds ``‖q_i^{(k)}‖ ‖k_j^{(k)}‖``: ``[..., L, H]``, ``[..., S, H]`` ->
  float32 ``[..., L, S, H/2]`` (pre- or post-rotation inputs give the same bounds)."""
  _check_pair(q, k)
  return _chunk_bounds(q, k, rope=check_rope(rope, np.shape(q)[-1]))


@functools.partial(jax.jit, static_argnames=("rope",))
def _chunk_bounds(q, k, *, rope):
  qn = jnp.linalg.norm(unchecked_chunks(jnp.asarray(q, jnp.float32), rope), axis=-1)
  kn = jnp.linalg.norm(unchecked_chunks(jnp.asarray(k, jnp.float32), rope), axis=-1)
  return qn[..., :, None, :] * kn[..., None, :, :]


def _check_pair(q, k) -> None:
  qs, ks = np.shape(q), np.shape(k)
  if len(qs) < 2 or len(ks) != len(qs) or qs[:-2] != ks[:-2] or qs[-1] != ks[-1]:
    raise ValueError(f"need q [..., L, H] and k [..., S, H] with the same leading dims and H; "
                     f"got {qs} and {ks}.")


def pair_kinds(length: int, *, bos: bool = False,
               markers: Sequence[bool] | np.ndarray | None = None) -> tuple[np.ndarray, tuple]:
  """The kind of every (query i, key j) pair of one causal sequence of ``length`` tokens.

  Args:
    length: L tokens (token 0 is BOS when ``bos``).
    bos: give key 0 its own kind ``"bos"`` for every query i >= 1.
    markers: optional bool ``[L]``, True for marker tokens (e.g. apostrophes): a previous key
      j = i - 1 that is a marker gets the kind ``"marker"`` (App. E.1's apostrophe head).

  Returns:
    ``(codes, names)``: int ``[L, L]`` index into ``names`` (``NOT_COUNTED`` = -1 for j > i and
    for query 0), and the kind names: ``PAIR_KINDS`` with ``"bos"`` first if ``bos`` and
    ``"marker"`` after ``"previous_token"`` if ``markers`` is given.
  """
  if length < 2:
    raise ValueError(f"length must be >= 2 (a query with a previous token), got {length}.")
  names = list(PAIR_KINDS)
  if markers is not None:
    markers = np.asarray(markers, bool)
    if markers.shape != (length,):
      raise ValueError(f"markers must be [L] = {(length,)}, got {markers.shape}.")
    names.insert(2, MARKER_KIND)
  if bos:
    names.insert(0, BOS_KIND)
  code = {name: c for c, name in enumerate(names)}
  i, j = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
  codes = np.full((length, length), NOT_COUNTED, np.int64)
  codes[j < i - 1] = code["other"]
  codes[j == i - 1] = code["previous_token"]
  if markers is not None:
    codes[(j == i - 1) & markers[None, :]] = code[MARKER_KIND]
  codes[j == i] = code["diagonal"]
  if bos:
    codes[:, 0] = code[BOS_KIND]
  codes[0, :] = NOT_COUNTED
  codes[j > i] = NOT_COUNTED
  return codes, tuple(names)


def summarize_by_kind(activations: np.ndarray, bounds: np.ndarray, codes: np.ndarray,
                      names: Sequence[str]) -> dict[str, dict[str, np.ndarray | int]]:
  """Tables 3–5 in numbers: per pair kind, per chunk, activation against its bound.

  Args:
    activations, bounds: ``[L, S, C]`` (:func:`chunk_activations`, :func:`chunk_bounds`) or any
      ``[L, S, C]`` per-chunk / per-band values and their bounds.
    codes, names: :func:`pair_kinds`.

  Returns:
    ``{kind: {"count": pairs, "activation": [C] mean, "bound": [C] mean, "alignment": [C]
    mean activation / mean bound (NaN where the bound is 0), "mean_cosine": [C] mean of
    activation / bound over pairs with a nonzero bound, "total_activation": mean Σ_c activation,
    "total_bound": mean Σ_c bound}}`` (float64; NaN for a kind with no pair).
  """
  act = np.asarray(activations, np.float64)
  bound = np.asarray(bounds, np.float64)
  if act.shape != bound.shape or act.ndim != 3 or act.shape[:2] != np.shape(codes):
    raise ValueError(f"activations and bounds must be [L, S, C] over codes [L, S]; got "
                     f"{act.shape}, {bound.shape} and codes {np.shape(codes)}.")
  out = {}
  for c, name in enumerate(names):
    sel = np.asarray(codes) == c
    n = int(sel.sum())
    if n == 0:
      nan = np.full(act.shape[-1], np.nan)
      out[name] = {"count": 0, "activation": nan, "bound": nan, "alignment": nan,
                   "mean_cosine": nan, "total_activation": np.nan, "total_bound": np.nan}
      continue
    a, b = act[sel], bound[sel]  # [n, C]
    mean_a, mean_b = a.mean(0), b.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
      cos = np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)
      out[name] = {
          "count": n, "activation": mean_a, "bound": mean_b,
          "alignment": np.where(mean_b > 0, mean_a / np.where(mean_b > 0, mean_b, 1.0), np.nan),
          "mean_cosine": np.array([np.nanmean(col) if np.any(np.isfinite(col)) else np.nan
                                   for col in cos.T]),
          "total_activation": float(a.sum(-1).mean()), "total_bound": float(b.sum(-1).mean())}
  return out


def band_slices(num_chunks: int, spec: int | str | Sequence[tuple[int, int]] = 4,
                ) -> list[tuple[int, int]]:
  """Contiguous chunk bands ``[(start, stop), ...]`` covering ``0 .. num_chunks`` in order.

  Args:
    num_chunks: H/2.
    spec: a number n of (near) equal bands, high → low frequency; or ``"0:4,4:16,16:32"``; or
      the list of ``(start, stop)`` itself.
  """
  if isinstance(spec, (int, np.integer)):
    if not 1 <= spec <= num_chunks:
      raise ValueError(f"the number of bands must be in [1, H/2 = {num_chunks}], got {spec}.")
    edges = np.linspace(0, num_chunks, int(spec) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
  if isinstance(spec, str):
    try:
      bands = [tuple(int(x) for x in part.split(":")) for part in spec.split(",") if part.strip()]
    except ValueError:
      bands = [()]
    if not bands or any(len(b) != 2 for b in bands):
      raise ValueError(f"bands must look like '0:4,4:16,16:32' (start:stop chunk ranges), "
                       f"got {spec!r}.")
  else:
    bands = [tuple(b) for b in spec]
  starts = [0] + [b[1] for b in bands[:-1]]
  if ([b[0] for b in bands] != starts or bands[-1][1] != num_chunks
      or any(b[1] <= b[0] for b in bands)):
    raise ValueError(f"bands must be contiguous, non-empty and cover chunks 0..{num_chunks}, "
                     f"got {bands}.")
  return [(int(a), int(b)) for a, b in bands]


def band_sums(x: np.ndarray, bands: Sequence[tuple[int, int]]) -> np.ndarray:
  """Sums the last (chunk) axis over each band: ``[..., H/2] -> [..., num_bands]``."""
  x = np.asarray(x)
  return np.stack([x[..., a:b].sum(-1) for a, b in bands], axis=-1)


def band_label(band: tuple[int, int], freqs: np.ndarray | None = None) -> str:
  """``"k 0-3 (g 1 .. 0.32)"``: a band's chunks and frequency range (rad/token)."""
  a, b = band
  label = f"k {a}-{b - 1}"
  if freqs is not None:
    label += f" (g {freqs[a]:.2g}..{freqs[b - 1]:.2g})"
  return label


def contributions_by_kind(band_logits: np.ndarray, codes: np.ndarray,
                          names: Sequence[str]) -> dict[str, np.ndarray]:
  """Mean per-band logit contribution of every pair kind: ``[L, S, nb] -> {kind: [nb]}``."""
  band_logits = np.asarray(band_logits, np.float64)
  return {name: (band_logits[np.asarray(codes) == c].mean(0)
                 if np.any(np.asarray(codes) == c) else np.full(band_logits.shape[-1], np.nan))
          for c, name in enumerate(names)}


def table_rows(summary: Mapping[str, Mapping[str, np.ndarray | int]],
               freqs: np.ndarray | None) -> list[tuple]:
  """CSV rows ``(kind, chunk, frequency, pairs, activation, bound, alignment, mean_cosine)``."""
  rows = []
  for kind, s in summary.items():
    for c in range(len(s["activation"])):
      rows.append((kind, c, "" if freqs is None else f"{freqs[c]:.6g}", s["count"],
                   f"{s['activation'][c]:.6g}", f"{s['bound'][c]:.6g}",
                   f"{s['alignment'][c]:.6g}", f"{s['mean_cosine'][c]:.6g}"))
  return rows
