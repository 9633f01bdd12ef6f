"""Writes one benchmark's section of BENCHMARKS.md, leaving the other sections alone.

Each benchmark script owns a section delimited by ``<!-- NAME:begin -->`` / ``<!-- NAME:end -->``
and rewrites only that section, so scripts can be re-run independently and in any order.
"""

from __future__ import annotations

import datetime
import os
import platform
import re

import jax

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS_MD = os.path.join(REPO_ROOT, "BENCHMARKS.md")
_HEADER = (
    "# Benchmarks\n\n"
    "Written by the scripts under `benchmarks/`; each section says how to regenerate it.\n"
    "On shared CPUs only ratios measured side by side in one run are reported; absolute times\n"
    "only from an accelerator, with the device named.\n")


def machine_line() -> str:
  """One line naming the host and the JAX devices a measurement ran on."""
  dev = jax.devices()[0]
  return (f"{datetime.date.today().isoformat()} · jax {jax.__version__} · "
          f"{dev.platform}:{getattr(dev, 'device_kind', '?')} x{jax.device_count()} · "
          f"{platform.machine()} {os.cpu_count()} cores")


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def write_section(name: str, body: str, path: str = BENCHMARKS_MD) -> None:
  """Replaces (or appends) the section ``name`` of BENCHMARKS.md with ``body``."""
  begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
  block = f"{begin}\n{body.rstrip()}\n{end}\n"
  text = open(path).read() if os.path.exists(path) else _HEADER
  pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
  text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block
  with open(path, "w") as f:
    f.write(text)
