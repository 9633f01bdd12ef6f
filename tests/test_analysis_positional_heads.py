"""Tests for rope_jax.analysis.positional_heads (§5: Prop. 5.2, Thm 5.3, head detection)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rope_jax import rope
from rope_jax.analysis import positional_heads as ph
from rope_jax.config.schema import RopeConfig

H = 32
THETA = 10_000.0


def norm_for(eps: float, freq: float, seq_len: int) -> float:
  """Sufficient ‖ψ‖ for min_i α_target > 1 − ε, derived here from the softmax.

  The target logit is s = ‖ψ‖²; each of the (at most L − 1) other keys has s·cos(m g) with
  1 <= |m| <= L − 1, so α >= 1 / (1 + (L − 1) exp(−s (1 − c))) with c = max_m cos(m g).
  That exceeds 1 − ε once s > log((L − 1)(1 − ε)/ε) / (1 − c).
  """
  c = max(np.cos(m * freq) for m in range(1, seq_len))
  return float(np.sqrt(np.log((seq_len - 1) * (1 - eps) / eps) / (1 - c)))


@pytest.mark.parametrize("kind", ph.HEAD_KINDS)
@pytest.mark.parametrize("chunk,seq_len,eps", [(0, 16, 1e-2), (0, 64, 1e-3), (3, 32, 1e-2),
                                               (6, 16, 1e-3)])
def test_construction_reaches_one_minus_eps_with_the_sufficient_norm(kind, chunk, seq_len, eps):
  freq = rope.frequency_ladder(H, THETA)[chunk]
  norm = norm_for(eps, freq, seq_len)
  assert ph.sufficient_norm(freq, seq_len, eps) == pytest.approx(norm, rel=1e-12)
  logits = ph.construction_logits(kind, head_dim=H, seq_len=seq_len, chunk=chunk, norm=norm)
  attn = ph.causal_attention(logits)
  np.testing.assert_allclose(attn.sum(-1), 1.0, rtol=1e-5)
  assert float(ph.min_target_attention(attn, kind)) > 1 - eps
  # The target really is where the theorem puts it: the diagonal or the previous token.
  offset = ph.TARGET_OFFSET[kind]
  np.testing.assert_array_equal(np.argmax(attn, -1)[1:], np.arange(1, seq_len) - offset)


@pytest.mark.parametrize("kind", ph.HEAD_KINDS)
def test_target_attention_tends_to_one_with_the_norm(kind):
  norms = np.logspace(-1, 2.5, 40)
  for chunk in (0, 2, 5):
    unit = ph.construction_logits(kind, head_dim=H, seq_len=16, chunk=chunk)
    scaled = np.asarray(unit)[None] * norms[:, None, None] ** 2  # Logits scale as ‖ψ‖².
    alpha = np.asarray(ph.min_target_attention(ph.causal_attention(scaled), kind))
    assert np.all(np.diff(alpha) >= -1e-6), alpha  # More norm never hurts (fixed g).
    assert alpha[0] < 0.2 and alpha[-1] > 1 - 1e-4


@pytest.mark.parametrize("kind", ph.HEAD_KINDS)
def test_highest_frequency_is_sharpest(kind):
  """At a fixed norm the fastest chunk separates the target best; slow ones blur to uniform."""
  def alpha(chunk, seq_len):
    logits = ph.construction_logits(kind, head_dim=H, seq_len=seq_len, chunk=chunk, norm=3.0)
    return float(ph.min_target_attention(ph.causal_attention(logits), kind))

  short = np.array([alpha(c, 4) for c in range(H // 2)])  # No chunk wraps round in 3 tokens.
  assert short[0] > 0.95 and np.all(short[0] > short[1:])
  assert np.all(np.diff(short) <= 1e-6), short
  assert short[-1] == pytest.approx(1 / 4, abs=1e-3)  # The slowest: nearly uniform attention.
  # Over 16 tokens the fastest still beats every frequency at or below 0.1 rad/token.
  slow = [c for c in range(H // 2) if rope.frequency_ladder(H, THETA)[c] <= 0.1 + 1e-12]
  assert alpha(0, 16) > max(alpha(c, 16) for c in slow)


def test_identity_chunk_builds_no_positional_head():
  """On a p-RoPE identity chunk (g = 0) every key looks alike: attention is uniform."""
  logits = ph.construction_logits("previous_token", head_dim=H, seq_len=8, chunk=H // 2 - 1,
                                   norm=10.0, rope=RopeConfig(fraction=0.5))
  np.testing.assert_allclose(ph.causal_attention(logits)[-1], np.full(8, 1 / 8), rtol=1e-5)
  with pytest.raises(ValueError, match="never separates"):
    ph.sufficient_norm(0.0, 8, 0.1)


def test_nope_counterexample_holds_for_random_heads():
  """Prop. 5.2: on [bos, x, x], NoPE gives α_{3,3} = α_{3,2} <= 1/2 for every head."""
  num, width = 500, 12
  rngs = jax.random.split(jax.random.key(0), 4)
  scale = jnp.logspace(-1, 1, num)[:, None, None]  # From near-uniform to very peaked heads.
  w_q = jax.random.normal(rngs[0], (num, width, 8)) * scale
  w_k = jax.random.normal(rngs[1], (num, width, 8)) * scale
  x_bos, x = jax.random.normal(rngs[2], (num, width)), jax.random.normal(rngs[3], (num, width))
  attend = jax.jit(jax.vmap(
      lambda a, b, c, d, encoding: ph.repeated_token_attention(a, b, c, d, rope=encoding),
      in_axes=(0, 0, 0, 0, None)), static_argnums=4)
  nope = np.asarray(attend(w_q, w_k, x_bos, x, RopeConfig(fraction=0.0)))
  assert np.all(nope[:, 2, 2] <= 0.5)
  np.testing.assert_array_equal(nope[:, 2, 2], nope[:, 2, 1])  # Identical logits, bit for bit.
  # RoPE breaks the tie: some random heads put more than half on the last token.
  rope_attn = np.asarray(attend(w_q, w_k, x_bos, x, RopeConfig(fraction=1.0)))
  assert np.mean(rope_attn[:, 2, 2] > 0.5) > 0.1


def test_same_weights_diagonal_with_rope_not_with_nope():
  """The Thm 5.3 diagonal head as weights: RoPE gets α_{3,3} ≈ 1, NoPE stays at 1/2."""
  width = 4
  psi_row = np.asarray(ph.construction_qk("diagonal", head_dim=H, norm=8.0)[0])
  w = np.zeros((width, H), np.float32)
  w[0] = psi_row  # Token x = e_0 maps to ψ in the fastest chunk; BOS = e_1 maps to 0.
  x_bos, x = np.eye(width, dtype=np.float32)[1], np.eye(width, dtype=np.float32)[0]
  full, nope = RopeConfig(fraction=1.0), RopeConfig(fraction=0.0)
  assert float(ph.repeated_token_attention(w, w, x_bos, x, rope=full)[2, 2]) > 0.99
  assert float(ph.repeated_token_attention(w, w, x_bos, x, rope=nope)[2, 2]) <= 0.5


def synthetic_attention(batch: int = 2, length: int = 6) -> np.ndarray:
  """[B, N=3, L, L]: head 0 diagonal, head 1 previous-token, head 2 uniform causal."""
  eye = np.eye(length)
  prev = np.eye(length, k=-1)
  prev[0, 0] = 1.0
  uniform = np.tril(np.ones((length, length)))
  uniform /= uniform.sum(-1, keepdims=True)
  return np.broadcast_to(np.stack([eye, prev, uniform]), (batch, 3, length, length)).copy()


def test_detection_scores_on_known_heads():
  attn = synthetic_attention()
  uniform_diag = np.mean([1 / (i + 1) for i in range(1, 6)])  # Query 0 is skipped.
  np.testing.assert_allclose(ph.offset_attention_scores(attn, 0), [1, 0, uniform_diag], rtol=1e-6)
  np.testing.assert_allclose(ph.offset_attention_scores(attn, 1), [0, 1, uniform_diag], rtol=1e-6)
  scores = ph.positional_head_scores_from_intermediates([{"attn": attn}, {"attn": attn[:, ::-1]}])
  assert scores["diagonal"].shape == (2, 3)
  assert ph.heads_above(scores["diagonal"], 0.9) == [(0, 0, 1.0), (1, 2, 1.0)]
  assert ph.heads_above(scores["previous_token"], 0.9) == [(0, 1, 1.0), (1, 1, 1.0)]
  assert ph.heads_above(scores["previous_token"], 1.0) == []


def test_detection_respects_mask_and_segments():
  attn = synthetic_attention(batch=1, length=6)
  # Two packed segments [0, 1, 2] and [3, 4] plus one padding token; within each segment the
  # previous-token head attends to the previous token of the segment.
  segment_ids = np.array([[0, 0, 0, 1, 1, 2]])
  mask = np.array([[1, 1, 1, 1, 1, 0]])
  attn[0, 1, 3] = 0.0
  attn[0, 1, 3, 3] = 1.0  # Segment start: nothing earlier to look at.
  attn[0, :, 5] = 0.37  # Garbage on the padding row.
  prev = ph.offset_attention_scores(attn, 1, mask, segment_ids)
  diag = ph.offset_attention_scores(attn, 0, mask, segment_ids)
  assert float(prev[1]) == pytest.approx(1.0) and float(diag[0]) == pytest.approx(1.0)
  # Valid queries are 1, 2 and 4; the uniform head gives them 1/2, 1/3 and 1/5.
  assert float(diag[2]) == pytest.approx(np.mean([1 / 2, 1 / 3, 1 / 5]), rel=1e-6)
  # Without the segment ids the segment start (query 3) counts and breaks the pattern.
  assert float(ph.offset_attention_scores(attn, 1, mask)[1]) < 0.8


def test_detection_finds_the_constructed_heads():
  eps, seq_len = 1e-2, 24
  norm = ph.sufficient_norm(1.0, seq_len, eps)
  heads = [ph.causal_attention(ph.construction_logits(kind, head_dim=H, seq_len=seq_len,
                                                      norm=norm))
           for kind in ph.HEAD_KINDS]
  scores = ph.positional_head_scores([np.stack(heads)[None]])
  assert [h[:2] for h in ph.heads_above(scores["diagonal"], 1 - eps)] == [(0, 0)]
  assert [h[:2] for h in ph.heads_above(scores["previous_token"], 1 - eps)] == [(0, 1)]


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="kind"):
    ph.construction_qk("induction", head_dim=H)
  with pytest.raises(ValueError, match=r"\[B, N, L, L\]"):
    ph.offset_attention_scores(np.ones((2, 3, 4)), 0)
  with pytest.raises(ValueError, match="mask"):
    ph.offset_attention_scores(np.ones((1, 1, 4, 4)), 0, mask=np.ones((1, 3)))
  with pytest.raises(ValueError, match="segment_ids"):
    ph.offset_attention_scores(np.ones((1, 1, 4, 4)), 0, segment_ids=np.ones((2, 4)))
  with pytest.raises(ValueError, match="offset"):
    ph.offset_attention_scores(np.ones((1, 1, 4, 4)), 4)
  with pytest.raises(ValueError, match="no valid query"):
    ph.offset_attention_scores(np.ones((1, 1, 4, 4)), 0, mask=np.array([[1, 0, 1, 0]]))
  with pytest.raises(ValueError, match=r"\[L, H\]"):
    ph.rope_logits(np.ones((4, 8)), np.ones((4, 6)))
  with pytest.raises(ValueError, match=r"\[num_layers, N\]"):
    ph.heads_above(np.ones(3), 0.5)
  with pytest.raises(ValueError, match="eps"):
    ph.sufficient_norm(1.0, 8, 1.5)
