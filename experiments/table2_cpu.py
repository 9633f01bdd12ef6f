r"""The paper's Table 2 at CPU scale, in the paper's regime, with seeds and CIs: the main job.

    python -m experiments.table2_cpu --workdir=runs/table2_cpu

What it does (``README.md``, results section, says what it shows):

1. **Regime** (``rope_jax.sweeps.regime``): θ is scaled with the training length L so that the
   fastest frequency 0.75-RoPE removes turns 8.2 rad over the context, as in the paper
   (H = 256, θ = 10k, L = 8k). The seven Table 2 rows use that θ; RoPE and 0.75-RoPE at the
   paper's θ = 10k are control rows. A table of rotations per row is printed first.
2. **Two grids, each one compiled program** (``rope_jax.training.fused``): rows × seeds train
   together under ``jax.vmap`` on shared batches (seeds differ in the init). The
   language-modelling grid (NoPE, RoPE, 0.75-RoPE by default) trains on random windows of the
   offline corpus's train split; the probe grid (RoPE, reversed, 0.75-RoPE and the θ = 10k
   controls) on ``copy`` (positional) and ``recall`` (semantic: associative recall at any
   distance) with a 64-token vocabulary, a fraction of the LM grid's cost per step. Fewer rows
   per claim, more steps each: our trade (README).
3. **Evaluation**, all on the same tokens for every member: held-out perplexity of one fixed
   validation stream scored with contexts L, 2L, 4L (``rope_jax.data.heldout.windows``: the same
   targets at every length); unigram / bigram count baselines on those targets; probe exact
   match of the whole answer at 1×, 2×, 4× on fixed validation examples; band ablation at L
   (the fastest or the slowest quarter of a member's rotating pairs made identity).
4. **Statistics and claims** (``rope_jax.sweeps.cpu_report``): perplexity as mean ± 95%
   t-interval over seeds, probe exact match pooled over seeds with a Wilson interval, paired
   differences against RoPE at the scaled θ, a claims ledger with verdicts (a probe claim needs
   RoPE to have learned the probe to 90%), ``results.md`` / ``results.json`` and PNG figures in
   the workdir; every member is an ordinary run directory
   (``<workdir>/runs/<lm|probe>/<row>/s<seed>``: checkpoint + ``metrics.jsonl``) that
   ``rope_jax.analyze`` and ``rope_jax.results`` read.

The default budget (``DEFAULT_BUDGET``) is sized for <= 10 minutes on an idle 2-core machine and
says what it does not reach; ``--full`` (``FULL_BUDGET``) trains long enough for the language
models to beat the bigram baseline and for RoPE to learn both probes.
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
_FULL = flags.DEFINE_bool("full", False, "The longer version (FULL_STEPS; README: its wall "
                          "time and what it reaches).")
_LM_STEPS = flags.DEFINE_integer("lm_steps", None, "Steps of every language-modelling member.")
_PROBE_STEPS = flags.DEFINE_integer("probe_steps", None, "Steps of every probe member.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds (init keys) per row; >= 3 for intervals.")
_LM_ROWS = flags.DEFINE_list("lm_rows", list(regime.LM_ROWS), "Rows of the LM grid.")
_PROBE_ROWS = flags.DEFINE_list("probe_rows", list(regime.PROBE_ROWS), "Rows of the probe grid.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 64, "Training length L.")
_EVAL_TOKENS = flags.DEFINE_integer("eval_tokens", None, "Held-out targets scored per length "
                                    "(default 4,096; 8,192 with --full).")
_PROBE_EXAMPLES = flags.DEFINE_integer("probe_examples", None, "Probe examples per member per "
                                       "length (default 200; 400 with --full).")
_FIGURES = flags.DEFINE_bool("figures", True, "Write the PNG figures.")

# (LM steps, probe steps, held-out targets, probe examples): the default fits <= 10 minutes on
# an idle 2-core machine; --full trains until the LM rows near or beat the bigram baseline and
# RoPE learns both probes (README: its wall time and what it reached).
DEFAULT_BUDGET, FULL_BUDGET = (60, 150, 4096, 200), (500, 1800, 8192, 400)
PROBES = ("copy", "recall")
LENGTH_MULTIPLIERS = regime.LENGTH_MULTIPLIERS
EVAL_CHUNK_TOKENS = 4096  # Rows per eval call = this / context (bounds the [M, B, L, V] logits).
TRAIN_DATA_SEED = 0


def _documents(split: str) -> list[np.ndarray]:
  """The offline corpus split, tokenized with the shipped vocabulary (eos appended)."""
  from rope_jax.data import offline_corpus  # pylint: disable=g-import-not-at-top
  from rope_jax.data import packing  # pylint: disable=g-import-not-at-top
  from rope_jax.data import text  # pylint: disable=g-import-not-at-top
  sp = text.load_tokenizer()
  return [np.asarray(sp.encode(t) + [packing.EOS_ID], np.int32)
          for t in offline_corpus.split_texts(split)]


def _lm_batch(step: int, stream: np.ndarray, seq_len: int) -> dict[str, np.ndarray]:
  """Step ``step``'s shared LM batch: random windows of the train stream, ``[B, L]`` arrays."""
  rng = np.random.default_rng([TRAIN_DATA_SEED, step])
  n = regime.LM_BATCH
  starts = rng.integers(0, stream.shape[0] - seq_len - 1, size=n)
  seqs = stream[starts[:, None] + np.arange(seq_len + 1)]
  return {"inputs": seqs[:, :-1], "targets": seqs[:, 1:],
          "weights": np.ones((n, seq_len), np.float32),
          "segment_ids": np.ones((n, seq_len), np.int32),
          "positions": np.broadcast_to(np.arange(seq_len), (n, seq_len))}


def _probe_batch(step: int, seq_len: int) -> dict[str, np.ndarray]:
  """Step ``step``'s shared probe batch: copy rows, then recall rows (train split)."""
  from rope_jax.data import probes  # pylint: disable=g-import-not-at-top
  parts = [probes.make_batch(kind, range(step * k, (step + 1) * k), seed=TRAIN_DATA_SEED,
                             split="train", seq_len=seq_len, **regime.PROBE)
           for kind, k in regime.PROBE_BATCH.items()]
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


def _select(rows, keys, what: str):
  known = {r.key for r in rows}
  bad = sorted(set(keys) - known)
  if bad:
    raise ValueError(f"Unknown {what} row(s) {bad}; known: {sorted(known)}.")
  if "rope" not in keys:
    raise ValueError(f"The {what} rows must include 'rope' (the reference of every paired "
                     "difference).")
  return tuple(r for r in rows if r.key in keys)


def _train(name: str, rows, seeds: int, configs: dict, steps: int, batch_fn, timings: dict):
  """Trains one fused grid (rows × seeds); returns (grid, state, per-member train records)."""
  import jax  # pylint: disable=g-import-not-at-top
  from rope_jax.config import base as config_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.training import fused  # pylint: disable=g-import-not-at-top
  from rope_jax.training import train_lib  # pylint: disable=g-import-not-at-top
  cfg = configs[rows[0].key]
  model_cfg = config_lib.model_config(cfg)
  train_cfg = train_lib.TrainConfig.from_dict(config_lib.to_dict(cfg.train))
  members = [fused.Member(f"{r.key}-s{s}", r.rope, s) for r in rows for s in range(seeds)]
  grid = fused.FusedGrid(model_cfg, train_cfg, members)
  t = time.perf_counter()
  state = grid.init()
  records = {m.name: [] for m in members}
  t_train = t
  for step in range(steps):
    state, metrics = grid.step(state, batch_fn(step))
    if step == 0:
      jax.block_until_ready(metrics)
      timings[f"{name}_compile_s"] = time.perf_counter() - t
      t_train = time.perf_counter()
    if (step + 1) % train_cfg.log_every_steps == 0 or step + 1 == steps:
      host = jax.device_get(metrics)
      for i, m in enumerate(members):
        records[m.name].append({"step": step + 1, "split": "train",
                                **{k: float(v[i]) for k, v in host.items()}})
      print(f"{name} step {step + 1}/{steps} | loss over {len(members)} members: mean "
            f"{host['loss'].mean():.3f} min {host['loss'].min():.3f} "
            f"max {host['loss'].max():.3f} | {time.perf_counter() - t:.0f}s", flush=True)
  jax.block_until_ready(state)
  timings[f"{name}_train_s"] = time.perf_counter() - t_train
  timings[f"{name}_member_tokens_per_second"] = (
      len(members) * max(steps - 1, 1) * train_cfg.global_batch_size * cfg.train.seq_len
      / max(timings[f"{name}_train_s"], 1e-9))
  return grid, state, records


def _row_of(member_name: str) -> str:
  return member_name.rsplit("-s", 1)[0]


def _lm_eval(grid, params, val_stream, eval_tokens: int, seq_len: int, out: dict) -> None:
  """Held-out loss at L, 2L, 4L on the same targets, and at L with each band ablated."""
  from rope_jax.data import heldout  # pylint: disable=g-import-not-at-top

  windows = {seq_len * m: heldout.windows(val_stream, eval_tokens, seq_len * m)
             for m in LENGTH_MULTIPLIERS}

  def losses(context, freqs=None):
    sums = _eval(grid, params, windows[context], freqs)
    return sums["loss_sum"].sum(1) / sums["weight_sum"].sum(1)

  for c in windows:
    per_member = losses(c)
    for i, m in enumerate(grid.members):
      out[m.name]["loss"][c] = float(per_member[i])
  for band in ("high", "low"):
    lb = losses(seq_len, _band_freqs(np.asarray(grid.freqs), band))
    for i, m in enumerate(grid.members):
      out[m.name]["ablation"].setdefault(band, {})["loss"] = float(lb[i])


def _probe_eval(grid, params, examples: int, seq_len: int, out: dict) -> None:
  """Whole-answer exact match at L, 2L, 4L on fixed validation examples; at L per ablated band."""
  from rope_jax.data import probes  # pylint: disable=g-import-not-at-top
  ablated = {band: _band_freqs(np.asarray(grid.freqs), band) for band in ("high", "low")}
  for kind in PROBES:
    for mult in LENGTH_MULTIPLIERS:
      c = seq_len * mult
      batch = probes.make_batch(kind, range(examples), seed=0, split="validation",
                                seq_len=c, **regime.PROBE)
      exact = _eval(grid, params, batch)["exact"]
      for i, m in enumerate(grid.members):
        out[m.name]["probes"].setdefault(kind, {})[c] = exact[i].tolist()
      if mult != 1:
        continue
      for band, freqs in ablated.items():
        exact = _eval(grid, params, batch, freqs)["exact"]
        for i, m in enumerate(grid.members):
          out[m.name]["ablation"].setdefault(band, {})[kind] = exact[i].tolist()


def _write_runs(grid_name: str, grid, state, configs, records, out, workdir, steps) -> str:
  """Every member as an ordinary run: ``<workdir>/runs/<grid>/<row>/s<seed>``."""
  from rope_jax.training import fused  # pylint: disable=g-import-not-at-top
  runs_dir = os.path.join(workdir, "runs", grid_name)
  for i, m in enumerate(grid.members):
    cfg = configs[_row_of(m.name)]
    cfg.train.seed = m.seed
    ev = {"step": steps, "split": "eval"}
    for c, loss in out[m.name]["loss"].items():
      ev.update({f"loss_len{c}": loss, f"perplexity_len{c}": float(np.exp(loss))})
    for kind, per_len in out[m.name]["probes"].items():
      ev.update({f"{kind}_exact_len{c}": float(np.mean(v)) for c, v in per_len.items()})
    fused.write_run(os.path.join(runs_dir, _row_of(m.name), f"s{m.seed}"),
                    grid.member_state(state, i), json.loads(cfg.to_json_best_effort()),
                    records[m.name] + [ev])
  return runs_dir


def run(workdir: str, *, lm_steps: int, probe_steps: int, seeds: int, lm_rows, probe_rows,
        seq_len: int, eval_tokens: int, probe_examples: int, figures: bool) -> dict:
  """Trains both grids, evaluates and reports; returns the results dict (also results.json)."""
  from rope_jax.config import base as config_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.data import heldout  # pylint: disable=g-import-not-at-top
  from rope_jax.sweeps import cpu_report  # pylint: disable=g-import-not-at-top

  t0 = time.perf_counter()
  timings = {}
  all_rows = regime.cpu_rows(seq_len)
  lm = _select(all_rows, lm_rows, "LM")
  pr = _select(all_rows, probe_rows, "probe")
  if seeds < 1 or lm_steps < 1 or probe_steps < 1:
    raise ValueError(f"Need --seeds, --lm_steps and --probe_steps >= 1, got {seeds}, "
                     f"{lm_steps} and {probe_steps}.")
  rows = tuple(r for r in all_rows if r in lm or r in pr)
  lm_cfgs = regime.member_configs(lm, seq_len, lm_steps, "lm")
  pr_cfgs = regime.member_configs(pr, seq_len, probe_steps, "probe")
  head_dim = regime.MODEL_OVERRIDES["head_dim"]
  print(cpu_report.regime_table(rows, head_dim, seq_len), flush=True)

  train_stream = heldout.token_stream(_documents("train"))
  val_stream = heldout.token_stream(_documents("validation"))
  flat = heldout.windows(val_stream, eval_tokens, seq_len)
  vocab = config_lib.model_config(lm_cfgs[lm[0].key]).vocab_size
  base_losses = heldout.ngram_losses(train_stream, flat["inputs"].ravel(),
                                     flat["targets"].ravel(), vocab)
  baselines = {k: float(np.exp(v.mean())) for k, v in base_losses.items()}
  timings["data_s"] = time.perf_counter() - t0
  print(f"Data: {train_stream.size:,} train / {val_stream.size:,} held-out tokens; baselines on "
        f"the {eval_tokens:,} evaluation targets: unigram ppl {baselines['unigram']:.2f}, "
        f"bigram ppl {baselines['bigram']:.2f}.", flush=True)

  out = {f"{r.key}-s{s}": {"row": r.key, "seed": s, "loss": {}, "probes": {}, "ablation": {}}
         for r in rows for s in range(seeds)}
  runs = {}
  for name, grid_rows, cfgs, steps, batch_fn in (
      ("lm", lm, lm_cfgs, lm_steps, lambda i: _lm_batch(i, train_stream, seq_len)),
      ("probe", pr, pr_cfgs, probe_steps, lambda i: _probe_batch(i, seq_len))):
    grid, state, records = _train(name, grid_rows, seeds, cfgs, steps, batch_fn, timings)
    t = time.perf_counter()
    if name == "lm":
      _lm_eval(grid, state["params"], val_stream, eval_tokens, seq_len, out)
    else:
      _probe_eval(grid, state["params"], probe_examples, seq_len, out)
    timings[f"{name}_eval_s"] = time.perf_counter() - t
    runs[name] = _write_runs(name, grid, state, cfgs, records, out, workdir, steps)
    del grid, state

  results = cpu_report.summarise(rows, seeds, out, baselines, seq_len=seq_len, head_dim=head_dim,
                                 steps={"lm": lm_steps, "probe": probe_steps},
                                 eval_tokens=eval_tokens, probe_examples=probe_examples)
  results["timings"] = timings
  results["settings"] = {
      "model": regime.MODEL_OVERRIDES, "probe_vocab_size": regime.PROBE_VOCAB_SIZE,
      "lm_batch": regime.LM_BATCH, "probe_batch": regime.PROBE_BATCH, "probe": regime.PROBE,
      "train": {g: config_lib.to_dict(c[r[0].key].train)
                for g, c, r in (("lm", lm_cfgs, lm), ("probe", pr_cfgs, pr))}}
  if figures:
    t = time.perf_counter()
    fig_dir = os.path.join(workdir, "figures")
    results["figures"] = cpu_report.plot(results, fig_dir)
    from experiments import frequency_usage_compare  # pylint: disable=g-import-not-at-top
    results["figures"] += frequency_usage_compare.compare(  # Seed 0 of every LM row.
        [os.path.join(runs["lm"], r.key, "s0") for r in lm], fig_dir)
    timings["figures_s"] = time.perf_counter() - t
  timings["total_s"] = time.perf_counter() - t0
  text = cpu_report.markdown(results)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(text)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  print(text)
  print(f"Runs (checkpoint + metrics.jsonl each): {workdir}/runs/{{lm,probe}}/<row>/s<seed>")
  print(f"Total wall time: {timings['total_s']:.0f}s ("
        + ", ".join(f"{k[:-2]} {v:.0f}" for k, v in timings.items() if k.endswith("_s")) + ")")
  return results


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.ERROR)
  workdir = os.path.abspath(_WORKDIR.value)
  os.makedirs(workdir, exist_ok=True)
  lm_steps, probe_steps, eval_tokens, examples = FULL_BUDGET if _FULL.value else DEFAULT_BUDGET
  run(workdir, lm_steps=_LM_STEPS.value or lm_steps,
      probe_steps=_PROBE_STEPS.value or probe_steps, seeds=_SEEDS.value,
      lm_rows=_LM_ROWS.value, probe_rows=_PROBE_ROWS.value, seq_len=_SEQ_LEN.value,
      eval_tokens=_EVAL_TOKENS.value or eval_tokens,
      probe_examples=_PROBE_EXAMPLES.value or examples, figures=_FIGURES.value)


if __name__ == "__main__":
  app.run(main)
