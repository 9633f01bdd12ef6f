"""The results collector (rope_jax.sweeps.results) on fake metrics.jsonl files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from rope_jax.sweeps import grid
from rope_jax.training import metrics
from rope_jax.sweeps import results


def _write(workdir, records, tail: str = ""):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")
    f.write(tail)


def _eval(step, ppl1, ppl2=None, ppl4=None, length=8192):
  rec = {"step": step, "split": "eval", f"loss_len{length}": 1.0,
         f"perplexity_len{length}": ppl1}
  if ppl2 is not None:
    rec[f"perplexity_len{2 * length}"] = ppl2
  if ppl4 is not None:
    rec[f"perplexity_len{4 * length}"] = ppl4
  return rec


def _fake_root(tmp_path):
  root = str(tmp_path / "table2")
  # Finished: evals at 5000 and 10000, train records, and a line cut short by a kill.
  _write(os.path.join(root, "wiki", "p075-rope"), [
      {"step": 10, "split": "train", "loss": 5.0},
      _eval(5000, 5.1, 6.0, 9.0),
      {"step": 10_000, "split": "train", "loss": 1.5},
      _eval(10_000, 4.45, 5.5, 8.25),
  ], tail='{"step": 10001, "spl')
  # Preempted at 3,000 steps, evaluated at 2,000.
  _write(os.path.join(root, "wiki", "nope"), [
      _eval(2000, 7.0), {"step": 3000, "split": "train", "loss": 2.0}])
  # Written by the real MetricsWriter (format drift guard).
  writer = metrics.MetricsWriter(os.path.join(root, "flan_v2", "p075-rope"))
  writer.write(100, {"loss": 2.0})
  writer.write(100, {"loss_len8192": 1.9, "perplexity_len8192": 6.5, "perplexity_len16384": 7.0,
                     "perplexity_len32768": 9.5}, split="eval")
  writer.close()
  return root


def test_metrics_writer_writes_tensorboard_without_importing_torch(tmp_path):
  """tensorboardX imports torch when installed (seconds per trainer start); the writer hides it
  for that import, still writes the event file, and leaves ``import torch`` working after."""
  code = (f"import sys\nfrom rope_jax.training import metrics\n"
          f"w = metrics.MetricsWriter({str(tmp_path)!r})\nw.write(1, {{'loss': 2.0}})\nw.close()\n"
          "assert 'torch' not in sys.modules, 'tensorboardX imported torch'\n"
          "print('OK')")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  p = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True,
                     timeout=300, env=dict(os.environ, PYTHONPATH=repo))
  assert p.returncode == 0 and "OK" in p.stdout, p.stderr[-3000:]
  events = [f for f in os.listdir(tmp_path / "tensorboard") if "tfevents" in f]
  assert events and os.path.getsize(tmp_path / "tensorboard" / events[0]) > 40


def test_collect_root_reads_every_cell(tmp_path):
  root = _fake_root(tmp_path)
  res = {r.name: r for r in results.collect_root(root)}
  assert len(res) == 14
  done = res["p075-rope-wiki"]
  assert done.found and done.finished and done.steps == 10_000 and done.eval_step == 10_000
  assert (done.perplexity_at(1), done.perplexity_at(2), done.perplexity_at(4)) == (
      4.45, 5.5, 8.25)
  part = res["nope-wiki"]
  assert part.found and not part.finished and part.steps == 3000 and part.eval_step == 2000
  assert part.perplexity_at(1) == 7.0 and part.perplexity_at(2) is None
  flan = res["p075-rope-flan-v2"]
  assert flan.steps == 100 and flan.perplexity == {8192: 6.5, 16384: 7.0, 32768: 9.5}
  assert not res["rope-500k-wiki"].found and res["rope-500k-wiki"].steps == 0


def test_markdown_report(tmp_path):
  root = _fake_root(tmp_path)
  text = results.report(results.collect_root(root))
  lines = text.splitlines()
  # Table 2 layout: ours beside the paper's; unfinished runs marked *.
  assert "| Row | Wiki (ours) | Wiki (paper) | FlanV2 (ours) | FlanV2 (paper) |" in lines
  assert "| 0.75-RoPE | 4.4500 | 4.4414 | 6.5000* | 6.4422 |" in lines
  assert "| NoPE | 7.0000* | 4.8594 | — | 6.6429 |" in lines
  assert "| RoPE (θ = 500k) | — | 4.4485 | — | 6.4593 |" in lines
  # Per-run rows: perplexities at 1x/2x/4x, the paper's number, delta, steps reached / planned.
  row = next(l for l in lines if l.startswith("| p075-rope-wiki |"))
  assert row == ("| p075-rope-wiki | wiki | `configs/gemma_2b.py:pe=p_rope,p=0.75,data=wiki` | "
                 "8192 | 4.4500 | 4.4414 | +0.0086 | 5.5000 | 8.2500 | 10,000 | "
                 "10,000 / 10,000 |")
  assert any(l.startswith("| nope-wiki |") and "3,000 / 10,000" in l for l in lines)
  assert any(l.startswith("| rope-500k-flan-v2 |") and "not started" in l for l in lines)
  assert sum(l.startswith("| ") and "`configs/" in l for l in lines) == 14


def test_workdirs_on_and_off_the_grid(tmp_path, capsys):
  root = _fake_root(tmp_path)
  other = str(tmp_path / "my_experiment")
  _write(other, [_eval(300, 12.5, length=128), {"step": 300, "split": "train", "loss": 2.5}])
  out_file = tmp_path / "table.md"
  assert results.main([f"--workdirs={root}/wiki/p075-rope,{other}", f"--out={out_file}"]) == 0
  text = capsys.readouterr().out
  assert out_file.read_text() == text
  assert "| 0.75-RoPE | 4.4500 | 4.4414 |" in text
  row = next(l for l in text.splitlines() if l.startswith("| my_experiment |"))
  assert "| 128 | 12.5000 | — | — |" in row and row.endswith("| 300 | 300 |")


def test_cpu_scale_root(tmp_path, capsys):
  root = str(tmp_path / "cpu")
  run = grid.find("p025-rope-mixture", scale="cpu")
  _write(run.workdir(root), [_eval(300, 3.25, 3.5, 4.0, length=128),
                             {"step": 300, "split": "train", "loss": 1.0}])
  assert results.main([f"--root={root}", "--scale=cpu"]) == 0
  text = capsys.readouterr().out
  assert "Corpus + probes (ours)" in text and "(paper)" not in text
  assert "| 0.25-RoPE | 3.2500 |" in text


def test_resolvable_difference_closed_form():
  # ppl 6.44, 1,048,576 tokens, sd 2.5: 6.44 * 1.96 * 2.5 * sqrt(2) / 1024.
  got = results.resolvable_difference(6.44, 2**20)
  assert abs(got - 6.44 * 1.96 * 2.5 * 2**0.5 / 1024) < 1e-12
  # Four times the tokens halves it.
  assert abs(results.resolvable_difference(6.44, 2**22) - got / 2) < 1e-12


def test_paper_grid_prints_its_resolution():
  run = grid.find("p075-rope-flan-v2")
  assert results.eval_tokens(run) == 2 * 64 * 8192
  note = results.resolution_note([results.RunResult(name=run.name, workdir="x", run=run)])
  assert "1,048,576 tokens" in note and "eval.num_batches" in note
