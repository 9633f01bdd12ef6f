"""Writing analysis outputs: JSON, CSV, markdown tables, and the figure title of a run.

Every ``report*`` module writes through these (one home for the file formats).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any


def write_json(path: str, value: Any) -> str:
  """Writes ``value`` as indented UTF-8 JSON (directories created); returns ``path``."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=1, ensure_ascii=False)
  return path


def write_csv(path: str, header: Sequence[str], rows: Any) -> str:
  """Writes a header and rows as CSV (directories created); returns ``path``."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  return path


def write_markdown(path: str, header: Sequence[str], rows: Any) -> str:
  """Writes a header and rows as a GitHub markdown table; returns ``path``."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  return path


def short_title(info: Mapping[str, Any]) -> str:
  """``"<run> (<encoding>), step S, P prompts / T tokens"`` for figure titles."""
  name = os.path.basename(os.path.normpath(str(info["workdir"])))
  return (f"{name} ({info['positional_encoding']}), step {info['step']}, "
          f"{info['num_prompts']} prompts / {info['num_tokens']} tokens")
