"""The ``data`` section as a ConfigDict: ``default_config()`` and ``validate(section)``.

The section itself (keys, defaults, types, ranges) is ``rope_jax.config.schema.DataConfig``;
the task names (``TASKS``) and the mixture syntax live there too, so that config validation
never imports this package. Every key is read by ``rope_jax.data`` (``tasks.py``,
``pipeline.py``, ``probes.py``, ``long_probes.py``); the batch size, sequence length and seed
come from the experiment config and are passed to ``make_iterator`` as arguments. This module is light: it
imports neither TensorFlow nor seqio.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from rope_jax.config import base as config_lib
from rope_jax.config.schema import (  # pylint: disable=unused-import (re-exported)
    LONG_PROBE_KINDS, LONG_PROBE_SETTINGS, PROBE_KINDS, TASKS, TFDS_TASKS, DataConfig, check_task,
    parse_mixture)


def tfds_tasks_used(task: str, mixture: str = "") -> tuple[str, ...]:
  """The TFDS tasks ``task`` (with ``mixture`` when task="mixture") reads. The vocabulary rule:
  each needs Gemma's tokenizer in ``data.vocab_path`` and its prepared TFDS data; the offline and
  probe tasks default to the shipped vocabulary."""
  if task == "mixture":
    return tuple(t for t, _ in parse_mixture(mixture) if t in TFDS_TASKS)
  return (task,) if task in TFDS_TASKS else ()


def default_config() -> ml_collections.ConfigDict:
  """``DataConfig``'s defaults: the offline default job (CPython docs, 2048-piece vocabulary)."""
  return config_lib.section_config(DataConfig)


def validate(section: Any) -> ml_collections.ConfigDict:
  """A checked copy of a ``config.data`` section (a ConfigDict or mapping).

  Raises:
    ValueError: an unknown or missing key, an unknown task, a value of the wrong type or range
      (``DataConfig.from_dict``).
  """
  return config_lib.section_config(DataConfig.from_dict(config_lib.to_dict(section)))
