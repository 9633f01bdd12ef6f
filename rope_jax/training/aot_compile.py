"""Ahead-of-time compiles of the real train step for a TPU topology on a CPU host (the library of
``python -m rope_jax.aot``): per-device memory, "does it fit HBM?", XLA and model FLOPs, and the
Pallas kernels in the step.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from rope_jax.config import base as config_lib
from rope_jax.training import flops as flops_lib
from rope_jax.training import train_lib


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
  # No TPU is attached here, so several AOT compiles (e.g. parallel tests) may load libtpu at once.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
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
