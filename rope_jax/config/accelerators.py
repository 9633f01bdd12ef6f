"""The one accelerator table: peak FLOP/s and memory per device, and Cloud TPU slice facts.

Pure Python (layer 0: no JAX), read by ``rope_jax.training.flops`` (MFU, "does it fit?") and by
``launch/`` (accelerator types, runtime versions, AOT topologies, zones), so a new accelerator is
added here once.
"""

from __future__ import annotations

import dataclasses

GIB = 2**30
_LITE_SIZES = (1, 4, 8, 16, 32, 64, 128, 256)


@dataclasses.dataclass(frozen=True)
class Accelerator:
  """One kind of accelerator.

  Attributes:
    device_kinds: ``jax.Device.device_kind`` names of one device (a TPU chip or megacore, a GPU).
    peak_flops: dense bfloat16 peak FLOP/s per device.
    hbm_bytes: high-bandwidth memory per device (None: not listed).
    tpu_family: Cloud TPU accelerator-type prefix (``v5p`` in ``v5p-32``); "" for GPUs.
    runtime_version: the usual TPU VM software version (https://cloud.google.com/tpu/docs/runtimes).
    aot_name: topology prefix for ``rope_jax.aot`` / ``jax.experimental.topologies``.
    counts_cores: the type's number counts TensorCores (2 per chip), not chips.
    size_multiple, max_size: valid slice sizes are multiples up to the maximum, or
    slice_sizes: an explicit list.
    zones: where the generation is documented (https://cloud.google.com/tpu/docs/regions-zones);
      the list changes over time, so a zone outside it is a warning, not an error.
  """

  device_kinds: tuple[str, ...]
  peak_flops: float
  hbm_bytes: float | None = None
  tpu_family: str = ""
  runtime_version: str = ""
  aot_name: str = ""
  counts_cores: bool = False
  size_multiple: int = 0
  max_size: int = 0
  slice_sizes: tuple[int, ...] = ()
  zones: tuple[str, ...] = ()

  def valid_size(self, n: int) -> bool:
    """Whether ``<tpu_family>-<n>`` is a slice size Cloud TPU offers."""
    if self.slice_sizes:
      return n in self.slice_sizes
    return self.size_multiple > 0 and n % self.size_multiple == 0 and (
        self.size_multiple <= n <= self.max_size)


ACCELERATORS: tuple[Accelerator, ...] = (
    Accelerator(("TPU v4",), 275e12, 32 * GIB, tpu_family="v4",
                runtime_version="tpu-ubuntu2204-base", aot_name="v4", counts_cores=True,
                size_multiple=8, max_size=8192, zones=("us-central2-b",)),
    Accelerator(("TPU v5 lite", "TPU v5e"), 197e12, 16 * GIB, tpu_family="v5litepod",
                runtime_version="v2-alpha-tpuv5-lite", aot_name="v5e", slice_sizes=_LITE_SIZES,
                zones=("us-central1-a", "us-south1-a", "us-west1-c", "us-west4-a", "us-east5-a",
                       "us-east5-b", "us-east5-c", "europe-west4-b")),
    Accelerator(("TPU v5", "TPU v5p"), 459e12, 95 * GIB, tpu_family="v5p",
                runtime_version="v2-alpha-tpuv5", aot_name="v5p", counts_cores=True,
                size_multiple=8, max_size=17920,
                zones=("us-central1-a", "us-east5-a", "europe-west4-b")),
    Accelerator(("TPU v6 lite", "TPU v6e"), 918e12, 32 * GIB, tpu_family="v6e",
                runtime_version="v2-alpha-tpuv6e", aot_name="v6e", slice_sizes=_LITE_SIZES,
                zones=("us-central1-b", "us-east1-d", "us-east5-a", "us-east5-b",
                       "europe-west4-a", "asia-northeast1-b")),
    Accelerator(("NVIDIA H100 80GB HBM3",), 989e12, 80 * GIB),  # SXM
    Accelerator(("NVIDIA H100",), 989e12),
    Accelerator(("NVIDIA H100 PCIe",), 756e12),
    Accelerator(("NVIDIA H200",), 989e12, 141 * GIB),
)

# Dense bf16 peak FLOP/s and HBM bytes per device, by ``jax.Device.device_kind``.
PEAK_FLOPS: dict[str, float] = {k: a.peak_flops for a in ACCELERATORS for k in a.device_kinds}
HBM_BYTES: dict[str, float] = {k: a.hbm_bytes for a in ACCELERATORS for k in a.device_kinds
                               if a.hbm_bytes is not None}
# Cloud TPU generations by accelerator-type prefix (``v5p``, ``v5litepod``, ...).
TPU_FAMILIES: dict[str, Accelerator] = {a.tpu_family: a for a in ACCELERATORS if a.tpu_family}
