"""The mechanisms of "Round and Round We Go!" as functions over arrays (SPEC §2a–2d).

Modules (math only; figures live in ``rope_jax.analysis.plots``, imported explicitly so that the
math does not pull in matplotlib):

* ``chunks``: the RoPE chunks of a head in the kernel's layout.
* ``decay``: RoPE activation against distance; RoFormer's bound (§3, Fig. 2, Fig. 9, Prop. 3.2).
* ``frequency_usage``: mean 2-norm of each RoPE chunk of q / k / v (§4, Figs 3–4).
* ``positional_heads``: Prop. 5.2, Thm 5.3 and diagonal / previous-token head detection (§5).
* ``semantic_channels``: single-frequency channels over long context (§6, Thm 6.1).
* ``cauchy_schwarz``: per-chunk activation ``q^{(k)}·k^{(k)}`` against its Cauchy–Schwarz
  bound by (query, key) pair kind, and frequency bands' share of the logits (Tables 3–5).
* ``head_types``: BOS / attention-sink and marker (apostrophe, punctuation) heads (App. E.1).
* ``compare``: several runs or prompt sets in one figure / table; band shares, band onset.
* ``prompt_sets``: the shipped prompts by name (Shakespeare; Fig. 19's Italian, Chinese, code,
  arithmetic).

On a model (not imported here, they load a run): ``measure`` restores a run through
``rope_jax.checkpoint.rundir``, tokenizes prompts and measures frequency usage and positional
heads over them (the one call of the Transformer); ``anatomy`` decomposes one head of a model by
chunk and band and scores head types; ``report`` / ``report_heads`` write the JSON / CSV /
markdown / figures of those measurements and run the whole ``python -m rope_jax.analyze`` job.

The positional encoding is one hashable ``RopeConfig`` (``rope=``; ``rope_jax.config.schema``),
checked once at each public entry and static under jit.

Inputs follow the model's exposed intermediates, one dict per layer: ``"q"``, ``"k"``
(pre-rotation, ``[B, L, N, H]`` / ``[B, L, K, H]``), ``"q_rot"``, ``"k_rot"``, ``"v"`` and
``"attn"`` (softmax weights ``[B, N, L, L]``).
"""

from __future__ import annotations

from rope_jax.analysis.cauchy_schwarz import band_slices
from rope_jax.analysis.cauchy_schwarz import band_sums
from rope_jax.analysis.cauchy_schwarz import chunk_activations
from rope_jax.analysis.cauchy_schwarz import chunk_bounds
from rope_jax.analysis.cauchy_schwarz import pair_kinds
from rope_jax.analysis.cauchy_schwarz import summarize_by_kind
from rope_jax.analysis.chunks import check_rope
from rope_jax.analysis.chunks import chunk_dims
from rope_jax.analysis.chunks import chunk_frequencies
from rope_jax.analysis.chunks import embed_in_chunk
from rope_jax.analysis.chunks import rope_chunks
from rope_jax.analysis.decay import all_ones_activation
from rope_jax.analysis.decay import iid_gaussian_activation
from rope_jax.analysis.decay import mean_and_stderr
from rope_jax.analysis.decay import repeated_gaussian_activation
from rope_jax.analysis.decay import rope_activation
from rope_jax.analysis.decay import roformer_relative_upper_bound
from rope_jax.analysis.frequency_usage import chunk_norms
from rope_jax.analysis.frequency_usage import frequency_usage_from_intermediates
from rope_jax.analysis.frequency_usage import layer_frequency_usage
from rope_jax.analysis.frequency_usage import mean_chunk_norms
from rope_jax.analysis.frequency_usage import stationary_chunks
from rope_jax.analysis.head_types import bos_targets
from rope_jax.analysis.head_types import marker_targets
from rope_jax.analysis.head_types import marker_tokens
from rope_jax.analysis.positional_heads import causal_attention
from rope_jax.analysis.positional_heads import construction_logits
from rope_jax.analysis.positional_heads import construction_qk
from rope_jax.analysis.positional_heads import heads_above
from rope_jax.analysis.positional_heads import min_target_attention
from rope_jax.analysis.positional_heads import offset_attention_scores
from rope_jax.analysis.positional_heads import positional_head_min_scores
from rope_jax.analysis.positional_heads import positional_head_scores
from rope_jax.analysis.positional_heads import positional_head_scores_from_intermediates
from rope_jax.analysis.positional_heads import repeated_token_attention
from rope_jax.analysis.positional_heads import rope_logits
from rope_jax.analysis.positional_heads import single_head_attention
from rope_jax.analysis.positional_heads import sufficient_norm
from rope_jax.analysis.positional_heads import target_attention
from rope_jax.analysis.semantic_channels import breaking_distance
from rope_jax.analysis.semantic_channels import channel_frequency
from rope_jax.analysis.semantic_channels import ChannelSimulation
from rope_jax.analysis.semantic_channels import simulate_channel
