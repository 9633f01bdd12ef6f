"""Input-pipeline throughput (tokens/s) against what a train step consumes.

Candidates, timed side by side in interleaved rounds (median per candidate) after a warm-up that
excludes one-off costs (building the corpus, TensorFlow start-up, tokenizing the offline corpus):

* ``offline`` train iterator (in-memory, packed) at the tiny job's shape and at a Gemma 2B host's
  shape (8 rows of 8192: a global batch of 512 over 64 hosts);
* ``wiki`` through its real streaming path (TFDS ``tfds.testing.mock_data`` serving the offline
  corpus's documents as articles, seqio SentencePiece tokenization in tf.data, packing in numpy),
  with the shipped 2048-piece vocabulary since Gemma's is not available offline;
* ``probe_recall`` (generated in numpy);
* the tiny model's train step, stood in for by a jitted forward + backward of a two-layer MLP with
  the same model FLOPs per token as ``configs/tiny.py`` (``rope_jax.training.flops``). A matmul-only
  stand-in runs faster than the real step, so the ratio it gives is a lower bound.

A Gemma 2B step consumes 512 x 8192 tokens; per host that is (chips per host) x (peak FLOP/s) x
MFU / (model FLOPs per token), computed here for TPU v5p at 50% MFU (an optimistic MFU, hence a
demanding figure). The pipeline's tokens/s come from this machine's shared CPU cores, a lower
bound for a TPU VM host (which has far more cores, and runs one pipeline per host).

    python -m benchmarks.data_throughput          # writes the "data_throughput" section
    python -m benchmarks.data_throughput --rounds=3 --write=false
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from benchmarks import report
from rope_jax.config import base as config_lib
from rope_jax.training import flops
import rope_jax.data as data
from rope_jax.data import offline_corpus

_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved timing rounds.")
_SECONDS = flags.DEFINE_float("seconds", 1.0, "Target seconds per candidate per round.")
_WRITE = flags.DEFINE_bool("write", True, "Write the section of BENCHMARKS.md.")

GEMMA_2B_BATCH, GEMMA_2B_LEN = 512, 8192
HOST_ROWS = 8  # a Gemma 2B host's share: 512 rows over 64 hosts
V5P_PEAK, V5P_CHIPS_PER_HOST, MFU = flops.PEAK_FLOPS["TPU v5p"], 4, 0.5


def _iterator(task: str, batch: int, seq_len: int) -> data.DataIterator:
  cfg = data.default_config()
  cfg.task = task
  if task == "wiki":
    cfg.vocab_path = offline_corpus.DEFAULT_VOCAB_PATH
  return data.make_iterator(cfg, split="train", global_batch_size=batch, seq_len=seq_len, seed=0,
                            process_index=0, process_count=1)


def _wiki_articles(builder, *args, **kwargs) -> tf.data.Dataset:
  """mock_data's dataset: the offline corpus's documents as Wikipedia articles."""
  del builder, args, kwargs
  docs = offline_corpus.documents()
  return tf.data.Dataset.from_tensor_slices({"title": [d.key for d in docs],
                                             "text": [d.text for d in docs]})


def _mlp_step(tokens: int, d: int, flops_per_token: float) -> Callable[[], None]:
  """A jitted forward + backward of x @ W1 @ W2 with 12·d·k = flops_per_token per token."""
  k = max(1, round(flops_per_token / (12 * d)))
  w = (jnp.ones((d, k), jnp.float32) * 1e-3, jnp.ones((k, d), jnp.float32) * 1e-3)
  x = jnp.ones((tokens, d), jnp.float32)

  @jax.jit
  def step(w, x):
    loss = lambda w: jnp.sum(jnp.tanh(x @ w[0]) @ w[1])
    return jax.grad(loss)(w)

  jax.block_until_ready(step(w, x))
  return lambda: jax.block_until_ready(step(w, x))


def _rate(fn: Callable[[], int], seconds: float) -> float:
  """Units per second of ``fn`` (which returns units done per call), run for ~``seconds``."""
  done, start = 0, time.perf_counter()
  while (elapsed := time.perf_counter() - start) < seconds:
    done += fn()
  return done / elapsed


def measure(rounds: int, seconds: float) -> tuple[dict[str, float], dict[str, float], float]:
  """Median tokens/s (row positions, B·L) of each candidate, the non-padding fraction of each,
  and the offline pipeline's start-up seconds (corpus + tokenization, once per process)."""
  tiny = config_lib.load_config("configs/tiny.py")
  b, l = tiny.train.global_batch_size, tiny.train.seq_len
  tiny_flops = flops.train_flops_per_token(config_lib.model_config(tiny), l)
  start = time.perf_counter()
  first = _iterator("offline", b, l)
  next(first)
  startup = time.perf_counter() - start
  iters = {
      f"offline {b}x{l} (tiny job)": first,
      f"offline {HOST_ROWS}x{GEMMA_2B_LEN} (Gemma 2B host)": _iterator("offline", HOST_ROWS,
                                                                        GEMMA_2B_LEN),
      f"probe_recall {b}x{l}": _iterator("probe_recall", b, l),
  }
  with tfds.testing.mock_data(as_dataset_fn=_wiki_articles):
    iters[f"wiki (mock TFDS, seqio) {HOST_ROWS}x{GEMMA_2B_LEN}"] = _iterator(
        "wiki", HOST_ROWS, GEMMA_2B_LEN)
    fill = {name: float(np.mean([(next(it)["segment_ids"] > 0).mean() for _ in range(3)]))
            for name, it in iters.items()}
    tiny_step = _mlp_step(b * l, config_lib.model_config(tiny).embed_dim, tiny_flops)
    candidates = {name: (lambda it=it: int(np.prod(next(it)["inputs"].shape)))
                  for name, it in iters.items()}
    candidates[f"tiny train step stand-in ({tiny_flops / 1e6:.1f} MFLOP/token)"] = (
        lambda: (tiny_step(), b * l)[1])
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
      for name, fn in candidates.items():
        samples[name].append(_rate(fn, seconds))
  return {name: statistics.median(s) for name, s in samples.items()}, fill, startup


def gemma_2b_host_demand() -> tuple[float, float]:
  """(model FLOPs per token, tokens/s one v5p host consumes at MFU) for Gemma 2B at L=8192."""
  cfg = config_lib.model_config(config_lib.load_config("configs/gemma_2b.py"))
  per_token = flops.train_flops_per_token(cfg, GEMMA_2B_LEN)
  return per_token, V5P_CHIPS_PER_HOST * V5P_PEAK * MFU / per_token


def markdown(rates: dict[str, float], fill: dict[str, float], startup: float, rounds: int) -> str:
  step_name = next(n for n in rates if n.startswith("tiny train step"))
  step_rate = rates[step_name]
  per_token, host_demand = gemma_2b_host_demand()
  rows = []
  for name, rate in rates.items():
    if name == step_name:
      continue
    rows.append([name, f"{fill[name]:.3f}", f"{rate / step_rate:,.0f}x",
                 f">= {rate / host_demand:,.1f}x"])
  table = report.markdown_table(
      ["pipeline (train split, rows x length)", "non-padding fraction",
       "tokens/s vs the tiny step (side by side)",
       "tokens/s vs a Gemma 2B v5p host's demand"], rows)
  return (
      "## Input pipeline throughput (`benchmarks/data_throughput.py`)\n\n"
      f"{report.machine_line()}\n\n"
      f"Median of {rounds} interleaved rounds, steady state (one-off start-up excluded). Tokens "
      "are row positions (B x L) per second, what a train step consumes.\n\n"
      f"{table}\n"
      f"* Tiny step: `{step_name}`, a jitted forward + backward of an MLP with the tiny model's "
      "model FLOPs per token, timed in the same rounds as the pipelines. A real step also pays "
      "for attention and softmax, so it is slower and the ratios are lower bounds.\n"
      f"* Gemma 2B: {GEMMA_2B_BATCH} x {GEMMA_2B_LEN} = {GEMMA_2B_BATCH * GEMMA_2B_LEN:,} tokens "
      f"per step, {per_token / 1e9:.1f} GFLOP per token; one TPU v5p host "
      f"({V5P_CHIPS_PER_HOST} chips x {V5P_PEAK / 1e12:.0f} TFLOP/s bf16 at {MFU:.0%} MFU) "
      f"consumes {host_demand:,.0f} tokens/s (an estimate from FLOPs, not a measurement). Each "
      "host runs its own pipeline on its own shard, so per-host rates compare; the pipeline ran "
      "on this machine's 2 shared CPU cores, far fewer than a TPU VM host has, hence >=.\n"
      "* `wiki` is the real streaming path (TFDS reader under `mock_data`, seqio tokenization, "
      "numpy packing) over real text, with the 2048-piece offline vocabulary in place of "
      "Gemma's; `offline` tokenizes once at start-up, so its steady state is packing and "
      f"batching only. That start-up (building the corpus from the standard library and "
      f"tokenizing it through its seqio Task) took {startup:.1f} s here, once per process.\n\n"
      "Regenerate: `python -m benchmarks.data_throughput`.\n")


def main(argv: list[str]) -> None:
  del argv
  rates, fill, startup = measure(_ROUNDS.value, _SECONDS.value)
  body = markdown(rates, fill, startup, _ROUNDS.value)
  print(body)
  if _WRITE.value:
    report.write_section("data_throughput", body)


if __name__ == "__main__":
  app.run(main)
