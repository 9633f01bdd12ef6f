"""The CPU Table 2 design that asks the paper's question: θ scaled with the training length.

The paper trains with head dim H = 256, θ = 10k, L = 8,192 (SPEC.md §2g). 0.75-RoPE removes the
pairs ``k >= 0.75·H/2`` of the ladder ``g_k = θ^(-2k/H)``; the fastest of them turns at
``θ^(-0.75)`` = 1e-3 rad/token, i.e. **8.2 rad over the training context**: a removed frequency
there is a real (slow) rotation, so removing it can matter. At ``tiny`` scale (θ = 10k,
L = 128) the same pairs turn at most 0.13 rad: 0.75-RoPE equals RoPE by construction.

The fix keeps the *fraction* ``2k/H`` of each cut and rescales θ so that the fastest removed
frequency of p-RoPE turns as far over L as in the paper::

    θ^(-p) · (L-1) = θ_paper^(-p) · (L_paper-1)   =>   θ = θ_paper · ((L-1) / (L_paper-1))^(1/p)

with p = 0.75 (the paper's best row), independent of H. For L = 64 that maps θ = 10k to 15.2
and θ = 500k to 759. The paper's own θ = 10k stays as control rows, where the cut frequencies
barely turn. :func:`rotations` prints, per row, the largest rotation over L of the frequencies
it removes and the smallest of those it keeps.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from rope_jax import rope as rope_lib
from rope_jax.config.schema import RopeConfig

LENGTH_MULTIPLIERS = (1, 2, 4)

PAPER_THETA = 10_000.0
PAPER_SEQ_LEN = 8192
PAPER_HEAD_DIM = 256
MATCHED_FRACTION = 0.75
# The model: Gemma-shaped, smaller than configs/tiny.py so that the grids fit the budget. Four
# query and four key/value heads (MHA): with one shared key/value head (MQA) the 2-layer model
# did not learn associative recall within 3,000 steps; with four it does (our choice).
MODEL_OVERRIDES = dict(num_layers=2, embed_dim=64, num_heads=4, num_kv_heads=4, head_dim=32,
                       mlp_dim=256)
# Two grids (our design): language modelling on the offline corpus (its 2,048-piece vocabulary),
# and the probes with a 64-token vocabulary (the probes use ids < 64), so that the probe grid
# costs a fraction of the LM grid per step and can train long enough to learn recall.
PROBE_VOCAB_SIZE = 64
LM_BATCH = 32
PROBE_BATCH = {"copy": 4, "recall": 28}  # copy is learned in ~100 steps, recall in ~1,500
LM_LEARNING_RATE, PROBE_LEARNING_RATE = 1e-2, 3e-3
WARMUP_STEPS = 50
# copy: 31 symbols of 16, copied after [sep]; recall: 4 key/value pairs hidden among filler
# pairs anywhere in the context, then all 4 keys queried in a random order.
PROBE = dict(num_symbols=16, num_keys=4, num_queries=4)
# The default rows of each grid (our trade: fewer rows, more steps each): the language-modelling
# claims need NoPE, RoPE and 0.75-RoPE, the probe claims RoPE, reversed and 0.75-RoPE. Any of
# the nine rows can join either grid (the θ = 10k controls: ``--probe_rows``, ``--lm_rows``).
LM_ROWS = ("nope", "rope", "p075-rope")
PROBE_ROWS = ("rope", "p075-reversed", "p075-rope")
GRIDS = ("lm", "probe")


def scaled_theta(theta_paper: float, seq_len: int, *, fraction: float = MATCHED_FRACTION,
                 paper_seq_len: int = PAPER_SEQ_LEN) -> float:
  """θ at ``seq_len`` whose p-RoPE cut turns as far over the context as ``theta_paper`` at 8k."""
  if seq_len <= 0 or not 0 < fraction <= 1:
    raise ValueError(f"Need seq_len > 0 and fraction in (0, 1], got {seq_len}, {fraction}.")
  # Largest relative distance L - 1, as in rotations().
  return float(theta_paper) * ((seq_len - 1) / (paper_seq_len - 1)) ** (1.0 / fraction)


@dataclasses.dataclass(frozen=True)
class CpuRow:
  """One row of the CPU grid.

  Attributes:
    key: run-name slug, e.g. ``"p075-rope"`` or ``"p075-rope-theta10k"`` for a control row.
    label: the paper's label, with the regime, e.g. ``"0.75-RoPE"``.
    rope: the encoding (θ already scaled for regime rows).
    paper_key: the Table 2 row it stands for (``rope_jax.sweeps.grid.TABLE2_ROWS`` key).
    control: True for rows at the paper's own θ (the unscaled regime).
    arg: the config argument (``configs/tiny.py:<arg>``).
  """

  key: str
  label: str
  rope: RopeConfig
  paper_key: str
  control: bool
  arg: str


def _arg(rope: RopeConfig) -> str:
  if rope.variant == "p_rope" and rope.fraction == 0:
    return "pe=nope"
  if rope.variant == "p_rope" and rope.fraction == 1:
    pe = "pe=rope"
  else:
    pe = f"pe={rope.variant},p={rope.fraction:g}"
  return f"{pe},theta={rope.theta:.6g}"


def cpu_rows(seq_len: int) -> tuple[CpuRow, ...]:
  """The seven Table 2 rows at scaled θ, then RoPE and 0.75-RoPE at the paper's θ = 10k."""
  t10, t500 = scaled_theta(PAPER_THETA, seq_len), scaled_theta(500_000.0, seq_len)
  spec = [
      ("nope", "NoPE", RopeConfig(fraction=0.0, theta=t10), "nope", False),
      ("rope", "RoPE (θ = 10k→%.3g)" % t10, RopeConfig(theta=t10), "rope-10k", False),
      ("rope-500k", "RoPE (θ = 500k→%.3g)" % t500, RopeConfig(theta=t500), "rope-500k", False),
      ("p075-reversed", "0.75-RoPE_reversed",
       RopeConfig(variant="reversed", fraction=0.75, theta=t10), "p075-reversed", False),
      ("p075-partial", "0.75-RoPE_partial",
       RopeConfig(variant="partial", fraction=0.75, theta=t10), "p075-partial", False),
      ("p025-rope", "0.25-RoPE", RopeConfig(fraction=0.25, theta=t10), "p025-rope", False),
      ("p075-rope", "0.75-RoPE", RopeConfig(fraction=0.75, theta=t10), "p075-rope", False),
      ("rope-theta10k", "RoPE (θ = 10k, control)", RopeConfig(), "rope-10k", True),
      ("p075-theta10k", "0.75-RoPE (θ = 10k, control)", RopeConfig(fraction=0.75),
       "p075-rope", True),
  ]
  return tuple(CpuRow(k, lab, r, pk, c, _arg(r)) for k, lab, r, pk, c in spec)


def rotations(rope: RopeConfig, head_dim: int, seq_len: int) -> dict[str, float | None]:
  """Largest rotation over ``seq_len`` (radians, ``g·(L-1)``) of the removed / kept frequencies.

  "Removed" are the pairs of the full RoPE ladder at the row's θ that the row makes identity
  (none for RoPE and partial rotary, whose slice re-spreads the ladder); "kept" are the
  frequencies it rotates. Returns ``removed_max``, ``kept_min`` and ``kept_max`` (None if empty).
  """
  full = rope_lib.frequency_ladder(head_dim, rope.theta)
  freqs, _ = rope_lib.rotary_frequencies(head_dim, theta=rope.theta, fraction=rope.fraction,
                                         variant=rope.variant)
  kept = freqs[freqs > 0]
  if rope.variant == "partial":
    removed = np.zeros((0,))
  else:
    removed = full[freqs == 0]
  span = seq_len - 1
  return {"removed_max": float(removed.max() * span) if removed.size else None,
          "kept_min": float(kept.min() * span) if kept.size else None,
          "kept_max": float(kept.max() * span) if kept.size else None}


def paper_rotation() -> float:
  """The paper's number: the fastest frequency 0.75-RoPE removes, turned over 8,192 tokens."""
  return rotations(RopeConfig(fraction=MATCHED_FRACTION), PAPER_HEAD_DIM,
                   PAPER_SEQ_LEN)["removed_max"]


def member_configs(rows: tuple[CpuRow, ...], seq_len: int, steps: int, grid: str
                   ) -> dict[str, Any]:
  """Each row's experiment config in ``grid`` (``"lm"`` or ``"probe"``):
  ``configs/tiny.py:<arg>`` plus the CPU job's settings (validated ``ml_collections.ConfigDict``s,
  keyed by row)."""
  from rope_jax.config import base as config_lib  # pylint: disable=g-import-not-at-top
  if grid not in GRIDS:
    raise ValueError(f"Unknown grid {grid!r}; known: {GRIDS}.")
  out = {}
  for row in rows:
    cfg = config_lib.load_config(f"configs/tiny.py:{row.arg},data=mixture")
    cfg.model.update(MODEL_OVERRIDES)
    if grid == "lm":
      batch, lr, mixture = LM_BATCH, LM_LEARNING_RATE, f"offline:{LM_BATCH}"
    else:
      cfg.model.vocab_size = PROBE_VOCAB_SIZE
      batch, lr = sum(PROBE_BATCH.values()), PROBE_LEARNING_RATE
      mixture = ",".join(f"probe_{k}:{v}" for k, v in PROBE_BATCH.items())
    cfg.train.update(global_batch_size=batch, seq_len=seq_len, num_steps=steps,
                     warmup_steps=min(WARMUP_STEPS, steps), learning_rate=lr,
                     log_every_steps=max(1, steps // 20))
    cfg.eval.update(length_multipliers=LENGTH_MULTIPLIERS)
    cfg.data.mixture = mixture
    cfg.data.probe.update(PROBE)
    config_lib.validate(cfg)
    out[row.key] = cfg
  return out
