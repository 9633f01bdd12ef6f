"""What a researcher watches: a progress line, TensorBoard event files and ``metrics.jsonl``.

Only process 0 writes. ``metrics.jsonl`` has one JSON object per line,
``{"step": int, "split": "train" | "eval", <name>: float, ...}``; on resume the lines after the
restored step (written by the run that died) are dropped so the file reads as one run, and
TensorBoard purges the same steps.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any, Mapping

from absl import logging
from etils import epath

from rope_jax.checkpoint.rundir import METRICS_FILE as JSONL
from rope_jax.checkpoint.rundir import TENSORBOARD_SUBDIR as TB_DIR


def perplexity(loss: float) -> float:
  """``exp(loss)``, inf past float range instead of OverflowError."""
  return math.exp(loss) if loss < 700 else float("inf")


def progress_line(step: int, total: int, m: Mapping[str, float]) -> str:
  """One line: ``step 120/300 | loss 3.2101 | ppl 24.78 | lr 1.00e-03 | gnorm 0.512 |
  4,567 tok/s | MFU 12.3%``."""
  parts = [f"step {step}/{total}"]
  if "loss" in m:
    parts += [f"loss {m['loss']:.4f}", f"ppl {perplexity(m['loss']):.2f}"]
  if "learning_rate" in m:
    parts.append(f"lr {m['learning_rate']:.2e}")
  if "grad_norm" in m:
    parts.append(f"gnorm {m['grad_norm']:.3f}")
  if "tokens_per_second" in m:
    parts.append(f"{m['tokens_per_second']:,.0f} tok/s")
  if "mfu" in m:
    parts.append(f"MFU {100 * m['mfu']:.1f}%")
  return " | ".join(parts)


def _truncate_jsonl(path: epath.Path, after_step: int) -> int:
  """Drops lines with ``step > after_step``; returns how many were dropped."""
  if not path.exists():
    return 0
  lines = path.read_text().splitlines()
  keep = []
  for line in lines:
    try:
      rec = json.loads(line)
    except json.JSONDecodeError:  # A line cut short by a kill.
      continue
    if rec.get("step", 0) <= after_step:
      keep.append(line)
  path.write_text("".join(l + "\n" for l in keep))
  return len(lines) - len(keep)


def _summary_writer_class() -> type[Any]:
  """``tensorboardX.SummaryWriter``, imported without torch.

  tensorboardX imports torch at import time when it is installed (only to accept torch tensors;
  this module passes floats), which costs seconds at every trainer start. Unless something
  already imported torch, ``import torch`` fails for that one import (a ``None`` entry in
  ``sys.modules``), and the entry is removed right after, so a later ``import torch`` works.
  """
  if "tensorboardX" in sys.modules or "torch" in sys.modules:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    return SummaryWriter
  sys.modules["torch"] = None  # type: ignore[assignment]
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  finally:
    sys.modules.pop("torch", None)
  return SummaryWriter


class MetricsWriter:
  """Writes scalars to ``workdir/metrics.jsonl`` and ``workdir/tensorboard`` (process 0 only).

  Args:
    workdir: local path or ``gs://`` URL.
    enabled: False on processes other than 0 (every call is then a no-op).
    resume_step: the step a resumed run restarts from; later records are purged.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int | None = None):
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    self.dir = epath.Path(workdir)
    self.dir.mkdir(parents=True, exist_ok=True)
    self.jsonl = self.dir / JSONL
    if resume_step is not None:
      dropped = _truncate_jsonl(self.jsonl, resume_step)
      if dropped:
        logging.info("metrics.jsonl: dropped %d records after resumed step %d.", dropped,
                     resume_step)
    try:
      SummaryWriter = _summary_writer_class()  # pylint: disable=invalid-name
      self._tb = SummaryWriter(str(self.dir / TB_DIR),
                               purge_step=None if resume_step is None else resume_step + 1)
    except ImportError:  # pragma: no cover
      logging.warning("tensorboardX not installed; writing metrics.jsonl only.")

  def write(self, step: int, scalars: Mapping[str, Any], *, split: str = "train") -> None:
    """Appends one record and the TensorBoard scalars ``{split}/{name}``."""
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    with self.jsonl.open("a") as f:
      f.write(json.dumps({"step": int(step), "split": split, **clean}) + "\n")
    if self._tb is not None:
      for k, v in clean.items():
        self._tb.add_scalar(f"{split}/{k}", v, int(step))

  def write_text(self, tag: str, text: str, step: int = 0) -> None:
    if self.enabled and self._tb is not None:
      self._tb.add_text(tag, text, step)

  def flush(self) -> None:
    if self.enabled and self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self.enabled and self._tb is not None:
      self._tb.close()
      self._tb = None


def read_jsonl(workdir: str, split: str | None = None) -> list[dict[str, Any]]:
  """The records of ``workdir/metrics.jsonl`` (optionally one split), in file order."""
  path = epath.Path(workdir) / JSONL
  if not path.exists():
    return []
  out = []
  for line in path.read_text().splitlines():
    rec = json.loads(line)
    if split is None or rec.get("split") == split:
      out.append(rec)
  return out


def record_steps(workdir: str, split: str) -> set[int]:
  """The steps with a ``split`` record in ``workdir/metrics.jsonl`` (lines cut short by a kill
  are skipped; an absent file has none)."""
  path = epath.Path(workdir) / JSONL
  if not path.exists():
    return set()
  steps = set()
  for line in path.read_text().splitlines():
    try:
      rec = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(rec, dict) and rec.get("split") == split and "step" in rec:
      steps.add(int(rec["step"]))
  return steps
