"""The Table 2 grid (rope_jax.sweeps.grid): 14 runs with the paper's settings, the data= argument."""

from __future__ import annotations

import re

import pytest

from rope_jax.config import base as config_lib
from rope_jax.sweeps import grid

# SPEC.md §2f, written out independently of rope_jax/grid.py:
# row key -> (variant, fraction, theta, paper Wiki, paper FlanV2).
EXPECTED = {
    "nope": ("p_rope", 0.0, 10_000.0, 4.8594, 6.6429),
    "rope-10k": ("p_rope", 1.0, 10_000.0, 4.4627, 6.4429),
    "rope-500k": ("p_rope", 1.0, 500_000.0, 4.4485, 6.4593),
    "p075-reversed": ("reversed", 0.75, 10_000.0, 4.4592, 6.4683),
    "p075-partial": ("partial", 0.75, 10_000.0, 4.4537, 6.4562),
    "p025-rope": ("p_rope", 0.25, 10_000.0, 4.5302, 6.5111),
    "p075-rope": ("p_rope", 0.75, 10_000.0, 4.4414, 6.4422),
}


def _load(run: grid.Run):
  config = config_lib.load_config(run.config)
  config.update_from_flattened_dict(dict(run.overrides))
  return config


def test_paper_grid_has_the_14_table2_runs_with_the_papers_settings():
  runs = grid.expand("paper")
  assert len(runs) == 14
  assert [r.row.key for r in runs[::2]] == list(EXPECTED)
  assert {(r.row.key, r.dataset) for r in runs} == {
      (k, d) for k in EXPECTED for d in ("wiki", "flan_v2")}
  assert len({r.name for r in runs}) == 14
  assert len({r.workdir("gs://b/t2") for r in runs}) == 14
  for run in runs:
    assert run.config.startswith("configs/gemma_2b.py:")
    config = _load(run)
    variant, fraction, theta, wiki, flan = EXPECTED[run.row.key]
    assert config.train.global_batch_size == 512
    assert config.train.seq_len == 8192
    assert config.train.num_steps == 10_000 == run.num_steps
    assert config.data.task == run.dataset
    rope = config.model.rope
    assert (rope.variant, rope.fraction, rope.theta) == (variant, fraction, theta), run.name
    assert run.paper_perplexity == {"wiki": wiki, "flan_v2": flan}[run.dataset]
    # Gemma 2B shape (SPEC.md §3).
    assert (config.model.num_layers, config.model.embed_dim, config.model.num_kv_heads) == (
        18, 2048, 1)


def test_the_paper_schedule_has_one_home():
  """The paper scale's schedule is apply_paper_schedule's, read from the config, not restated."""
  assert grid.SCALES["paper"].schedule() == {
      "global_batch_size": 512, "seq_len": 8192, "num_steps": 10_000}
  for name in ("gemma_2b", "gemma_7b"):
    config = config_lib.load_config(f"configs/{name}.py")
    want = config_lib.apply_paper_schedule(config_lib.base_config())
    for section in ("train", "eval", "checkpoint", "data"):
      assert config[section].to_dict() == want[section].to_dict(), (name, section)
  assert not {"global_batch_size", "seq_len", "num_steps"} & {
      f.name for f in grid.dataclasses.fields(grid.Scale)}


def test_paper_labels_and_names():
  labels = [r.label for r in grid.TABLE2_ROWS]
  assert labels == ["NoPE", "RoPE (θ = 10k)", "RoPE (θ = 500k)", "0.75-RoPE_reversed",
                    "0.75-RoPE_partial", "0.25-RoPE", "0.75-RoPE"]
  run = grid.find("p075-rope-flan-v2")
  assert run.config == "configs/gemma_2b.py:pe=p_rope,p=0.75,data=flan_v2"
  assert run.workdir("gs://b/t2/") == "gs://b/t2/flan_v2/p075-rope"
  assert run.train_flags("/w") == [
      "--config=configs/gemma_2b.py:pe=p_rope,p=0.75,data=flan_v2", "--workdir=/w"]
  for r in grid.expand("paper") + grid.expand("cpu"):
    assert re.fullmatch(r"[a-z][-a-z0-9]*[a-z0-9]", r.name) and len("t2-" + r.name) <= 63


def test_a_cell_config_validates():
  config = _load(grid.find("p075-partial-wiki"))
  sections = config_lib.validate(config)
  assert sections["data"].task == "wiki"
  assert sections["model"].rope.variant == "partial"


def test_cpu_grid_uses_tiny_on_a_corpus_and_probe_mixture():
  runs = grid.expand("cpu")
  scale = grid.SCALES["cpu"]
  assert len(runs) == 7 and scale.datasets == ("mixture",)
  assert scale.schedule() == {"global_batch_size": 8, "seq_len": 128, "num_steps": 300}
  for run in runs:
    config = _load(run)
    assert run.config.startswith("configs/tiny.py:")
    assert config.data.task == "mixture" and config.data.mixture == grid.CPU_MIXTURE
    assert (config.train.global_batch_size, config.train.seq_len, config.train.num_steps) == (
        8, 128, 300)
    assert run.num_steps == 300
    rows = sum(int(part.split(":")[1]) for part in config.data.mixture.split(","))
    assert rows == config.train.global_batch_size
    assert run.paper_perplexity is None
  assert len({r.workdir("/root") for r in runs}) == 7


def test_subsets_and_errors():
  runs = grid.expand("paper", datasets=["wiki"], rows=["0.75-RoPE", "nope"])
  assert [r.name for r in runs] == ["nope-wiki", "p075-rope-wiki"]
  with pytest.raises(ValueError, match="Unknown scale"):
    grid.expand("huge")
  with pytest.raises(ValueError, match="Unknown dataset"):
    grid.expand("paper", datasets=["offline"])
  with pytest.raises(ValueError, match="Unknown row"):
    grid.expand("paper", rows=["0.5-RoPE"])
  with pytest.raises(ValueError, match="No grid cell"):
    grid.find("p075-rope-c4")


def test_data_config_argument():
  assert config_lib.load_config("configs/tiny.py:data=probe_recall").data.task == "probe_recall"
  assert config_lib.load_config("configs/tiny.py").data.task == "offline"
  assert config_lib.load_config("configs/gemma_2b.py").data.task == "wiki"
  with pytest.raises(ValueError, match="Unknown data task 'c4'"):
    config_lib.load_config("configs/tiny.py:data=c4")
  assert "data" in config_lib.ARG_KEYS
