"""Shipped prompt sets, selectable by name (the paper's Figs 3–4 prompts and Fig. 19's domains).

The paper averages its frequency-usage figures over ten Shakespeare quotes (SPEC §2b); the
rebuttal's domain ablation (Fig. 19) repeats them on Italian, Chinese, code and arithmetic
prompts. Each set is ten short prompts, one per line, in ``rope_jax/analysis/prompts*.txt``
(public domain or written for this project). ``--prompts=italian`` selects one by name; any
other value is a path to a text file of your own.
"""

from __future__ import annotations

import os

_HERE = os.path.dirname(os.path.abspath(__file__))
# name -> file under rope_jax/analysis/ ("shakespeare" is the default of every analysis).
FILES: dict[str, str] = {
    "shakespeare": "prompts.txt",
    "italian": "prompts_italian.txt",
    "chinese": "prompts_chinese.txt",
    "code": "prompts_code.txt",
    "arithmetic": "prompts_arithmetic.txt",
}
NAMES: tuple[str, ...] = tuple(FILES)
DEFAULT = "shakespeare"


def path(name: str) -> str:
  """The file of the shipped set ``name``; ValueError naming the sets otherwise."""
  if name not in FILES:
    raise ValueError(f"unknown prompt set {name!r}; shipped sets: {', '.join(NAMES)}.")
  return os.path.join(_HERE, FILES[name])


def resolve(name_or_path: str | None) -> str:
  """A set name -> its file; None or "" -> the default set; anything else is a path."""
  if not name_or_path:
    return path(DEFAULT)
  return path(name_or_path) if name_or_path in FILES else name_or_path


def parse_names(spec: str) -> tuple[str, ...]:
  """``"italian,code"`` or ``"all"`` -> shipped set names (ValueError on an unknown one)."""
  names = NAMES if spec.strip() == "all" else tuple(s.strip() for s in spec.split(",") if s.strip())
  for name in names:
    path(name)
  if not names:
    raise ValueError(f"no prompt set given; shipped sets: {', '.join(NAMES)} (or 'all').")
  return tuple(dict.fromkeys(names))
