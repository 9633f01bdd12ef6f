"""The one strict check every config section goes through (``rope_jax.config.schema``).

:func:`from_dict` builds a section dataclass from a mapping: an unknown key, a value of the wrong
type or a non-finite float is a ValueError naming the key and what is allowed. Sections call
:func:`check_fields` from ``__post_init__`` so that building one directly checks the same types.
Layer 0: no project imports.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from typing import Any, ClassVar

import numpy as np


def plain(d: Any) -> dict[str, Any]:
  """A ConfigDict (or mapping) as a plain dict of its top-level keys."""
  return dict(d.to_dict() if hasattr(d, "to_dict") else d)


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
  """``{field name: resolved type hint}`` of a section dataclass."""
  hints = typing.get_type_hints(cls)
  return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def section_of(hint: Any) -> type | None:
  """The section dataclass in ``hint`` (``RopeConfig`` of ``RopeConfig | None``), else None."""
  for h in (hint, *typing.get_args(hint)):
    if isinstance(h, type) and dataclasses.is_dataclass(h):
      return h
  return None


def scalar_type(hint: Any) -> type:
  """The first non-None type of ``hint`` (``int`` of ``int | None``), for placeholders."""
  if _is_union(hint):
    hint = next(h for h in typing.get_args(hint) if h is not type(None))
  return typing.get_origin(hint) or hint


def _is_union(hint: Any) -> bool:
  origin = typing.get_origin(hint)
  return origin is typing.Union or str(origin) == "<class 'types.UnionType'>"


def _type_ok(value: Any, hint: Any) -> bool:
  if _is_union(hint):
    return any(_type_ok(value, h) for h in typing.get_args(hint))
  if hint is Any:
    return True
  if hint is type(None):
    return value is None
  if typing.get_origin(hint) is tuple:
    if not isinstance(value, (tuple, list)):
      return False
    args = typing.get_args(hint)
    return len(args) != 2 or args[1] is not Ellipsis or all(_type_ok(v, args[0]) for v in value)
  if hint is float:
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            and math.isfinite(value))
  if hint is int:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
  if hint is bool:
    return isinstance(value, (bool, np.bool_))
  if isinstance(hint, type):
    return isinstance(value, hint)
  return True


def _describe(hint: Any) -> str:
  if _is_union(hint):
    return " or ".join(_describe(h) for h in typing.get_args(hint))
  if typing.get_origin(hint) is tuple:
    args = typing.get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis and args[0] is not Any:
      return f"a tuple of items each {_describe(args[0])}"
    return "a tuple"
  names = {type(None): "None", int: "an int", float: "a finite number", bool: "a bool",
           str: "a string"}
  return names.get(hint, f"a {getattr(hint, '__name__', hint)}")


def check_field(where: str, value: Any, hint: Any) -> None:
  """Raises ValueError unless ``value`` has type ``hint`` (floats finite, no bool for numbers)."""
  if not _type_ok(value, hint):
    raise ValueError(f"{where} must be {_describe(hint)}, got {value!r}.")


def check_keys(where: str, keys: Any, cls: type, *, complete: bool = False) -> None:
  """Raises ValueError naming unknown keys (and, if ``complete``, missing ones) of ``cls``."""
  allowed, keys = set(field_types(cls)), set(keys)
  unknown = sorted(keys - allowed)
  if unknown:
    raise ValueError(f"Unknown key(s) {unknown} in {where}; allowed: {sorted(allowed)}.")
  if complete and allowed - keys:
    raise ValueError(f"Missing key(s) {sorted(allowed - keys)} in {where}.")


def check_fields(obj: Any) -> None:
  """Types of every field of a section instance (``__post_init__``); lists become tuples."""
  for name, hint in field_types(type(obj)).items():
    value = getattr(obj, name)
    check_field(f"{obj.WHERE}.{name}", value, hint)
    if isinstance(value, list):
      object.__setattr__(obj, name, tuple(value))


def from_dict(cls: type, d: Any, where: str | None = None, *, complete: bool = False) -> Any:
  """Section ``cls`` from a mapping (a ConfigDict or its ``to_dict()``), strictly.

  Nested sections (``model.rope``, ``data.probe``) are built from nested mappings the same way.

  Args:
    cls: a section dataclass (``rope_jax.config.schema``).
    d: ``{field: value}``; absent fields take the dataclass default.
    where: the section's dotted name in messages (default ``cls.WHERE``).
    complete: every field must be present (the ``data`` section).

  Raises:
    ValueError: an unknown (or, with ``complete``, missing) key, a value of the wrong type or a
      non-finite float (naming the key and what is allowed), or a bad value (``__post_init__``).
  """
  where = where or cls.WHERE
  d = plain(d)
  check_keys(where, d, cls, complete=complete)
  for key, hint in field_types(cls).items():
    if key not in d:
      continue
    sub = section_of(hint)
    if sub is not None and hasattr(d[key], "keys"):
      d[key] = from_dict(sub, d[key], f"{where}.{key}", complete=complete)
    check_field(f"{where}.{key}", d[key], hint)
    if isinstance(d[key], list):
      d[key] = tuple(d[key])
  return cls(**d)


class Section:
  """Base of the config sections: ``WHERE`` names the section in messages, and ``from_dict`` is
  the one strict check (:func:`from_dict`)."""

  WHERE: ClassVar[str] = ""

  @classmethod
  def from_dict(cls, d: Any, where: str | None = None) -> Any:
    return from_dict(cls, d, where)
