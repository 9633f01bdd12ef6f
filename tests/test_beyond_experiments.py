"""The beyond-the-paper experiment scripts: their shared helpers, and one end-to-end smoke run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from experiments import beyond_common as common
from rope_jax.data import scoring

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_overrides_parse_to_python_values_and_set_only_known_keys():
  got = common.parse_overrides(["train.num_steps=50", "config.data.task=offline",
                                "eval.length_multipliers=[1, 2]",
                                "data.long_probe.passkey_depth=0.5"])
  assert got == {"train.num_steps": 50, "data.task": "offline", "eval.length_multipliers": [1, 2],
                 "data.long_probe.passkey_depth": 0.5}
  config = common.load("configs/tiny.py:pe=nope", got)
  assert config.train.num_steps == 50 and config.eval.length_multipliers == (1, 2)
  with pytest.raises(ValueError, match="Unknown config key 'train.num_stepz'"):
    common.load("configs/tiny.py", {"train.num_stepz": 1})
  with pytest.raises(ValueError, match="not KEY=VALUE"):
    common.parse_overrides(["train.num_steps"])


def test_seeds_combine_as_t_intervals_for_perplexity_and_pooled_wilson_for_probes():
  per_seed = [{"step": {"value": 10}, "ppl_1x": {"value": 10.0},
               "passkey_1x": {"correct": 3, "total": 10}},
              {"step": {"value": 10}, "ppl_1x": {"value": 12.0},
               "passkey_1x": {"correct": 5, "total": 10}}]
  s = common.summarize(per_seed)
  assert s["ppl_1x"]["mean"] == 11.0
  assert (s["ppl_1x"]["lo"], s["ppl_1x"]["hi"]) == pytest.approx(
      scoring.t_interval([10.0, 12.0])[1:])
  assert (s["passkey_1x"]["correct"], s["passkey_1x"]["total"]) == (8, 20)
  assert (s["passkey_1x"]["lo"], s["passkey_1x"]["hi"]) == scoring.wilson_interval(8, 20)


def test_passkey_heatmap_end_to_end(tmp_path):
  """Two tiny runs, a 2 x 2 grid: the table, the json and the heatmap are written."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  cmd = [sys.executable, "-m", "experiments.passkey_heatmap", f"--workdir={tmp_path}",
         "--encodings=nope,rope", "--length_multipliers=1,2", "--depths=0,1",
         "--num_examples=4", "--override=train.num_steps=2", "--override=train.warmup_steps=1",
         "--override=model.num_layers=1"]
  r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  assert os.path.getsize(tmp_path / "passkey_heatmap.png") > 1000
  payload = json.loads((tmp_path / "passkey.json").read_text())
  assert payload["lengths"] == [32, 64] and payload["depths"] == [0.0, 1.0]
  cells = payload["runs"]["rope"]["cells"]
  assert len(cells) == 4 and all(c["total"] == 4 for c in cells)
  assert "| NoPE |" in (tmp_path / "passkey.md").read_text()
