"""The ``data`` section of an experiment config and the task names (layer 0).

Split from ``schema.py`` (which re-exports every name here): the data tasks, the probes'
settings and their checks. The pipeline (``rope_jax.data``) reads a validated :class:`DataConfig`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from rope_jax.config.strict import Section, check_fields, from_dict

PROBE_KINDS = ("copy", "reverse", "recall")
# Long-context probes (rope_jax.data.long_probes) and their settings: data.long_probe.<kind>_<name>.
LONG_PROBE_KINDS = ("passkey", "mqar", "flipflop")
LONG_PROBE_SETTINGS = {"passkey": ("digits", "depth"),
                       "mqar": ("num_pairs", "num_keys", "num_values", "power_a"),
                       "flipflop": ("p_ignore",)}
TFDS_TASKS = ("wiki", "flan_v2")
TASKS = ("offline", *TFDS_TASKS, *(f"probe_{kind}" for kind in PROBE_KINDS + LONG_PROBE_KINDS),
         "mixture")


def check_task(task: str) -> None:
  """Raises a ValueError listing the known tasks when ``task`` is not one of them."""
  if task not in TASKS:
    raise ValueError(f"Unknown data task {task!r}; known tasks: {', '.join(TASKS)}.")


def parse_mixture(spec: str) -> tuple[tuple[str, int], ...]:
  """``"offline:8,probe_recall:4"`` -> ``(("offline", 8), ("probe_recall", 4))``."""
  parts = []
  for item in (p.strip() for p in spec.split(",") if p.strip()):
    task, _, rows = item.partition(":")
    if task not in TASKS or task == "mixture" or not rows.isdigit() or int(rows) < 1:
      raise ValueError(
          f"Bad data.mixture entry {item!r} in {spec!r}: want task:rows with rows >= 1 and task "
          f"one of {', '.join(t for t in TASKS if t != 'mixture')}.")
    parts.append((task, int(rows)))
  if not parts or len({t for t, _ in parts}) != len(parts):
    raise ValueError(f"data.mixture {spec!r} must name each component task once, e.g. "
                     "'offline:8,probe_recall:4'.")
  return tuple(parts)


def _check_int_range(where: str, value: int, lo: int, hi: int | None = None) -> None:
  if value < lo or (hi is not None and value > hi):
    raise ValueError(f"{where} must be an int in [{lo}, {hi or 'inf'}], got {value!r}.")


@dataclasses.dataclass(frozen=True)
class ProbeConfig(Section):
  """The synthetic probes (``rope_jax.data.probes``, the ``data.probe`` section).

  Token ids 5.. are ``num_symbols`` symbols (copied, reversed, or recalled values), then
  ``num_keys`` recall keys; ``num_queries`` recall queries per row. Rows are filled to the
  sequence length, so longer eval lengths give longer probes.
  """

  WHERE: ClassVar[str] = "data.probe"

  num_symbols: int = 64
  num_keys: int = 1024
  num_queries: int = 4

  def __post_init__(self):
    check_fields(self)
    for name in ("num_symbols", "num_keys", "num_queries"):
      _check_int_range(f"data.probe.{name}", getattr(self, name), 1)


@dataclasses.dataclass(frozen=True)
class LongProbeConfig(Section):
  """The long-context probes (``rope_jax.data.long_probes``, the ``data.long_probe`` section).

  Tasks probe_passkey, probe_mqar, probe_flipflop; train short, test long. passkey: a
  ``passkey_digits``-digit number at ``passkey_depth`` (the fraction of filler before it, in
  [0, 1]; -1 = uniform per example). mqar (zoology): ``mqar_num_pairs`` key-value pairs (keys of
  ``mqar_num_keys``, values of ``mqar_num_values``), each queried once at a power-law gap with
  exponent ``mqar_power_a``. flipflop: each instruction is "ignore" with probability
  ``flipflop_p_ignore`` (0.8 = Liu et al.'s training mix; 0.1 dense, 0.98 sparse tests).
  """

  WHERE: ClassVar[str] = "data.long_probe"

  passkey_digits: int = 5
  passkey_depth: float = -1.0
  mqar_num_pairs: int = 8
  mqar_num_keys: int = 64
  mqar_num_values: int = 64
  mqar_power_a: float = 0.01
  flipflop_p_ignore: float = 0.8

  def __post_init__(self):
    check_fields(self)
    for name in ("passkey_digits", "mqar_num_pairs", "mqar_num_keys", "mqar_num_values"):
      _check_int_range(f"data.long_probe.{name}", getattr(self, name), 1)
    if not (0.0 <= self.passkey_depth <= 1.0 or self.passkey_depth == -1.0):
      raise ValueError(f"data.long_probe.passkey_depth must be in [0, 1] or -1 (uniform "
                       f"random), got {self.passkey_depth!r}.")
    if not 0.0 < self.mqar_power_a <= 1.0:
      raise ValueError(f"data.long_probe.mqar_power_a must be in (0, 1], got "
                       f"{self.mqar_power_a!r}.")
    if not 0.0 <= self.flipflop_p_ignore < 1.0:
      raise ValueError(f"data.long_probe.flipflop_p_ignore must be in [0, 1), got "
                       f"{self.flipflop_p_ignore!r}.")
    if self.mqar_num_pairs > self.mqar_num_keys:
      raise ValueError(f"data.long_probe.mqar_num_pairs ({self.mqar_num_pairs}) must be <= "
                       f"mqar_num_keys ({self.mqar_num_keys}): the keys are distinct.")


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
  """The ``data`` section (``rope_jax.data``); every key must be present.

  The batch size, sequence length and seed come from the ``train`` section. The defaults are
  the offline default job: the CPython-docs corpus with its 2048-piece vocabulary.

  Attributes:
    task: one of ``TASKS``: "offline", "wiki", "flan_v2", "probe_copy", "probe_reverse",
      "probe_recall", "probe_passkey", "probe_mqar", "probe_flipflop", "mixture".
    vocab_path: SentencePiece model, local or gs://. "" = the shipped offline vocabulary
      (``rope_jax/data/assets/offline_sp2048.model``) for offline/probe tasks; wiki and flan_v2
      need Gemma's tokenizer.model here.
    tfds_data_dir: TFDS (wiki, flan_v2) directory holding the prepared dataset ("" = TFDS's
      default, $TFDS_DATA_DIR or ~/tensorflow_datasets; gs://bucket/tensorflow_datasets on TPU).
    tfds_name: override of the versioned dataset name ("" = the task's default).
    validation_percent: percent of documents held out for validation (the paper held out 10% of
      Wikipedia): the last N% of TFDS train for wiki/flan_v2, a fixed hash bucket of documents
      for offline.
    pack: pack several documents per row (segment ids, positions restarting per document);
      False puts one document chunk per row.
    shuffle_buffer_size: shuffle buffer in documents for the streaming TFDS tasks (the offline
      corpus is permuted whole each epoch).
    mixture: for task="mixture", "task:rows,task:rows,...": every global batch holds exactly
      ``rows`` rows of each component task, in this order (the rows must add up to the global
      batch size), e.g. "offline:8,probe_copy:2,probe_reverse:2,probe_recall:4". Must be ""
      for any other task.
    probe: the synthetic probes' alphabet (:class:`ProbeConfig`).
    long_probe: the long-context probes' settings (:class:`LongProbeConfig`).
  """

  WHERE: ClassVar[str] = "data"

  task: str = "offline"
  vocab_path: str = ""
  tfds_data_dir: str = ""
  tfds_name: str = ""
  validation_percent: int = 10
  pack: bool = True
  shuffle_buffer_size: int = 10_000
  mixture: str = ""
  probe: ProbeConfig = ProbeConfig()
  long_probe: LongProbeConfig = LongProbeConfig()

  def __post_init__(self):
    check_fields(self)
    check_task(self.task)
    if self.task == "mixture":
      parse_mixture(self.mixture)
    elif self.mixture:
      raise ValueError(f"data.mixture={self.mixture!r} is set but data.task={self.task!r}; set "
                       "task='mixture' to use it.")
    _check_int_range("data.validation_percent", self.validation_percent, 1, 99)
    _check_int_range("data.shuffle_buffer_size", self.shuffle_buffer_size, 1)

  @classmethod
  def from_dict(cls, d: Any, where: str | None = None) -> "DataConfig":
    """Strict, and every key (also of ``probe`` and ``long_probe``) must be present."""
    return from_dict(cls, d, where, complete=True)
