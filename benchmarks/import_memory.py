"""Peak host memory of a streamed Gemma import, as a multiple of one copy of the params.

Writes a synthetic Hugging Face-layout Gemma checkpoint of a few GB to a temporary directory
(tensor by tensor, deleted afterwards), then imports it in fresh subprocesses and reads each
one's peak resident set size (``ru_maxrss``, which counts memory-mapped file pages too):

* ``streamed``: ``rope_jax.weights.gemma.import_params``, one tensor at a time.
* ``streamed + save``: the same, then the rope_jax Orbax checkpoint is written (the CLI).
* ``read all, then build``: every tensor read into host memory first, then placed; what a
  loader that materialises the state dict before converting it costs (the contrast).

The ratio is ``(peak RSS - RSS before loading) / params bytes``; 1.0 is one copy. On the CPU
backend the params themselves live in host memory, so they are part of the peak.

    python -m benchmarks.import_memory                 # ~2.2 GB float32, writes BENCHMARKS.md
    python -m benchmarks.import_memory --num_layers=4 --write=false
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags
import numpy as np

from benchmarks import report

_LAYERS = flags.DEFINE_integer("num_layers", 8, "Layers of the synthetic Gemma-shaped model.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "dtype of the checkpoint and of the params.")
_WRITE = flags.DEFINE_bool("write", True, "Write the section of BENCHMARKS.md.")
_WORKER = flags.DEFINE_string("worker", None, "Internal: run one measurement (mode) and exit.")
_SRC = flags.DEFINE_string("src", None, "Internal: checkpoint directory for --worker.")

# Gemma-2B-like widths (MQA, head_dim 256) with a smaller vocabulary and depth.
SIZES = dict(vocab_size=32_000, embed_dim=2048, num_heads=8, num_kv_heads=1, head_dim=256,
             mlp_dim=8192)
MODES = ("streamed", "streamed + save", "read all, then build")


def _rss_mib() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  return float("nan")


def _peak_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux.


def write_checkpoint(directory: str, num_layers: int, dtype: str) -> int:
  """A random HF-layout Gemma checkpoint (one tensor in memory at a time); returns its bytes."""
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  from rope_jax.weights import gemma  # pylint: disable=g-import-not-at-top
  from rope_jax.weights import safetensors_io  # pylint: disable=g-import-not-at-top
  from rope_jax.model import transformer as model_lib  # pylint: disable=g-import-not-at-top

  cfg = model_lib.ModelConfig(num_layers=num_layers, **SIZES)
  np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(np.float32)
  specs = {src.key: (src.shape, np_dtype) for src in gemma.hf_plan(cfg, cfg.vocab_size)}
  rng = np.random.default_rng(0)
  safetensors_io.save_file_streamed(
      os.path.join(directory, "model.safetensors"), specs,
      lambda name: rng.standard_normal(specs[name][0], np.float32).astype(np_dtype))
  hf_config = dict(model_type="gemma", vocab_size=cfg.vocab_size, hidden_size=cfg.embed_dim,
                   num_hidden_layers=num_layers, num_attention_heads=cfg.num_heads,
                   num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
                   intermediate_size=cfg.mlp_dim, rms_norm_eps=1e-6, rope_theta=10_000.0,
                   hidden_act="gelu", torch_dtype=dtype)
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(hf_config, f)
  return sum(int(np.prod(s)) * np_dtype.itemsize for s, _ in specs.values())


def worker(mode: str, src: str, dtype: str) -> dict[str, float]:
  """One measurement in this (fresh) process."""
  import jax  # pylint: disable=g-import-not-at-top
  from rope_jax.model import transformer as model_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.checkpoint import rundir  # pylint: disable=g-import-not-at-top
  from rope_jax.weights import gemma  # pylint: disable=g-import-not-at-top
  from rope_jax.weights import safetensors_io  # pylint: disable=g-import-not-at-top

  fields = gemma.infer_model_fields(src)
  fields.pop("rope")
  cfg = model_lib.ModelConfig(**fields, param_dtype=dtype)
  jax.block_until_ready(jax.numpy.zeros(8))  # Backend up before the baseline.
  before = _rss_mib()
  start = time.perf_counter()
  if mode == "read all, then build":
    reader = safetensors_io.SafetensorsReader(src)
    everything = {k: np.array(reader.read(k)) for k in reader.keys()}  # The state dict.
    reader.read = everything.__getitem__  # Build from the in-memory copy.
    _, plan = gemma.build_plan(src, cfg)
    params = gemma.load_plan(reader, plan, cfg)
  else:
    params = gemma.import_params(src, cfg)
  jax.block_until_ready(params)
  seconds = time.perf_counter() - start
  if mode == "streamed + save":
    with tempfile.TemporaryDirectory() as out:
      rundir.save_params(out, params, {"model": fields}, metadata={"import": {}})
  params_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
  return dict(before_mib=before, peak_mib=_peak_mib(), params_mib=params_bytes / 2**20,
              seconds=seconds)


def main(argv: list[str]) -> None:
  del argv
  if _WORKER.value:
    print(json.dumps(worker(_WORKER.value, _SRC.value, _DTYPE.value)))
    return
  tmp = tempfile.mkdtemp(prefix="rope_jax_import_memory_")
  try:
    start = time.perf_counter()
    file_bytes = write_checkpoint(tmp, _LAYERS.value, _DTYPE.value)
    print(f"wrote {file_bytes / 2**30:.2f} GiB synthetic checkpoint in "
          f"{time.perf_counter() - start:.0f} s")
    results = {}
    for mode in MODES:
      out = subprocess.run(
          [sys.executable, "-m", "benchmarks.import_memory", f"--worker={mode}", f"--src={tmp}",
           f"--dtype={_DTYPE.value}"],
          capture_output=True, text=True, check=False,
          env=dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3"))
      if out.returncode:
        raise RuntimeError(f"worker {mode!r} failed:\n{out.stderr[-3000:]}")
      results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
      r = results[mode]
      print(f"{mode}: params {r['params_mib']:.0f} MiB, RSS before {r['before_mib']:.0f} MiB, "
            f"peak {r['peak_mib']:.0f} MiB, ratio "
            f"{(r['peak_mib'] - r['before_mib']) / r['params_mib']:.2f}")
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  if _WRITE.value:
    _write_report(results, file_bytes)


def _write_report(results: dict[str, dict[str, float]], file_bytes: int) -> None:
  params = results["streamed"]["params_mib"]
  rows = []
  for mode, r in results.items():
    ratio = (r["peak_mib"] - r["before_mib"]) / r["params_mib"]
    rows.append([mode, f"{r['peak_mib'] - r['before_mib']:,.0f}", f"**{ratio:.2f}**"])
  body = (
      "## Streamed Gemma import: peak host memory (`benchmarks/import_memory.py`)\n\n"
      f"{report.machine_line()}\n\n"
      f"Synthetic Hugging Face-layout Gemma checkpoint ({_LAYERS.value} layers, d_model "
      f"{SIZES['embed_dim']}, MQA, head_dim {SIZES['head_dim']}, MLP {SIZES['mlp_dim']}, vocab "
      f"{SIZES['vocab_size']:,}; {_DTYPE.value}), {file_bytes / 2**30:.2f} GiB on disk, imported "
      f"into {_DTYPE.value} params of {params:,.0f} MiB. Peak RSS (`ru_maxrss`, memory-mapped "
      "file pages included) of a fresh process, minus its RSS before loading, as a multiple of "
      "one copy of the params (1.00 = one copy; on the CPU backend the params are host "
      "memory).\n\n"
      + report.markdown_table(["loader", "peak RSS above baseline (MiB)",
                               "x one copy of the params"], rows)
      + "\n* `streamed` is `rope_jax.weights.gemma.import_params`: each tensor is memory-mapped, "
      "converted and placed, then dropped; the excess over 1.00 is about the largest tensor "
      f"(the embedding table, {SIZES['vocab_size'] * SIZES['embed_dim'] * 4 / 2**20:,.0f} MiB "
      "in float32) in flight.\n"
      "* `streamed + save` adds writing the rope_jax Orbax checkpoint through "
      "`rope_jax.checkpoint.manager`, as `python -m rope_jax.import_gemma` does: about one more copy, "
      "Orbax's device-to-host copy of the params (on the CPU backend the device is the host). "
      "The save-time integrity fingerprints are computed one leaf at a time, so they add at most "
      "the largest leaf's temporaries (an earlier version hashed all leaves in one jit and "
      "peaked at 3.06 copies here).\n"
      "* `read all, then build` materialises every tensor first (a state-dict loader), the "
      "two-copies baseline.\n\n"
      "Regenerate: `python -m benchmarks.import_memory`.\n")
  report.write_section("import_memory", body)
  print(f"wrote the import_memory section of {report.BENCHMARKS_MD}")


if __name__ == "__main__":
  app.run(main)
