r"""Fused grid vs per-run loop, side by side; writes the ``fused_grid`` section of BENCHMARKS.md.

    JAX_PLATFORMS=cpu python -m benchmarks.fused_grid            # the CPU Table 2 job's grid

Both train the same members (the CPU Table 2 job's rows × seeds, its model and batch shape) for
the same steps on the same pre-built batches, start-up included:

* **per-run loop**: for each run, its own compiled ``train_lib.train_step`` (the program
  ``rope_jax.train`` runs), init, steps; in-process (no subprocess or data start-up per run, so
  the loop is charged less than the old job paid);
* **fused**: ``rope_jax.training.fused.FusedGrid``: one compile, stacked state, one vmapped step.

Reported: wall time, member-tokens per second (start-up included), the start-up and per-step
parts, and the ratio; with those parts, the ratio at the job's default step count too.
"""

from __future__ import annotations

import functools
import os
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import report  # pylint: disable=g-import-not-at-top,wrong-import-position

_STEPS = flags.DEFINE_integer("steps", 20, "Timed training steps per member.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per row.")
_JOB_STEPS = flags.DEFINE_integer("job_steps", None, "Steps of the job, for the projected "
                                  "ratio (default: the job's default for --grid).")
_WRITE = flags.DEFINE_bool("write", True, "Rewrite the BENCHMARKS.md section.")
_GRID = flags.DEFINE_enum("grid", "lm", ["lm", "probe"], "Which grid of the job (its model).")


def _batches(n: int, b: int, l: int, vocab: int):
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  out = []
  for _ in range(n):
    t = rng.integers(3, vocab, size=(b, l + 1)).astype(np.int32)
    out.append({"inputs": t[:, :-1], "targets": t[:, 1:], "weights": np.ones((b, l), np.float32),
                "segment_ids": np.ones((b, l), np.int32),
                "positions": np.broadcast_to(np.arange(l, dtype=np.int32), (b, l)).copy()})
  return out


def main(argv: list[str]) -> None:
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from rope_jax.config import base as config_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.model import transformer as model_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.sweeps import regime  # pylint: disable=g-import-not-at-top
  from rope_jax.training import fused  # pylint: disable=g-import-not-at-top
  from rope_jax.training import train_lib  # pylint: disable=g-import-not-at-top

  seq_len, steps = 64, _STEPS.value
  keys = regime.LM_ROWS if _GRID.value == "lm" else regime.PROBE_ROWS
  rows = tuple(r for r in regime.cpu_rows(seq_len) if r.key in keys)
  configs = regime.member_configs(rows, seq_len, steps, _GRID.value)
  model_cfg = config_lib.model_config(configs[rows[0].key])
  train_cfg = train_lib.TrainConfig.from_dict(config_lib.to_dict(configs[rows[0].key].train))
  members = [fused.Member(f"{r.key}-s{s}", r.rope, s) for r in rows for s in range(_SEEDS.value)]
  b = train_cfg.global_batch_size
  batches = _batches(steps, b, seq_len, model_cfg.vocab_size)
  tokens = len(members) * steps * b * seq_len

  t0 = time.perf_counter()
  grid = fused.FusedGrid(model_cfg, train_cfg, members)
  state = grid.init()
  state, m = grid.step(state, batches[0])
  jax.block_until_ready(m)
  fused_start = time.perf_counter() - t0
  t1 = time.perf_counter()
  for batch in batches[1:]:
    state, m = grid.step(state, batch)
  jax.block_until_ready(m)
  fused_step = (time.perf_counter() - t1) / max(steps - 1, 1)
  fused_wall = time.perf_counter() - t0
  del state

  optimizer, schedule = train_lib.make_optimizer(train_cfg)
  loop_start = loop_steps = 0.0
  t0 = time.perf_counter()
  for member in members:
    ts = time.perf_counter()
    cfg = model_lib.ModelConfig(**{**model_cfg.__dict__, "rope": member.rope})
    graphdef, _ = model_lib.abstract_model(cfg)
    step = jax.jit(functools.partial(train_lib.train_step, graphdef=graphdef,
                                     optimizer=optimizer, schedule=schedule, z_loss=0.0),
                   donate_argnums=(0,))
    run = jax.jit(functools.partial(train_lib.init_state, cfg, optimizer, member.seed))()
    run, m = step(run, {k: jnp.asarray(v) for k, v in batches[0].items()})
    jax.block_until_ready(m)
    t1 = time.perf_counter()
    loop_start += t1 - ts
    for batch in batches[1:]:
      run, m = step(run, {k: jnp.asarray(v) for k, v in batch.items()})
    jax.block_until_ready(m)
    loop_steps += time.perf_counter() - t1
  loop_wall = time.perf_counter() - t0
  loop_step = loop_steps / max(steps - 1, 1)  # Summed over members: one step of every run.

  ratio = loop_wall / fused_wall
  job = _JOB_STEPS.value or {"lm": 100, "probe": 300}[_GRID.value]  # table2_cpu.DEFAULT_STEPS
  proj = (loop_start + loop_step * (job - 1)) / (fused_start + fused_step * (job - 1))
  rows_md = [
      ["per-run loop", f"{loop_wall:.1f}", f"{tokens / loop_wall:,.0f}", f"{loop_start:.1f}",
       f"{loop_step:.3f}", "1.00x"],
      ["fused (vmap, one compile)", f"{fused_wall:.1f}", f"{tokens / fused_wall:,.0f}",
       f"{fused_start:.1f}", f"{fused_step:.3f}", f"**{ratio:.2f}x**"],
  ]
  body = (
      f"## Fused Table 2 {_GRID.value} grid vs per-run loop (`benchmarks/fused_grid.py`)\n\n"
      f"{report.machine_line()}\n\n"
      f"{len(members)} members ({len(rows)} rows × {_SEEDS.value} seeds of the CPU Table 2 job's "
      f"{_GRID.value} grid: "
      f"{model_cfg.num_layers} layers, d_model {model_cfg.embed_dim}, head dim "
      f"{model_cfg.head_dim}, batch {b} × {seq_len}), {steps} steps each on the same batches, "
      "start-up (build, compile, init, first step) included, measured one after the other in "
      "one process.\n\n"
      + report.markdown_table(
          ["program", "wall (s)", "member-tokens/s", "start-up (s)",
           "one step of every member (s)", "speed-up"], rows_md)
      + f"\nProjected from these parts for the job's {job} steps: **{proj:.2f}x**. "
      "The per-run loop here is in-process (the old job also paid a Python + data start-up "
      f"per run in its own subprocess). Per step, the fused program takes "
      f"{fused_step / loop_step:.2f}x the time of every member's own step one after the other; "
      f"start-up, {fused_start / loop_start:.2f}x.\n\n"
      f"Regenerate: `python -m benchmarks.fused_grid --grid={_GRID.value}`.\n")
  print(body)
  if _WRITE.value:
    report.write_section(f"fused_grid_{_GRID.value}", body)


if __name__ == "__main__":
  app.run(main)
