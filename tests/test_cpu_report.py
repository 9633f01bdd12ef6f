"""The CPU Table 2 report: statistics, verdicts and tables from synthetic member data.

The job (``experiments/table2_cpu.py``) trains two grids; here members are made by hand so that
each verdict's inputs are known: a clear NoPE gap must be "reproduced", a probe RoPE did not
learn must make its claims "inconclusive" whatever the numbers, and rows that sit in only one
grid must report only that grid's half.
"""

from __future__ import annotations

import numpy as np
import pytest

from experiments import table2_cpu
from rope_jax.sweeps import cpu_report
from rope_jax.sweeps import regime

SEQ_LEN, SEEDS, N = 64, 3, 200
CONTEXTS = (64, 128, 256)


def _member(row, seed, *, loss=None, copy=None, recall=None, ablated=None):
  """``loss`` nats at every context; probe exact-match rates turned into ``N`` 0/1 examples."""
  def ex(rate):
    k = int(round(rate * N))
    return [1.0] * k + [0.0] * (N - k)
  m = {"row": row, "seed": seed, "loss": {}, "probes": {}, "ablation": {"high": {}, "low": {}}}
  if loss is not None:
    m["loss"] = {c: loss + 0.001 * seed for c in CONTEXTS}
    for band in ("high", "low"):
      m["ablation"][band]["loss"] = loss + 0.01
  if copy is not None:
    m["probes"] = {"copy": {c: ex(copy) for c in CONTEXTS},
                   "recall": {c: ex(recall) for c in CONTEXTS}}
    for band in ("high", "low"):
      a = (ablated or {}).get(band, {})
      m["ablation"][band].update(copy=ex(a.get("copy", copy)), recall=ex(a.get("recall", recall)))
  return m


def _results(recall_rate):
  rows = tuple(r for r in regime.cpu_rows(SEQ_LEN)
               if r.key in ("nope", "rope", "p075-reversed", "p075-rope"))
  members = {}
  for s in range(SEEDS):
    members[f"nope-s{s}"] = _member("nope", s, loss=5.0 + 0.02 * s)  # LM grid only
    members[f"rope-s{s}"] = _member(
        "rope", s, loss=4.5, copy=0.98, recall=recall_rate,
        ablated={"high": {"copy": 0.1, "recall": recall_rate},
                 "low": {"copy": 0.97, "recall": recall_rate / 3}})
    members[f"p075-rope-s{s}"] = _member("p075-rope", s, loss=4.5, copy=0.97, recall=recall_rate)
    members[f"p075-reversed-s{s}"] = _member("p075-reversed", s, copy=0.3 + 0.01 * s,
                                             recall=recall_rate)  # probe grid only
  return cpu_report.summarise(rows, SEEDS, members, {"unigram": 400.0, "bigram": 100.0},
                              seq_len=SEQ_LEN, head_dim=32, steps={"lm": 5, "probe": 7},
                              eval_tokens=1024, probe_examples=N)


def _verdicts(results):
  return {x["claim"].split(" (")[0]: x["verdict"] for x in results["ledger"]}


def test_learned_probes_give_verdicts_and_rows_keep_their_grid():
  res = _results(0.95)
  v = _verdicts(res)
  assert v["NoPE is worst at language modelling"] == cpu_report.REPRODUCED
  assert v["The highest frequencies carry the positional"] == cpu_report.REPRODUCED
  assert v["Removing the highest frequencies"] == cpu_report.REPRODUCED  # 30% vs 98%
  assert v["The lowest frequencies carry the semantic"] == cpu_report.REPRODUCED
  assert v["0.75-RoPE has lower perplexity than RoPE in the paper's regime"] == (
      cpu_report.INCONCLUSIVE)  # identical losses: the interval is [0, 0]
  rows = {e["key"]: e for e in res["rows"]}
  assert "probes" not in rows["nope"] and "ppl" in rows["nope"]
  assert "ppl" not in rows["p075-reversed"] and "probes" in rows["p075-reversed"]
  assert set(res["beats_bigram"]) == {"nope", "rope", "p075-rope"}
  pooled = rows["rope"]["probes"]["copy"][64]["pooled"]
  assert pooled["mean"] == pytest.approx(0.98) and pooled["n"] == SEEDS * N
  assert pooled["hi"] - pooled["lo"] < 0.06  # 600 examples: a Wilson interval narrower than 6 pts
  text = cpu_report.markdown(res)
  nope_line = next(x for x in text.splitlines() if x.startswith("| NoPE | fastest quarter"))
  assert nope_line.endswith("| — | — |") and "—" not in nope_line[:-10]  # LM only: no probes
  assert "Not below the bigram baseline (100.00) at this budget:** NoPE." in text  # e^5 > 100
  assert "0.75-RoPE_reversed" in text.split("## Probes")[1].split("## Band")[0]


def test_unlearned_probe_makes_its_claims_inconclusive():
  v = _verdicts(_results(0.5))  # Same ablation pattern, but RoPE only reaches 50% on recall.
  assert v["The lowest frequencies carry the semantic"] == cpu_report.INCONCLUSIVE
  assert v["Removing the lowest frequencies helps semantic retrieval beyond the training length"] \
      == cpu_report.INCONCLUSIVE
  assert v["The highest frequencies carry the positional"] == cpu_report.REPRODUCED  # copy learned


def test_band_ablation_zeroes_a_quarter_of_each_members_rotating_pairs():
  freqs = np.array([[1.0, 0.5, 0.25, 0.125, 0.0, 0.0, 0.0, 0.0],
                    [0.0] * 8,
                    [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]])
  high, low = table2_cpu._band_freqs(freqs, "high"), table2_cpu._band_freqs(freqs, "low")
  np.testing.assert_array_equal(high[0], [0, 0.5, 0.25, 0.125, 0, 0, 0, 0])
  np.testing.assert_array_equal(low[0], [1, 0.5, 0.25, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(high[1], freqs[1])
  np.testing.assert_array_equal(high[2], [0, 0, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
  np.testing.assert_array_equal(low[2], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0, 0])
  np.testing.assert_array_equal(freqs[0], [1.0, 0.5, 0.25, 0.125, 0, 0, 0, 0])  # not in place


def test_rows_must_be_known_and_include_the_reference():
  rows = regime.cpu_rows(SEQ_LEN)
  with pytest.raises(ValueError, match="Unknown LM row"):
    table2_cpu._select(rows, ["rope", "p05"], "LM")
  with pytest.raises(ValueError, match="must include 'rope'"):
    table2_cpu._select(rows, ["nope"], "probe")
