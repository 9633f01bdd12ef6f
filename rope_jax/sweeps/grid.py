"""The Table 2 grid (SPEC.md §2f): the one definition the local runner, the TPU launcher and the
results collector share.

Seven positional encodings (rows) × datasets (columns). Each cell is a named config argument,
so any single cell can be re-run by hand::

    python -m rope_jax.train --config=configs/gemma_2b.py:pe=p_rope,p=0.75,data=wiki \
        --workdir=gs://BUCKET/table2/wiki/p075-rope

Scales:

* ``"paper"``: Gemma 2B from scratch (``configs/gemma_2b.py``, whose defaults are the paper's
  schedule: batch 512, 8,192-token context, 10,000 steps) on ``wiki`` and ``flan_v2``: the 14
  runs of Table 2.
* ``"cpu"``: the same seven rows on the tiny CPU model (``configs/tiny.py``), one run each on a
  mixture of the offline corpus and the synthetic probes; the main job,
  ``experiments/table2_cpu.py``, runs its own design (``rope_jax.sweeps.regime``).

The schedule of a scale (batch, length, steps) is never restated here: it is what the scale's
config file gives (``configs/gemma_2b.py`` applies ``rope_jax.config.base.apply_paper_schedule``),
read by :meth:`Scale.schedule`. Importing this module is light (no JAX); :func:`expand` loads the
scale's config once for its number of steps. Loading a cell's config is
``rope_jax.config.base.load_config(run.config)`` plus ``run.overrides``.
"""

from __future__ import annotations

import dataclasses
import functools
import posixpath
from typing import Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of Table 2.

  Attributes:
    key: short slug used in run names, TPU names and workdirs (``[a-z0-9-]``).
    label: the paper's label, e.g. ``"0.75-RoPE_reversed"``.
    arg: the config argument selecting the encoding (``rope_jax.config.base.apply_arg``).
    paper: the paper's validation perplexity per dataset (SPEC.md §2f, 4 decimals).
  """

  key: str
  label: str
  arg: str
  paper: Mapping[str, float]


# SPEC.md §2f, in the paper's order.
TABLE2_ROWS: tuple[Row, ...] = (
    Row("nope", "NoPE", "pe=nope", {"wiki": 4.8594, "flan_v2": 6.6429}),
    Row("rope-10k", "RoPE (θ = 10k)", "pe=rope", {"wiki": 4.4627, "flan_v2": 6.4429}),
    Row("rope-500k", "RoPE (θ = 500k)", "pe=rope,theta=500000",
        {"wiki": 4.4485, "flan_v2": 6.4593}),
    Row("p075-reversed", "0.75-RoPE_reversed", "pe=reversed,p=0.75",
        {"wiki": 4.4592, "flan_v2": 6.4683}),
    Row("p075-partial", "0.75-RoPE_partial", "pe=partial,p=0.75",
        {"wiki": 4.4537, "flan_v2": 6.4562}),
    Row("p025-rope", "0.25-RoPE", "pe=p_rope,p=0.25", {"wiki": 4.5302, "flan_v2": 6.5111}),
    Row("p075-rope", "0.75-RoPE", "pe=p_rope,p=0.75", {"wiki": 4.4414, "flan_v2": 6.4422}),
)

DATASET_LABELS: dict[str, str] = {
    "wiki": "Wiki", "flan_v2": "FlanV2", "offline": "Offline corpus",
    "probe_copy": "Copy probe", "probe_reverse": "Reverse probe", "probe_recall": "Recall probe",
    "mixture": "Corpus + probes",
}


@dataclasses.dataclass(frozen=True)
class Scale:
  """How the grid is instantiated: which config file (and its schedule), datasets, overrides."""

  name: str
  config_file: str
  datasets: tuple[str, ...]
  overrides: Mapping[str, object] = dataclasses.field(default_factory=dict)

  def schedule(self) -> dict[str, int]:
    """``{"global_batch_size", "seq_len", "num_steps"}`` of the config file plus overrides."""
    return dict(_schedule(self.config_file, tuple(self.overrides.items())))


@functools.cache
def _schedule(config_file: str, overrides: tuple[tuple[str, object], ...],
              ) -> tuple[tuple[str, int], ...]:
  from rope_jax.config import base as config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config(config_file)
  config.update_from_flattened_dict(dict(overrides))
  return tuple((k, config.train[k]) for k in ("global_batch_size", "seq_len", "num_steps"))


# Rows per batch of the CPU scale's mixture (rope_jax.data: task "mixture").
CPU_MIXTURE = "offline:2,probe_copy:2,probe_reverse:2,probe_recall:2"
# Small probe alphabets (chance = 1/16) so that 300 CPU steps separate the encodings: with these,
# RoPE learns copy at the training length (100%) and fails at 2x.

SCALES: dict[str, Scale] = {
    "paper": Scale("paper", "configs/gemma_2b.py", ("wiki", "flan_v2")),
    # One column: every batch mixes corpus rows with the positional (copy, reverse) and semantic
    # (recall) probes, so one run per encoding gives both perplexity and probe accuracy.
    "cpu": Scale("cpu", "configs/tiny.py", ("mixture",),
                 overrides={"data.mixture": CPU_MIXTURE, "data.probe.num_symbols": 16,
                            "data.probe.num_keys": 32}),
}


@dataclasses.dataclass(frozen=True)
class Run:
  """One cell of the grid.

  Attributes:
    name: unique, ``[a-z0-9-]`` (usable as a TPU VM name suffix), e.g. ``"p075-rope-flan-v2"``.
    row: the Table 2 row.
    dataset: the data task (``config.data.task``).
    scale: the scale's name.
    config: the config spec, e.g. ``"configs/gemma_2b.py:pe=p_rope,p=0.75,data=wiki"``.
    overrides: extra ``--config.<key>=<value>`` overrides (keys without ``config.``).
    workdir_suffix: where the run lives under a root, ``"<dataset>/<row.key>"``.
    num_steps: the planned number of training steps.
  """

  name: str
  row: Row
  dataset: str
  scale: str
  config: str
  overrides: Mapping[str, object]
  workdir_suffix: str
  num_steps: int

  @property
  def paper_perplexity(self) -> float | None:
    """The paper's number for this cell (None off the paper's datasets)."""
    return self.row.paper.get(self.dataset)

  def workdir(self, root: str) -> str:
    """``root/<dataset>/<row>`` (``root`` local or ``gs://``)."""
    return posixpath.join(root.rstrip("/"), self.workdir_suffix)

  def train_flags(self, workdir: str) -> list[str]:
    """The ``rope_jax.train`` flags of this cell: ``--config``, ``--workdir``, overrides."""
    return ([f"--config={self.config}", f"--workdir={workdir}"]
            + [f"--config.{k}={v}" for k, v in self.overrides.items()])


def _slug(dataset: str) -> str:
  return dataset.replace("_", "-")


def expand(scale: str = "paper", *, datasets: Sequence[str] | None = None,
           rows: Sequence[str] | None = None) -> list[Run]:
  """The runs of the grid at ``scale``, rows in the paper's order, then datasets.

  Args:
    scale: a key of :data:`SCALES`.
    datasets: a subset of the scale's datasets (default: all of them).
    rows: a subset of row keys or labels (default: all seven).

  Raises:
    ValueError: unknown scale, dataset or row.
  """
  if scale not in SCALES:
    raise ValueError(f"Unknown scale {scale!r}; known: {sorted(SCALES)}.")
  sc = SCALES[scale]
  if datasets is None:
    datasets = sc.datasets
  bad = [d for d in datasets if d not in sc.datasets]
  if bad:
    raise ValueError(f"Unknown dataset(s) {bad} for scale {scale!r}; known: {sc.datasets}.")
  num_steps = sc.schedule()["num_steps"]
  selected = list(TABLE2_ROWS)
  if rows is not None:
    by_name = {r.key: r for r in TABLE2_ROWS} | {r.label: r for r in TABLE2_ROWS}
    bad = [r for r in rows if r not in by_name]
    if bad:
      raise ValueError(f"Unknown row(s) {bad}; known: {[r.key for r in TABLE2_ROWS]}.")
    wanted = {by_name[r].key for r in rows}
    selected = [r for r in TABLE2_ROWS if r.key in wanted]
  return [
      Run(name=f"{row.key}-{_slug(dataset)}", row=row, dataset=dataset, scale=scale,
          config=f"{sc.config_file}:{row.arg},data={dataset}", overrides=dict(sc.overrides),
          workdir_suffix=f"{dataset}/{row.key}", num_steps=num_steps)
      for row in selected for dataset in datasets
  ]


def find(name: str, scale: str = "paper") -> Run:
  """The run called ``name`` (e.g. ``"p075-rope-wiki"``) at ``scale``; ValueError if none."""
  runs = {r.name: r for r in expand(scale)}
  if name not in runs:
    raise ValueError(f"No grid cell {name!r} at scale {scale!r}; cells: {sorted(runs)}.")
  return runs[name]
