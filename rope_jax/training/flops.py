"""Model FLOPs per training step, accelerator peak FLOP/s and model FLOPs utilisation (MFU).

Model FLOPs count what the model needs, not what the hardware does: rematerialisation and
padding are not counted (PaLM, appendix B; MaxText). Per token, a training step (forward +
backward) costs

* ``6 · N_matmul``, N_matmul = all weights used in matmuls: the blocks' projections and the
  (tied) output embedding ``V · D``; the embedding lookup and the norm scales are free;
* plus causal attention, ``6 · layers · N · H · L`` (QKᵀ and AV, 2·2·L·N·H per token forward,
  ×3 for forward + backward, halved because a causal mask only needs the lower triangle).

MFU = model FLOPs per second / (devices × per-device peak). The peak is the dense bfloat16 peak
of a known accelerator (``rope_jax.config.accelerators``); on CPU it is a measured float32 matmul rate.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

from rope_jax.config import accelerators
from rope_jax.model import transformer as model_lib

# Per-device peak and memory, by ``jax.Device.device_kind``: the one table is
# ``rope_jax.config.accelerators``.
PEAK_FLOPS = accelerators.PEAK_FLOPS
HBM_BYTES = accelerators.HBM_BYTES


def _lookup(table: dict[str, float], device_kind: str, what: str) -> float:
  if device_kind in table:
    return table[device_kind]
  # Longest known prefix ("NVIDIA H100 80GB HBM3" matches "NVIDIA H100 80GB HBM3 ...").
  matches = [k for k in table if device_kind.startswith(k)]
  if matches:
    return table[max(matches, key=len)]
  raise ValueError(
      f"Unknown accelerator {device_kind!r} for {what}; known: {sorted(table)}. Set "
      f"train.peak_tflops_per_device to give the peak explicitly.")


def peak_flops_per_device(device_kind: str) -> float:
  """Dense bf16 peak FLOP/s of one device of kind ``device_kind`` (``jax.Device.device_kind``)."""
  return _lookup(PEAK_FLOPS, device_kind, "MFU")


def hbm_bytes_per_device(device_kind: str) -> float:
  return _lookup(HBM_BYTES, device_kind, "HBM capacity")


@functools.lru_cache(maxsize=None)
def measured_matmul_flops(n: int = 2048, dtype: str = "float32", repeats: int = 3) -> float:
  """Measured matmul FLOP/s of the default device (best of ``repeats``; CPU "peak")."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n**3 / best


def resolve_peak(devices: list[jax.Device], override_tflops: float | None = None
                 ) -> tuple[float, str]:
  """(total peak FLOP/s of ``devices``, how it was obtained).

  On CPU the peak is the measured matmul rate of one host (all fake devices of a process share
  its cores) times the number of processes; elsewhere the per-device table value times the
  device count, or ``override_tflops`` per device.

  Raises:
    ValueError: an accelerator not in ``PEAK_FLOPS`` and no override.
  """
  n = len(devices)
  kind = devices[0].device_kind
  if override_tflops:
    return override_tflops * 1e12 * n, f"config ({override_tflops} TFLOP/s/device)"
  if devices[0].platform == "cpu":
    hosts = len({d.process_index for d in devices})
    return measured_matmul_flops() * hosts, "measured f32 matmul rate of the host CPU"
  return peak_flops_per_device(kind) * n, f"bf16 peak of {kind}"


def matmul_params(cfg: model_lib.ModelConfig) -> int:
  """Weights used in matmuls per token (projections + tied output embedding)."""
  d, n, k, h, f = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
  per_layer = d * n * h * 2 + d * k * h * 2 + 3 * d * f
  return cfg.num_layers * per_layer + cfg.vocab_size * d


def attention_flops_per_token(cfg: model_lib.ModelConfig, seq_len: int) -> float:
  """Forward + backward causal attention FLOPs per token at sequence length ``seq_len``."""
  return 6.0 * cfg.num_layers * cfg.num_heads * cfg.head_dim * seq_len


def train_flops_per_token(cfg: model_lib.ModelConfig, seq_len: int) -> float:
  """Model FLOPs per trained token: ``6 · N_matmul`` + causal attention."""
  return 6.0 * matmul_params(cfg) + attention_flops_per_token(cfg, seq_len)


def train_flops_per_step(cfg: model_lib.ModelConfig, global_batch_size: int,
                         seq_len: int) -> float:
  return train_flops_per_token(cfg, seq_len) * global_batch_size * seq_len


def mfu(flops_per_step: float, steps_per_second: float, total_peak: float) -> float:
  """Model FLOPs utilisation in [0, 1] (``total_peak`` from :func:`resolve_peak`)."""
  return flops_per_step * steps_per_second / total_peak


def describe(cfg: model_lib.ModelConfig, seq_len: int) -> str:
  """``matmul params 1.4M, 0.009 GFLOP/token at L=128 (8.7% attention)``."""
  per_token = train_flops_per_token(cfg, seq_len)
  attention = 100 * attention_flops_per_token(cfg, seq_len) / per_token
  return (f"matmul params {matmul_params(cfg) / 1e6:.1f}M, {per_token / 1e9:.3f} GFLOP/token "
          f"at L={seq_len} ({attention:.1f}% attention)")
