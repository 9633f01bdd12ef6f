r"""The paper's Table 2 at CPU scale, in the paper's regime, with seeds and CIs: the main job.

    python -m experiments.table2_cpu --workdir=runs/table2_cpu

What it does (``README.md``, results section, says what it shows):

1. **Regime** (``rope_jax.sweeps.regime``): θ is scaled with the training length L so that the
   fastest frequency 0.75-RoPE removes turns 8.2 rad over the context, as in the paper
   (H = 256, θ = 10k, L = 8k). The seven Table 2 rows use that θ; RoPE and 0.75-RoPE at the
   paper's θ = 10k are control rows. A table of rotations per row is printed first.
2. **One compiled program** (``rope_jax.training.fused``): rows × seeds train together under
   ``jax.vmap`` on shared batches (seeds differ in the init). Every batch holds language-model
   rows (random windows of the offline corpus's train split) and rows of two probes: ``copy``
   (positional) and ``recall`` (semantic, associative recall at any distance).
3. **Evaluation**, all on the same tokens for every member: held-out perplexity of one fixed
   validation stream scored with contexts L, 2L, 4L (``rope_jax.data.heldout.windows``: the same
   targets at every length); unigram / bigram count baselines on those targets; probe exact
   match of the whole answer at 1×, 2×, 4×; band ablation at L (the fastest or the slowest
   quarter of a member's rotating pairs made identity).
4. **Statistics and claims** (``rope_jax.sweeps.cpu_report``): mean ± 95% t-interval over seeds,
   paired differences against RoPE at the scaled θ on identical tokens, a claims ledger with
   verdicts, ``results.md`` / ``results.json`` and PNG figures in the workdir; every member is
   an ordinary run directory (``<workdir>/runs/<row>/s<seed>``: checkpoint + ``metrics.jsonl``)
   that ``rope_jax.analyze`` and ``rope_jax.results`` read.

The default budget (``--steps=200``) is sized for ≤ 10 minutes on an idle 2-core machine; it
says when the models do not beat the bigram baseline. ``--steps=N`` trains longer.
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import logging  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from rope_jax.sweeps import regime  # pylint: disable=g-import-not-at-top,wrong-import-position

_WORKDIR = flags.DEFINE_string("workdir", "runs/table2_cpu", "Where runs and results go.")
_STEPS = flags.DEFINE_integer("steps", 200, "Training steps of every member (the budget).")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds (init keys) per row; >= 3 for intervals.")
_ROWS = flags.DEFINE_list("rows", None, "Subset of row keys (default: all nine).")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 64, "Training length L.")
_EVAL_TOKENS = flags.DEFINE_integer("eval_tokens", 8192, "Held-out targets scored per length.")
_PROBE_EXAMPLES = flags.DEFINE_integer("probe_examples", 128,
                                       "Probe examples per member per length.")
_FIGURES = flags.DEFINE_bool("figures", True, "Write the PNG figures.")

MODEL_OVERRIDES, BATCH_ROWS, PROBE = (regime.MODEL_OVERRIDES, regime.BATCH_ROWS,
                                     regime.PROBE)
PROBES = ("copy", "recall")
LENGTH_MULTIPLIERS = regime.LENGTH_MULTIPLIERS
EVAL_CHUNK_TOKENS = 1024  # Rows per eval call = this / context (bounds the [M, B, L, V] logits).
TRAIN_DATA_SEED = 0


def _documents(split: str) -> list[np.ndarray]:
  """The offline corpus split, tokenized with the shipped vocabulary (eos appended)."""
  from rope_jax.data import offline_corpus  # pylint: disable=g-import-not-at-top
  from rope_jax.data import packing  # pylint: disable=g-import-not-at-top
  from rope_jax.data import text  # pylint: disable=g-import-not-at-top
  sp = text.load_tokenizer()
  return [np.asarray(sp.encode(t) + [packing.EOS_ID], np.int32)
          for t in offline_corpus.split_texts(split)]


def _train_batch(step: int, stream: np.ndarray, seq_len: int) -> dict[str, np.ndarray]:
  """Step ``step``'s shared batch: LM windows, then copy rows, then recall rows."""
  from rope_jax.data import probes  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng([TRAIN_DATA_SEED, step])
  n = BATCH_ROWS["lm"]
  starts = rng.integers(0, stream.shape[0] - seq_len - 1, size=n)
  idx = starts[:, None] + np.arange(seq_len + 1)
  seqs = stream[idx]
  parts = [{"inputs": seqs[:, :-1], "targets": seqs[:, 1:],
            "weights": np.ones((n, seq_len), np.float32),
            "segment_ids": np.ones((n, seq_len), np.int32),
            "positions": np.broadcast_to(np.arange(seq_len), (n, seq_len))}]
  for kind in PROBES:
    k = BATCH_ROWS[kind]
    parts.append(probes.make_batch(kind, range(step * k, (step + 1) * k), seed=TRAIN_DATA_SEED,
                                   split="train", seq_len=seq_len, **PROBE))
  return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _eval(grid, params, batch: dict[str, np.ndarray], freqs=None) -> dict[str, np.ndarray]:
  """``grid.eval_sums`` over ``batch`` in chunks; ``[M, rows]`` arrays."""
  rows = batch["inputs"].shape[0]
  per = max(1, EVAL_CHUNK_TOKENS // batch["inputs"].shape[1])
  pad = -rows % per  # One chunk shape per length: one compile per length.
  if pad:
    batch = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)])
             for k, v in batch.items()}
  outs = [grid.eval_sums(params, {k: v[i:i + per] for k, v in batch.items()}, freqs)
          for i in range(0, rows + pad, per)]
  return {k: np.concatenate([o[k] for o in outs], axis=1)[:, :rows] for k in outs[0]}


def _band_freqs(freqs: np.ndarray, band: str) -> np.ndarray:
  """``freqs [M, H/2]`` with the fastest (``"high"``) or slowest (``"low"``) quarter of each
  member's rotating pairs made identity (0)."""
  out = freqs.copy()
  for m in range(freqs.shape[0]):
    nz = np.flatnonzero(freqs[m])
    if nz.size == 0:
      continue
    order = nz[np.argsort(-freqs[m, nz])]  # Fastest first.
    q = max(1, nz.size // 4)
    out[m, order[:q] if band == "high" else order[-q:]] = 0.0
  return out


def run(workdir: str, *, steps: int, seeds: int, row_keys, seq_len: int, eval_tokens: int,
        probe_examples: int, figures: bool) -> dict:
  """Trains, evaluates and reports; returns the results dict (also in results.json)."""
  import jax  # pylint: disable=g-import-not-at-top
  from rope_jax.config import base as config_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.data import heldout  # pylint: disable=g-import-not-at-top
  from rope_jax.data import probes  # pylint: disable=g-import-not-at-top
  from rope_jax.sweeps import cpu_report  # pylint: disable=g-import-not-at-top
  from rope_jax.training import fused  # pylint: disable=g-import-not-at-top
  from rope_jax.training import train_lib  # pylint: disable=g-import-not-at-top

  t0 = time.perf_counter()
  timings = {}
  rows = regime.cpu_rows(seq_len)
  if row_keys:
    known = {r.key for r in rows}
    bad = sorted(set(row_keys) - known)
    if bad:
      raise ValueError(f"Unknown row(s) {bad}; known: {sorted(known)}.")
    if "rope" not in row_keys:
      raise ValueError("The rows must include 'rope' (the reference of every paired difference).")
    rows = tuple(r for r in rows if r.key in row_keys)
  if seeds < 1 or steps < 1:
    raise ValueError(f"Need --seeds >= 1 and --steps >= 1, got {seeds} and {steps}.")
  configs = regime.member_configs(rows, seq_len, steps)
  model_cfg = config_lib.model_config(configs[rows[0].key])
  train_cfg = train_lib.TrainConfig.from_dict(config_lib.to_dict(configs[rows[0].key].train))
  head_dim = model_cfg.head_dim
  print(cpu_report.regime_table(rows, head_dim, seq_len), flush=True)

  train_stream = heldout.token_stream(_documents("train"))
  val_stream = heldout.token_stream(_documents("validation"))
  flat = heldout.windows(val_stream, eval_tokens, seq_len)
  base_losses = heldout.ngram_losses(train_stream, flat["inputs"].ravel(), flat["targets"].ravel(),
                                     model_cfg.vocab_size)
  baselines = {k: float(np.exp(v.mean())) for k, v in base_losses.items()}
  timings["data_s"] = time.perf_counter() - t0
  print(f"Data: {train_stream.size:,} train / {val_stream.size:,} held-out tokens; baselines on "
        f"the {eval_tokens:,} evaluation targets: unigram ppl {baselines['unigram']:.2f}, "
        f"bigram ppl {baselines['bigram']:.2f}.", flush=True)

  members = [fused.Member(f"{r.key}-s{s}", r.rope, s) for r in rows for s in range(seeds)]
  grid = fused.FusedGrid(model_cfg, train_cfg, members)
  t = time.perf_counter()
  state = grid.init()
  records = {m.name: [] for m in members}
  for step in range(steps):
    state, metrics = grid.step(state, _train_batch(step, train_stream, seq_len))
    if step == 0:
      jax.block_until_ready(metrics)
      timings["compile_s"] = time.perf_counter() - t
      t_train = time.perf_counter()
    if (step + 1) % train_cfg.log_every_steps == 0 or step + 1 == steps:
      host = jax.device_get(metrics)
      for i, m in enumerate(members):
        records[m.name].append({"step": step + 1, "split": "train",
                                **{k: float(v[i]) for k, v in host.items()}})
      print(f"step {step + 1}/{steps} | loss over members: mean {host['loss'].mean():.3f} "
            f"min {host['loss'].min():.3f} max {host['loss'].max():.3f}", flush=True)
  jax.block_until_ready(state)
  timings["train_s"] = time.perf_counter() - t_train
  timings["member_tokens_per_s"] = (len(members) * (steps - 1) * train_cfg.global_batch_size
                                    * seq_len / max(timings["train_s"], 1e-9))

  t = time.perf_counter()
  params = state["params"]
  out = {m.name: {"row": m.name.rsplit("-s", 1)[0], "seed": m.seed, "loss": {}, "probes": {},
                  "ablation": {}} for m in members}
  for mult in LENGTH_MULTIPLIERS:
    c = seq_len * mult
    sums = _eval(grid, params, heldout.windows(val_stream, eval_tokens, c))
    for i, m in enumerate(members):
      out[m.name]["loss"][c] = float(sums["loss_sum"][i].sum() / sums["weight_sum"][i].sum())
    for kind in PROBES:
      batch = probes.make_batch(kind, range(probe_examples), seed=0, split="validation",
                                seq_len=c, **PROBE)
      exact = _eval(grid, params, batch)["exact"]
      for i, m in enumerate(members):
        out[m.name]["probes"].setdefault(kind, {})[c] = exact[i].tolist()
  own = np.asarray(grid.freqs)
  for band in ("high", "low"):
    freqs = _band_freqs(own, band)
    sums = _eval(grid, params, heldout.windows(val_stream, eval_tokens, seq_len), freqs)
    res = {m.name: {"loss": float(sums["loss_sum"][i].sum() / sums["weight_sum"][i].sum())}
           for i, m in enumerate(members)}
    for kind in PROBES:
      batch = probes.make_batch(kind, range(probe_examples), seed=0, split="validation",
                                seq_len=seq_len, **PROBE)
      exact = _eval(grid, params, batch, freqs)["exact"]
      for i, m in enumerate(members):
        res[m.name][kind] = exact[i].tolist()
    for name, r in res.items():
      out[name]["ablation"][band] = r
  timings["eval_s"] = time.perf_counter() - t

  t = time.perf_counter()
  runs_dir = os.path.join(workdir, "runs")
  for i, m in enumerate(members):
    row_key, seed = out[m.name]["row"], m.seed
    cfg = configs[row_key]
    cfg.train.seed = seed
    ev = {"step": steps, "split": "eval"}
    for c, loss in out[m.name]["loss"].items():
      ev.update({f"loss_len{c}": loss, f"perplexity_len{c}": float(np.exp(loss))})
    fused.write_run(os.path.join(runs_dir, row_key, f"s{seed}"), grid.member_state(state, i),
                    json.loads(cfg.to_json_best_effort()), records[m.name] + [ev])
  timings["write_s"] = time.perf_counter() - t

  results = cpu_report.summarise(rows, seeds, out, baselines, seq_len=seq_len, head_dim=head_dim,
                                 steps=steps, eval_tokens=eval_tokens,
                                 probe_examples=probe_examples)
  results["timings"] = timings
  results["settings"] = {"model": MODEL_OVERRIDES, "batch_rows": BATCH_ROWS, "probe": PROBE,
                         "train": config_lib.to_dict(configs[rows[0].key].train)}
  if figures:
    t = time.perf_counter()
    results["figures"] = cpu_report.plot(results, os.path.join(workdir, "figures"))
    from experiments import frequency_usage_compare  # pylint: disable=g-import-not-at-top
    results["figures"] += frequency_usage_compare.compare(  # Seed 0 of every row, as before.
        [os.path.join(runs_dir, r.key, "s0") for r in rows], os.path.join(workdir, "figures"))
    timings["figures_s"] = time.perf_counter() - t
  timings["total_s"] = time.perf_counter() - t0
  text = cpu_report.markdown(results)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(text)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  print(text)
  print(f"Runs (checkpoint + metrics.jsonl each): {runs_dir}/<row>/s<seed>")
  print(f"Total wall time: {timings['total_s']:.0f}s ({', '.join(f'{k} {v:.0f}' for k, v in timings.items() if k.endswith('_s'))})")
  return results


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.ERROR)
  workdir = os.path.abspath(_WORKDIR.value)
  os.makedirs(workdir, exist_ok=True)
  run(workdir, steps=_STEPS.value, seeds=_SEEDS.value, row_keys=_ROWS.value,
      seq_len=_SEQ_LEN.value, eval_tokens=_EVAL_TOKENS.value,
      probe_examples=_PROBE_EXAMPLES.value, figures=_FIGURES.value)


if __name__ == "__main__":
  app.run(main)
