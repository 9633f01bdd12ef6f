r"""Ahead-of-time TPU check: compile the real train step for a TPU topology on a CPU host.

    JAX_PLATFORMS=cpu python -m rope_jax.aot --config=configs/gemma_2b.py \
        --topology=v5p:4x4x4 --config.mesh.fsdp=-1 --config.mesh.data=1 \
        --config.train.global_batch_size=256 --config.train.seq_len=2048

With ``libtpu`` installed (``pip install -e '.[tpu]'``), ``jax.experimental.topologies`` gives
the TPU devices of a topology without a TPU; the same ``train_lib.Setup`` as training builds
the mesh and shardings over them, and ``.lower(...).compile()`` runs the TPU compiler. Prints
per-device memory (``memory_analysis()``: does it fit HBM?) and FLOPs per step
(``cost_analysis()`` next to the model FLOPs of ``rope_jax.training.flops``), before anyone pays for a
pod (MaxText's ``train_compile.py`` does the same). Exit code 1 if it does not fit; bad input
(config, topology, libtpu missing) is one line and exit 2 (README "Exit codes").
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from rope_jax import entrypoint

# No TPU is attached here, so several AOT compiles (e.g. parallel tests) may load libtpu at once.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


def define_flags() -> None:
  """The CLI's flags (called from :func:`cli` only, so importing this module defines none)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", None, "Experiment config file[:args].",
                                  lock_config=True)
  flags.DEFINE_string("topology", "v5p:2x2x1",
                      "TPU topology, e.g. v5p:4x4x4, v5e:4x4, v4:2x2x2.")
  flags.DEFINE_integer("num_slices", 1, "Number of slices (multi-slice DCN); the config's "
                       "mesh.dcn_* must multiply to this.")


@dataclasses.dataclass
class AotReport:
  """What the compile says about one config on one topology (memory per device, bytes)."""

  topology: str
  device_kind: str
  num_devices: int
  mesh: dict[str, int]
  memory: dict[str, float]
  hbm_bytes: float | None
  xla_flops_per_device: float | None
  model_flops_per_step: float
  pallas_kernels: int  # Distinct Mosaic (Pallas TPU) kernels in the step, e.g. splash fwd/bwd.

  @property
  def fits(self) -> bool | None:
    if self.hbm_bytes is None or not self.memory:
      return None
    return self.memory["total"] <= self.hbm_bytes

  def summary(self) -> str:
    gib = lambda x: (f"{x / 2**30:.2f} GiB" if x >= 2**30  # pylint: disable=g-long-lambda
                     else f"{x / 2**20:.1f} MiB")
    lines = [f"AOT compile for {self.topology} ({self.num_devices} x {self.device_kind}), "
             f"mesh {self.mesh}"]
    if self.memory:
      lines.append("  per-device memory: " + ", ".join(
          f"{k} {gib(v)}" for k, v in self.memory.items() if k != "generated_code"))
    if self.hbm_bytes is not None:
      verdict = "FITS" if self.fits else "DOES NOT FIT"
      lines.append(f"  HBM per device {gib(self.hbm_bytes)}: {verdict} "
                   f"({100 * self.memory.get('total', 0) / self.hbm_bytes:.1f}% used)")
    if self.xla_flops_per_device is not None:
      lines.append(f"  XLA FLOPs per step: {self.xla_flops_per_device:.4g} per device, "
                   f"{self.xla_flops_per_device * self.num_devices:.4g} total")
    lines.append(f"  model FLOPs per step (6N + attention): {self.model_flops_per_step:.4g}")
    lines.append(f"  Pallas TPU kernels: {self.pallas_kernels}")
    return "\n".join(lines)


def topology_devices(topology: str, num_slices: int = 1) -> list[Any]:
  """The TPU devices of ``topology`` (e.g. ``"v5p:2x2x1"``) on a host without a TPU.

  Raises:
    ValueError: libtpu missing or the topology unknown (with how to fix it).
  """
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    kwargs = {"num_slices": num_slices} if num_slices > 1 else {}
    desc = topologies.get_topology_desc(topology_name=topology, platform="tpu", **kwargs)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f"Cannot get TPU topology {topology!r}: {type(e).__name__}: {e}. The AOT check needs "
        "libtpu (pip install -e '.[tpu]') and a name like v5p:2x2x1, v5e:2x2, v4:2x2x2.") from e
  return list(desc.devices)


def compile_for_topology(config: Any, topology: str, num_slices: int = 1) -> AotReport:
  """Compiles ``config``'s train step for ``topology``; ValueErrors as in training."""
  from rope_jax.config import base as config_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.training import flops as flops_lib  # pylint: disable=g-import-not-at-top
  from rope_jax.training import train_lib  # pylint: disable=g-import-not-at-top

  sections = config_lib.validate(config)
  devices = topology_devices(topology, num_slices)
  setup = train_lib.make_setup(sections["model"], sections["train"], sections["mesh"], devices)
  lowered = setup.lower_train_step()
  compiled = lowered.compile()
  kind = devices[0].device_kind
  try:
    hbm = flops_lib.hbm_bytes_per_device(kind)
  except ValueError:
    hbm = None
  train_cfg = sections["train"]
  return AotReport(
      topology=topology, device_kind=kind, num_devices=len(devices),
      mesh={k: int(v) for k, v in setup.mesh.shape.items()},
      memory=train_lib.memory_report(compiled), hbm_bytes=hbm,
      # XLA's cost analysis counts a loop body once: with gradient accumulation the step runs
      # the microbatch body grad_accum_steps times.
      xla_flops_per_device=(None if (f := train_lib.cost_flops(compiled)) is None
                            else f * train_cfg.grad_accum_steps),
      model_flops_per_step=flops_lib.train_flops_per_step(
          sections["model"], train_cfg.global_batch_size, train_cfg.seq_len),
      pallas_kernels=lowered.as_text().count("tpu_custom_call"))


def main(argv: list[str]) -> int:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  from rope_jax import errors  # pylint: disable=g-import-not-at-top
  flag_values = flags.FLAGS
  config = entrypoint.config_flag(flag_values)
  if len(argv) > 1:
    raise errors.BadInputError(f"Unexpected arguments: {argv[1:]}; flags are --name=value.")
  if config is None:
    raise errors.BadInputError("--config is required (e.g. --config=configs/gemma_2b.py).")
  report = compile_for_topology(config, flag_values.topology, flag_values.num_slices)
  print(report.summary(), flush=True)
  logging.info("AOT report: %s", report)
  return 1 if report.fits is False else 0


def cli(argv: list[str] | None = None) -> None:
  entrypoint.run_absl(main, define_flags, argv)


if __name__ == "__main__":
  cli()
