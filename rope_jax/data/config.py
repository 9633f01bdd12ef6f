"""Data defaults: ``default_config()`` is spliced into the experiment config as ``config.data``.

Every key is read by ``rope_jax.data`` (``tasks.py``, ``pipeline.py``, ``probes.py``); the batch
size, sequence length and seed come from the experiment config and are passed to
``make_iterator`` as arguments. ``validate(section)`` checks a section (unknown keys, types,
ranges). This module is light: it imports neither TensorFlow nor seqio.
"""

from __future__ import annotations

from typing import Any

import ml_collections

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


def default_config() -> ml_collections.ConfigDict:
  """The offline default job's data: the CPython-docs corpus with its 2048-piece vocabulary."""
  c = ml_collections.ConfigDict()
  # One of TASKS: "offline", "wiki", "flan_v2", "probe_copy", "probe_reverse", "probe_recall",
  # "probe_passkey", "probe_mqar", "probe_flipflop", "mixture".
  c.task = "offline"
  # SentencePiece model, local or gs://. "" = the shipped offline vocabulary
  # (rope_jax/data/assets/offline_sp2048.model) for offline/probe tasks; wiki and flan_v2 need
  # Gemma's tokenizer.model here.
  c.vocab_path = ""
  # TFDS (wiki, flan_v2): data_dir holding the prepared dataset ("" = TFDS's default,
  # $TFDS_DATA_DIR or ~/tensorflow_datasets; gs://bucket/tensorflow_datasets on TPU VMs), and an
  # optional override of the versioned dataset name ("" = the task's default).
  c.tfds_data_dir = ""
  c.tfds_name = ""
  # Percent of documents held out for validation (the paper held out 10% of Wikipedia): the
  # last N% of TFDS train for wiki/flan_v2, a fixed hash bucket of documents for offline.
  c.validation_percent = 10
  # Pack several documents per row (segment ids, positions restarting per document); False puts
  # one document chunk per row.
  c.pack = True
  # Shuffle buffer in documents for the streaming TFDS tasks (the offline corpus is permuted
  # whole each epoch).
  c.shuffle_buffer_size = 10_000
  # task="mixture": "task:rows,task:rows,..." — every global batch holds exactly `rows` rows of
  # each component task, in this order (the rows must add up to the global batch size), e.g.
  # "offline:8,probe_copy:2,probe_reverse:2,probe_recall:4". Must be "" for any other task.
  c.mixture = ""
  # Synthetic probes (rope_jax.data.probes): token ids 5.. are `num_symbols` symbols (copied,
  # reversed, or recalled values), then `num_keys` recall keys; `num_queries` recall queries per
  # row. Rows are filled to the sequence length, so longer eval lengths give longer probes.
  c.probe = ml_collections.ConfigDict()
  c.probe.num_symbols = 64
  c.probe.num_keys = 1024
  c.probe.num_queries = 4
  # Long-context probes (rope_jax.data.long_probes; tasks probe_passkey, probe_mqar,
  # probe_flipflop), train short / test long. passkey: a `digits`-digit number at `depth` (the
  # fraction of filler before it, in [0, 1]; -1 = uniform per example). mqar (zoology): `num_pairs`
  # key-value pairs (keys of `num_keys`, values of `num_values`), each queried once at a
  # power-law gap with exponent `power_a`. flipflop: each instruction is "ignore" with
  # probability `p_ignore` (0.8 = Liu et al.'s training mix; 0.1 dense, 0.98 sparse tests).
  c.long_probe = ml_collections.ConfigDict()
  c.long_probe.passkey_digits = 5
  c.long_probe.passkey_depth = -1.0
  c.long_probe.mqar_num_pairs = 8
  c.long_probe.mqar_num_keys = 64
  c.long_probe.mqar_num_values = 64
  c.long_probe.mqar_power_a = 0.01
  c.long_probe.flipflop_p_ignore = 0.8
  return c


def _check_keys(section: Any, want: ml_collections.ConfigDict, where: str) -> None:
  keys, known = set(section.keys()), set(want.keys())
  if keys - known:
    raise ValueError(f"Unknown key(s) {sorted(keys - known)} in {where}; known: {sorted(known)}.")
  if known - keys:
    raise ValueError(f"Missing key(s) {sorted(known - keys)} in {where}.")


def validate(section: Any) -> ml_collections.ConfigDict:
  """A checked copy of a ``config.data`` section (a ConfigDict or mapping).

  Raises:
    ValueError: an unknown or missing key, an unknown task, a value of the wrong type or range.
  """
  section = ml_collections.ConfigDict(
      section.to_dict() if hasattr(section, "to_dict") else dict(section))
  default = default_config()
  _check_keys(section, default, "config.data")
  _check_keys(section.probe, default.probe, "config.data.probe")
  _check_keys(section.long_probe, default.long_probe, "config.data.long_probe")
  check_task(section.task)
  if not isinstance(section.mixture, str):
    raise ValueError(f"config.data.mixture must be a string, got {section.mixture!r}.")
  if section.task == "mixture":
    parse_mixture(section.mixture)
  elif section.mixture:
    raise ValueError(f"config.data.mixture={section.mixture!r} is set but config.data.task="
                     f"{section.task!r}; set task='mixture' to use it.")
  for key in ("vocab_path", "tfds_data_dir", "tfds_name"):
    if not isinstance(section[key], str):
      raise ValueError(f"config.data.{key} must be a string, got {section[key]!r}.")
  if not isinstance(section.pack, bool):
    raise ValueError(f"config.data.pack must be a bool, got {section.pack!r}.")
  lp = section.long_probe
  ints = {"validation_percent": (section.validation_percent, 1, 99),
          "shuffle_buffer_size": (section.shuffle_buffer_size, 1, None),
          **{f"probe.{k}": (section.probe[k], 1, None) for k in default.probe},
          **{f"long_probe.{k}": (lp[k], 1, None) for k in default.long_probe
             if isinstance(default.long_probe[k], int)}}
  for key, (value, lo, hi) in ints.items():
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (
        hi is not None and value > hi):
      raise ValueError(f"config.data.{key} must be an int in [{lo}, {hi or 'inf'}], got {value!r}.")
  floats = {"passkey_depth": lp.passkey_depth, "mqar_power_a": lp.mqar_power_a,
            "flipflop_p_ignore": lp.flipflop_p_ignore}
  for key, value in floats.items():
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ValueError(f"config.data.long_probe.{key} must be a number, got {value!r}.")
  if not (0.0 <= lp.passkey_depth <= 1.0 or lp.passkey_depth == -1.0):
    raise ValueError(f"config.data.long_probe.passkey_depth must be in [0, 1] or -1 (uniform "
                     f"random), got {lp.passkey_depth!r}.")
  if not 0.0 < lp.mqar_power_a <= 1.0:
    raise ValueError(f"config.data.long_probe.mqar_power_a must be in (0, 1], got "
                     f"{lp.mqar_power_a!r}.")
  if not 0.0 <= lp.flipflop_p_ignore < 1.0:
    raise ValueError(f"config.data.long_probe.flipflop_p_ignore must be in [0, 1), got "
                     f"{lp.flipflop_p_ignore!r}.")
  if lp.mqar_num_pairs > lp.mqar_num_keys:
    raise ValueError(f"config.data.long_probe.mqar_num_pairs ({lp.mqar_num_pairs}) must be <= "
                     f"mqar_num_keys ({lp.mqar_num_keys}): the keys are distinct.")
  return section
