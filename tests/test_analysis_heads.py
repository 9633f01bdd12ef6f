"""Tables 3–5, head types, the strict positional-head definition, bands and prompt sets.

Planted heads (constructed q / k or attention weights) must come out exactly as planted, against
float64 numpy closed forms; the analyze jobs run end to end on a tiny run saved in-process.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from rope_jax.analysis import anatomy
from rope_jax.analysis import cauchy_schwarz as cs
from rope_jax.analysis import chunks
from rope_jax.analysis import compare
from rope_jax.analysis import head_types
from rope_jax.analysis import measure
from rope_jax.analysis import positional_heads as ph
from rope_jax.analysis import prompt_sets
from rope_jax.config.schema import RopeConfig

ROPE = RopeConfig()
H, L = 16, 9


def _rotate(x, rope=ROPE):
  """``[L, H]`` rotated to positions 0..L-1 by the kernel."""
  return np.asarray(rope.apply(np.asarray(x, np.float32)[:, None, :], np.arange(len(x)))[:, 0])


# ----------------------------------------------------------------------------------------------
# Tables 3–5: per-chunk activation against the Cauchy–Schwarz bound.


@pytest.mark.parametrize("kind,target", [("diagonal", "diagonal"),
                                         ("previous_token", "previous_token")])
def test_planted_positional_head_meets_the_bound_on_its_target(kind, target):
  norm, chunk = 3.0, 0
  q, k = (np.asarray(x) for x in ph.construction_qk(kind, head_dim=H, chunk=chunk, norm=norm))
  qs, ks = np.tile(q, (L, 1)), np.tile(k, (L, 1))
  act = np.asarray(cs.chunk_activations(_rotate(qs), _rotate(ks)))
  bound = np.asarray(cs.chunk_bounds(qs, ks))
  # The chunks sum to the RoPE logits (reference: the analysis' own rope_logits).
  np.testing.assert_allclose(act.sum(-1), np.asarray(ph.rope_logits(qs, ks)), atol=1e-4)
  # Closed form: a^{(0)}_{ij} = ‖ψ‖² cos((j - i + offset) g_0), g_0 = 1 rad; other chunks 0.
  offset = ph.TARGET_OFFSET[kind]
  i, j = np.meshgrid(np.arange(L), np.arange(L), indexing="ij")
  np.testing.assert_allclose(act[..., 0], norm**2 * np.cos(j - i + offset), atol=2e-5)
  np.testing.assert_allclose(act[..., 1:], 0.0, atol=1e-6)
  np.testing.assert_allclose(bound[..., 0], norm**2, rtol=1e-6)
  codes, names = cs.pair_kinds(L)
  summary = cs.summarize_by_kind(act, bound, codes, names)
  assert summary[target]["alignment"][0] == pytest.approx(1.0, abs=1e-6)
  np.testing.assert_allclose(summary[target]["mean_cosine"][0], 1.0, atol=1e-6)
  other = "previous_token" if target == "diagonal" else "diagonal"
  assert summary[other]["alignment"][0] == pytest.approx(np.cos(1.0), abs=1e-5)
  assert summary["diagonal"]["count"] == L - 1 and summary["previous_token"]["count"] == L - 1
  assert summary["other"]["count"] == (L - 1) * (L - 2) // 2
  assert np.isnan(summary[target]["alignment"][1])  # Zero bound: no ratio.


def test_pair_kinds_bos_and_markers():
  markers = np.array([0, 0, 1, 0, 0], bool)
  codes, names = cs.pair_kinds(5, bos=True, markers=markers)
  assert names == ("bos", "diagonal", "previous_token", "marker", "other")
  c = {n: i for i, n in enumerate(names)}
  expected = np.full((5, 5), -1)
  for i in range(1, 5):
    expected[i, 0] = c["bos"]
    expected[i, i] = c["diagonal"]
    for j in range(1, i - 1):
      expected[i, j] = c["other"]
    if i >= 2:
      expected[i, i - 1] = c["marker"] if markers[i - 1] else c["previous_token"]
  np.testing.assert_array_equal(codes, expected)
  with pytest.raises(ValueError, match="markers must be"):
    cs.pair_kinds(5, markers=[True])


def test_planted_band_carries_the_whole_logit():
  """q, k nonzero only in chunks 5..6 (a low band): only that band contributes."""
  rng = np.random.default_rng(0)
  q = np.zeros((L, H), np.float32)
  k = np.zeros((L, H), np.float32)
  dims = np.asarray(chunks.chunk_dims(H))[5:7]
  q[:, dims.ravel()] = rng.normal(size=(L, 4))
  k[:, dims.ravel()] = rng.normal(size=(L, 4))
  bands = cs.band_slices(H // 2, "0:2,2:5,5:7,7:8")
  act = np.asarray(cs.chunk_activations(_rotate(q), _rotate(k)))
  per_band = cs.band_sums(act, bands)
  np.testing.assert_allclose(per_band[..., [0, 1, 3]], 0.0, atol=1e-6)
  np.testing.assert_allclose(per_band[..., 2], np.asarray(ph.rope_logits(q, k)), atol=1e-5)
  codes, names = cs.pair_kinds(L, bos=True)
  by_kind = cs.contributions_by_kind(per_band, codes, names)
  for kind, c in zip(names, range(len(names))):
    np.testing.assert_allclose(by_kind[kind][2], per_band[..., 2][codes == c].astype(np.float64).mean(), rtol=1e-9)


def test_band_slices():
  assert cs.band_slices(32, 4) == [(0, 8), (8, 16), (16, 24), (24, 32)]
  assert cs.band_slices(8, "0:3,3:8") == [(0, 3), (3, 8)]
  for bad in ("0:3,4:8", "0:3", "x", "0:3,3:3,3:8"):
    with pytest.raises(ValueError, match="bands must"):
      cs.band_slices(8, bad)
  with pytest.raises(ValueError, match="number of bands"):
    cs.band_slices(8, 9)


# ----------------------------------------------------------------------------------------------
# The strict definition against the mean.


def _one_hot_attention(targets):
  """``[1, 1, L, L]`` attention with all mass on ``targets[i]`` for query i."""
  n = len(targets)
  attn = np.zeros((1, 1, n, n), np.float32)
  attn[0, 0, np.arange(n), targets] = 1.0
  return attn


def test_strict_definition_differs_from_the_mean():
  """Diagonal on every query but one: mean 7/8 > 1 - ε, min 0 < 1 - ε (ε = 0.5)."""
  targets = np.arange(L)
  targets[4] = 0  # Query 4 looks at BOS.
  attn = _one_hot_attention(targets)
  mean = ph.positional_head_scores([attn])["diagonal"]
  strict = ph.positional_head_min_scores([attn])["diagonal"]
  assert float(mean[0, 0]) == pytest.approx(7 / 8)
  assert float(strict[0, 0]) == 0.0
  assert ph.heads_above(mean, 0.5) and not ph.heads_above(strict, 0.5)
  # A mixed head: reference min over the counted queries in float64.
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 3, L, L)) * 3
  attn = np.asarray(ph.causal_attention(logits))
  mask = np.ones((2, L), bool)
  mask[1, 6:] = False
  got = ph.positional_head_min_scores([attn], mask)
  for kind, off in ph.TARGET_OFFSET.items():
    ref = np.full(3, np.inf)
    for b, n in ((0, L), (1, 6)):
      for i in range(1, n):
        ref = np.minimum(ref, attn[b, :, i, i - off].astype(np.float64))
    np.testing.assert_allclose(np.asarray(got[kind])[0], ref, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Head types.


def test_marker_pieces():
  pieces = ["<s>", "▁don", "'", "t", "▁stop", ",", "▁it", "’s", "▁...", "!?"]
  np.testing.assert_array_equal(head_types.marker_tokens(pieces, "apostrophe"),
                                [0, 0, 1, 0, 0, 0, 0, 1, 0, 0])
  np.testing.assert_array_equal(head_types.marker_tokens(pieces, "punctuation"),
                                [0, 0, 1, 0, 0, 1, 0, 0, 1, 1])
  with pytest.raises(ValueError, match="marker kind must be one of"):
    head_types.is_marker_piece("'", "comma")


def test_planted_bos_and_apostrophe_heads():
  """Head 0 is a sink (all on BOS); head 1 follows App. E.1's apostrophe rule exactly."""
  markers = np.zeros((1, L), bool)
  markers[0, [3, 6]] = True
  mask = np.ones((1, L), bool)
  bos_target = np.zeros(L, int)
  marker_target = np.array([0 if i == 0 or not markers[0, i - 1] else i - 1 for i in range(L)])
  attn = np.concatenate([_one_hot_attention(bos_target), _one_hot_attention(marker_target)], 1)
  queries = head_types.query_mask(mask)
  bos, marker = head_types.TypeScores(), head_types.TypeScores()
  bos.add([attn], head_types.bos_targets(mask), queries)
  marker.add([attn], head_types.marker_targets(markers, mask), queries)
  np.testing.assert_array_equal(bos.strict, [[1.0, 0.0]])
  np.testing.assert_allclose(bos.mean, [[1.0, 6 / 8]])
  np.testing.assert_array_equal(marker.strict, [[0.0, 1.0]])
  np.testing.assert_allclose(marker.mean, [[6 / 8, 1.0]])
  assert bos.count == marker.count == L - 1


# ----------------------------------------------------------------------------------------------
# Prompt sets and comparisons.


@pytest.mark.parametrize("name", prompt_sets.NAMES)
def test_shipped_prompt_sets(name):
  texts = measure.read_prompts(name)
  assert len(texts) == 10 and all(len(t) > 10 for t in texts)
  assert measure.read_prompts(prompt_sets.path(name)) == texts


def test_prompt_set_errors():
  with pytest.raises(ValueError, match="shipped sets: shakespeare, italian"):
    measure.read_prompts("klingon")
  with pytest.raises(ValueError, match="unknown prompt set 'klingon'"):
    prompt_sets.parse_names("italian,klingon")
  assert prompt_sets.parse_names("all") == prompt_sets.NAMES


def test_band_fractions_and_similarity():
  usage = np.array([[1.0, 1.0, 2.0, 4.0]])
  np.testing.assert_allclose(compare.band_fractions(usage, [(0, 2), (2, 4)]), [[0.25, 0.75]])
  assert compare.profile_similarity(usage, 3 * usage) == pytest.approx(1.0)
  assert compare.profile_similarity([1.0, 0.0], [0.0, 1.0]) == 0.0


# ----------------------------------------------------------------------------------------------
# On a model: the decomposition is the model's logit; the jobs write their files.


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  from tests.test_analyze import _save_params_only  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp("tiny_rope")
  _save_params_only(workdir, "pe=rope")
  return str(workdir)


def test_head_anatomy_reproduces_the_model_attention(tiny_run):
  run = measure.load_run(tiny_run)
  prompt = [2, 17, 300, 41, 41, 9, 1000, 5]
  a = anatomy.head_anatomy(run.model, prompt, layer=1, head=3, bands="0:4,4:32")
  assert a.kv_head == 0 and a.activations.shape == (8, 8, 32)
  assert a.softmax_error < 1e-5
  np.testing.assert_array_less(np.abs(a.activations), a.bounds * (1 + 1e-5) + 1e-6)
  assert set(a.band_by_kind) == {"bos", "diagonal", "previous_token", "other"}


def test_analyze_new_analyses_end_to_end(tiny_run, tmp_path):
  from rope_jax.analysis import report  # pylint: disable=g-import-not-at-top
  prompts = tmp_path / "p.txt"
  prompts.write_text("I don't know, it's fine.\nTo be, or not to be.\n")
  out = tmp_path / "out"
  # One forward batch per prompt set (10 prompts each): every batch shape is one more
  # compilation, and batching is measure's (test_analyze checks one batch == many).
  paths = report.analyze(tiny_run, "cauchy_schwarz,head_types,domains", str(out),
                         prompts=str(prompts), layer=0, head=1, bands="0:8,8:32",
                         domains="shakespeare,code", batch_size=12)
  assert all(os.path.exists(p) for p in paths)
  table = json.loads((out / "cauchy_schwarz_L0H1_prompt0.json").read_text())
  assert table["softmax_error"] < 1e-5 and table["band_labels"][0].startswith("k 0-7")
  assert (out / "cauchy_schwarz_L0H1_prompt0.md").read_text().startswith("| pair kind")
  types = json.loads((out / "head_types.json").read_text())
  assert types["num_after_marker"] == 2  # "don'" and "it'" (byte or piece level).
  assert np.shape(types["bos"]["strict"]) == (2, 4)
  domains = json.loads((out / "domains.json").read_text())
  assert domains["cosine_similarity_to_reference"]["shakespeare"]["k"] == pytest.approx(1.0)
  for name in ("head_types.png", "head_bands.png", "domains_frequency_usage.png",
               "cauchy_schwarz_L0H1_prompt0.png"):
    assert (out / name).stat().st_size > 10_000
  with pytest.raises(ValueError, match="--marker='comma' is not one of"):
    report.analyze(tiny_run, "head_types", str(tmp_path / "x"), marker="comma")
  with pytest.raises(ValueError, match="--domains: unknown prompt set"):
    report.analyze(tiny_run, "domains", str(tmp_path / "x"), domains="klingon")
  with pytest.raises(ValueError, match="--bands: bands must"):
    report.analyze(tiny_run, "cauchy_schwarz", str(tmp_path / "x"), bands="0:3")


# ----------------------------------------------------------------------------------------------
# experiments/llama31_analysis.py (App. C) on a tiny Llama-shaped run (GQA, θ = 500k).


def test_llama31_analysis_end_to_end(tmp_path):
  from experiments import llama31_analysis  # pylint: disable=g-import-not-at-top
  from tests.test_analyze import _save_params_only  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "llama"
  _save_params_only(workdir, "pe=rope,theta=500000", metadata={"import": {"src": "tiny"}},
                    num_kv_heads=2)
  ids = tmp_path / "ids.json"
  ids.write_text(json.dumps([[2, 5, 9, 11, 300, 7], [2, 40, 41, 42]]))
  out = tmp_path / "out"
  paths = llama31_analysis.main([f"--workdir={workdir}", f"--token_ids={ids}", f"--out={out}",
                                 "--layer=1", "--top_heads=2", "--bands=0:8,8:32"])
  assert all(os.path.exists(p) for p in paths)
  numbers = json.loads((out / "spread.json").read_text())
  assert numbers["theta"] == 500000 and numbers["positional_encoding"] == "RoPE θ=500k"
  assert np.sum(numbers["k"]["band_share_overall"]) == pytest.approx(1.0, abs=1e-3)
  assert len(numbers["k"]["onset_chunk_per_layer"]) == 2
  usage = json.loads((out / "frequency_usage.json").read_text())
  assert np.shape(usage["k"]) == (2, 2, 32)  # GQA: 2 key heads.
  for name in ("frequency_usage_layers.png", "frequency_usage_layer1_heads.png",
               "fig11_diagonal_heads.png", "positional_heads_strict.png"):
    assert (out / name).stat().st_size > 10_000
  assert list(out.glob("cauchy_schwarz_L*H*_prompt0.md"))
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps([[2, 5000]]))
  with pytest.raises(ValueError, match="id 5000 does not fit model.vocab_size=2048"):
    llama31_analysis.main([f"--workdir={workdir}", f"--token_ids={bad}", f"--out={out}"])


def test_llama31_analysis_on_an_imported_tiny_llama(tmp_path):
  """App. C end to end on the tiny random Llama (GQA, untied, llama3 scaling) of
  tests/testdata, imported by rope_jax.import_hf (skipped where the importer is not there)."""
  import_hf = pytest.importorskip("rope_jax.import_hf")
  src = os.path.join(os.path.dirname(__file__), "testdata", "llama_tiny_gqa")
  if not os.path.exists(os.path.join(src, "config.json")):
    pytest.skip("no tiny Llama fixture in tests/testdata")
  from experiments import llama31_analysis  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "llama"
  import_hf.import_run(src, str(workdir))
  vocab = json.load(open(os.path.join(src, "config.json")))["vocab_size"]
  ids = tmp_path / "ids.json"
  ids.write_text(json.dumps([[1, *range(3, 3 + n)] for n in (20, 9, 14)]))
  assert vocab > 3 + 20
  out = tmp_path / "out"
  llama31_analysis.main([f"--workdir={workdir}", f"--token_ids={ids}", f"--out={out}",
                         "--top_heads=2", "--bands=2"])
  usage = json.loads((out / "frequency_usage.json").read_text())
  assert np.shape(usage["q"])[1] == 4 and np.shape(usage["k"])[1] == 2  # GQA 4 / 2.
  table = json.loads(next(out.glob("cauchy_schwarz_L*H*_prompt0.json")).read_text())
  assert table["softmax_error"] < 1e-5  # The decomposition is the imported model's logit.
  assert (out / "spread.md").exists() and (out / "fig11_diagonal_heads.png").exists()


def test_compare_names_seed_directories_by_row():
  from experiments import frequency_usage_compare  # pylint: disable=g-import-not-at-top
  assert frequency_usage_compare.run_name("/runs/table2/nope/s0/") == "nope_s0"
  assert frequency_usage_compare.run_name("/runs/rope-500k") == "rope-500k"
