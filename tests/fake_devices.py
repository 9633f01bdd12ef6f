"""Environment for subprocesses that simulate several devices on the host CPU.

``--xla_force_host_platform_device_count=N`` must be set before jax is imported, so multi-device
tests run their device code in a subprocess with this environment. XLA:CPU aborts a collective
whose participants do not all arrive within 40 s; with 8 simulated devices on a loaded 2-core
machine a starved thread can take longer than that, so the timeouts are raised (a genuine
deadlock is still caught by the tests' own subprocess timeouts).
"""

from __future__ import annotations

COLLECTIVE_TIMEOUTS = ("--xla_cpu_collective_call_terminate_timeout_seconds=900 "
                       "--xla_cpu_collective_timeout_seconds=900")


def xla_flags(num_devices: int) -> str:
  """XLA_FLAGS for ``num_devices`` fake CPU devices with patient collectives."""
  return f"--xla_force_host_platform_device_count={num_devices} {COLLECTIVE_TIMEOUTS}"

