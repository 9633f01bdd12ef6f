r"""Train-step throughput and MFU; writes the ``train_step`` section of BENCHMARKS.md.

    JAX_PLATFORMS=cpu python benchmarks/train_step.py                 # CPU: tiny + small_100m
    python benchmarks/train_step.py --configs=gemma_2b --batch=1 --dtype=bfloat16 \
        --attention=dot_product --remat=dots_no_batch --seq_lens=2048,4096,8192,16384,32768
                                                   # GPU: Gemma-2B step, longest context that fits
    JAX_PLATFORMS=cpu python benchmarks/train_step.py --aot          # gemma_2b AOT on v5p:4x4x4

Measures the compiled ``train_lib`` train step (the one ``rope_jax.train`` runs; the batch is
fixed, so the input pipeline is not timed): tokens/s and MFU = model FLOPs (6·N + causal
attention, ``rope_jax.training.flops``) per second over the peak. On CPU the peak is a float32 matmul
rate measured in the same process just before and just after the timed steps (the larger of
the two is used), so MFU is a ratio measured side by side on the shared machine; on an
accelerator it is the dense bf16 peak from ``rope_jax.training.flops.PEAK_FLOPS``.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import report  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_list("configs", ["tiny", "small_100m"], "Config names under configs/.")
flags.DEFINE_list("seq_lens", [], "Sequence lengths to sweep (ascending; stops at the first "
                  "that does not fit). Default: tiny 128, small_100m 256.")
flags.DEFINE_integer("batch", 0, "Global batch size (0: tiny 8, small_100m 4, else 1).")
flags.DEFINE_integer("steps", 3, "Timed steps (after 2 warm-up steps).")
flags.DEFINE_string("dtype", "", "Compute dtype override (float32 / bfloat16).")
flags.DEFINE_string("attention", "", "model.attention_impl override.")
flags.DEFINE_string("remat", "", "model.remat override.")
flags.DEFINE_bool("aot", False, "Instead: AOT-compile gemma_2b for v5p:4x4x4 (FSDP 64) and "
                  "write the aot_gemma_2b section.")
flags.DEFINE_bool("write", True, "Write BENCHMARKS.md.")

DEFAULTS = {"tiny": (8, [128]), "small_100m": (4, [256])}


def _config(name: str, batch: int, seq_len: int):
  from rope_jax.config import base as config_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.load_config(f"configs/{name}.py")
  c.train.data_source = "synthetic"
  c.train.global_batch_size = batch
  c.train.seq_len = seq_len
  c.train.warmup_steps = 1
  if FLAGS.dtype:
    c.model.dtype = FLAGS.dtype
  if FLAGS.attention:
    c.model.attention_impl = FLAGS.attention
  if FLAGS.remat:
    c.model.remat = FLAGS.remat
  return c


def measure(name: str, batch: int, seq_len: int, steps: int) -> dict[str, object] | None:
  """Times ``steps`` train steps; None if the step does not fit in device memory."""
  import jax  # pylint: disable=g-import-not-at-top
  from rope_jax.config import base as config_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.training import flops  # pylint: disable=g-import-not-at-top
  from rope_jax.data import synthetic as synthetic_data  # pylint: disable=g-import-not-at-top
  from rope_jax.training import train_lib  # pylint: disable=g-import-not-at-top
  sections = config_lib.validate(_config(name, batch, seq_len))
  model_cfg = sections["model"]
  setup = train_lib.make_setup(model_cfg, sections["train"], sections["mesh"])
  try:
    step = setup.compile_train_step()
    state = setup.init()
    src = synthetic_data.SyntheticSource(vocab_size=model_cfg.vocab_size, split="train",
                                         global_batch_size=batch, seq_len=seq_len, seed=0)
    batch_arrays = train_lib.to_global(setup, next(src), batch)
    for _ in range(2):
      state, m = step(state, batch_arrays)
    jax.block_until_ready(m)
    devices = list(setup.mesh.devices.flat)
    on_cpu = devices[0].platform == "cpu"
    peak_before = flops.measured_matmul_flops.__wrapped__(2048) if on_cpu else None
    t = time.perf_counter()
    for _ in range(steps):
      state, m = step(state, batch_arrays)
    jax.block_until_ready((state, m))
    dt = (time.perf_counter() - t) / steps
    if on_cpu:
      peak = max(peak_before, flops.measured_matmul_flops.__wrapped__(2048))
      source = "measured f32 matmul (2048²)"
    else:
      peak, source = flops.resolve_peak(devices)
  except Exception as e:  # pylint: disable=broad-except
    if "RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e).lower():
      return None
    raise
  step_flops = flops.train_flops_per_step(model_cfg, batch, seq_len)
  mem = train_lib.memory_report(step)
  n_params = sum(x.size for x in jax.tree.leaves(setup.abstract_state["params"]))
  return {
      "config": name, "params": f"{n_params / 1e6:.1f}M", "dtype": model_cfg.dtype,
      "attention": model_cfg.attention_impl, "remat": model_cfg.remat,
      "batch x len": f"{batch} x {seq_len}", "step_s": dt,
      "tokens_per_s": batch * seq_len / dt, "model_tflop_per_step": step_flops / 1e12,
      "achieved_gflops": step_flops / dt / 1e9, "peak_gflops": peak / 1e9,
      "peak_source": source, "mfu": step_flops / dt / peak,
      "mem_gib": mem.get("total", float("nan")) / 2**30,
      "device": f"{devices[0].device_kind} x{len(devices)}",
      "loss": float(m["loss"]),
  }


def run_benchmarks() -> list[dict[str, object]]:
  rows = []
  for name in FLAGS.configs:
    batch, lens = DEFAULTS.get(name, (1, [2048]))
    batch = FLAGS.batch or batch
    lens = [int(x) for x in FLAGS.seq_lens] or lens
    for seq_len in lens:
      row = measure(name, batch, seq_len, FLAGS.steps)
      if row is None:
        print(f"{name}: L={seq_len} does not fit; stopping the sweep.", flush=True)
        break
      print(row, flush=True)
      rows.append(row)
  return rows


def _body(rows: list[dict[str, object]]) -> str:
  header = ["config", "params", "dtype", "attention", "batch x len", "step (s)", "tokens/s",
            "model TFLOP/step", "achieved GFLOP/s", "peak GFLOP/s", "MFU"]
  table = [[r["config"], r["params"], r["dtype"], r["attention"], r["batch x len"],
            f"{r['step_s']:.3f}", f"{r['tokens_per_s']:,.0f}",
            f"{r['model_tflop_per_step']:.4f}", f"{r['achieved_gflops']:.1f}",
            f"{r['peak_gflops']:.1f}", f"{100 * r['mfu']:.1f}%"] for r in rows]
  on_cpu = all("cpu" in str(r["device"]).lower() for r in rows)
  text = ["## Train step: tokens/s and MFU", "",
          "`JAX_PLATFORMS=cpu python benchmarks/train_step.py` (section rewritten by the "
          "script).", "", report.machine_line(), "",
          report.markdown_table(header, table)]
  text.append(
      "MFU = model FLOPs (6·N_matmul + causal attention, `rope_jax.training.flops`; remat not counted) "
      "per second over the peak. "
      + ("The peak is a float32 2048² matmul measured in the same process just before and "
         "after the timed steps (the larger is used), so the MFU column is a ratio measured "
         "side by side on this shared CPU; absolute step times on a shared CPU are only "
         "indicative." if on_cpu else "The peak is the device's dense bf16 peak."))
  text += ["", "**GPU.** There is no GPU in this task, so the Gemma-2B-shaped step at the "
           "longest context that fits (goal: ≥ 45% MFU in bf16 on one H100) was not measured. "
           "Command, on a GPU host: `python benchmarks/train_step.py --configs=gemma_2b "
           "--batch=1 --dtype=bfloat16 --attention=dot_product --remat=dots_no_batch "
           "--seq_lens=2048,4096,8192,16384,32768` (it sweeps the lengths and stops at the "
           "first that does not fit). Note: `dot_product` currently passes an explicit "
           "packing mask, which makes `jax.nn.dot_product_attention` use its XLA path, not "
           "cuDNN flash attention (see the report)."]
  return "\n".join(text)


def run_aot() -> str:
  from rope_jax.training import aot_compile as aot
  from rope_jax.config import base as config_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.load_config("configs/gemma_2b.py")
  c.mesh.data, c.mesh.fsdp = 1, -1
  c.train.global_batch_size, c.train.seq_len = 256, 2048
  c.model.dtype, c.model.attention_impl, c.model.remat = "bfloat16", "splash", "full"
  t = time.perf_counter()
  rep = aot.compile_for_topology(c, "v5p:4x4x4")
  minutes = (time.perf_counter() - t) / 60
  return "\n".join([
      "## AOT: Gemma 2B train step on TPU v5p:4x4x4 (compiled on this CPU host)", "",
      "`JAX_PLATFORMS=cpu python benchmarks/train_step.py --aot` = `python -m rope_jax.aot "
      "--config=configs/gemma_2b.py --topology=v5p:4x4x4 --config.mesh.data=1 "
      "--config.mesh.fsdp=-1 --config.train.global_batch_size=256 "
      "--config.train.seq_len=2048 --config.model.dtype=bfloat16 "
      "--config.model.attention_impl=splash --config.model.remat=full`", "",
      report.machine_line() + f" · compile {minutes:.1f} min", "",
      "```", rep.summary(), "```"])


def main(argv):
  del argv
  if FLAGS.aot:
    body = run_aot()
    print(body)
    if FLAGS.write:
      report.write_section("aot_gemma_2b", body)
    return
  rows = run_benchmarks()
  body = _body(rows)
  print(body)
  if FLAGS.write and rows:
    report.write_section("train_step", body)


if __name__ == "__main__":
  app.run(main)
