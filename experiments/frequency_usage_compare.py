r"""Frequency usage and positional heads of several trained runs, side by side (SPEC §2b–2c).

    python -m experiments.frequency_usage_compare \
        --workdirs=runs/table2_cpu/mixture/nope,runs/table2_cpu/mixture/rope-10k --out=/tmp/cmp

Every run (RoPE, p-RoPE, NoPE, ...) is restored onto the host CPU (parameters only), run on the
same prompts (default: the ten Shakespeare quotes of ``rope_jax/analysis/prompts.txt``) with its
own vocabulary, and measured as ``python -m rope_jax.analyze`` does (``rope_jax.analysis.measure``
and ``report``). Writes into ``--out``:

* ``frequency_usage_compare.png``: one column per run (titled with its positional encoding),
  rows queries / keys / values (the control); each panel is layer × RoPE chunk (high → low
  frequency) of the mean chunk 2-norm over heads and tokens. One colour scale per row, shared by
  the runs, so columns compare directly.
* ``positional_heads_compare.png``: the same columns, rows diagonal / previous-token score,
  each layer × head (0..1).
* ``frequency_usage_compare.json`` / ``.csv``: the numbers behind both figures.
* ``<run name>/``: each run's own ``rope_jax.analyze`` frequency-usage and heads outputs.

``compare(workdirs, out)`` is the same as a function (the CPU Table 2 job calls it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from rope_jax import errors
from rope_jax.analysis import measure as measure_lib
from rope_jax.analysis import report
from rope_jax.checkpoint import rundir

ROW_TITLES = {"q": "queries q", "k": "keys k", "v": "values v (control)"}


def run_name(workdir: str) -> str:
  """The run's directory name (the Table 2 row key for ``runs/table2_cpu/<task>/<row>``)."""
  return os.path.basename(os.path.normpath(workdir))


def _unique_names(workdirs: Sequence[str]) -> list[str]:
  names = [run_name(w) for w in workdirs]
  seen: dict[str, int] = {}
  out = []
  for name in names:
    seen[name] = seen.get(name, 0) + 1
    out.append(name if names.count(name) == 1 else f"{name}_{seen[name]}")
  return out


def measure_run(workdir: str, texts: Sequence[str], *, step: int | None = None,
                vocab_path: str = "", batch_size: int = 16,
                ) -> tuple[rundir.Restored, measure_lib.Measurement, dict[str, Any]]:
  """Restores one run on the host CPU and measures it on ``texts``.

  Returns:
    ``(restored, measurement, info)`` (``info``: ``report.run_info``).
  """
  import jax  # pylint: disable=g-import-not-at-top
  with jax.default_device(jax.devices("cpu")[0]):
    restored = measure_lib.load_run(workdir, step)
    tokenizer = measure_lib.run_tokenizer(restored, vocab_path)
    prompts = measure_lib.encode_prompts(tokenizer, texts, restored.model_config)
    m = measure_lib.measure(restored.model, prompts, batch_size=batch_size)
  return restored, m, report.run_info(restored, workdir, texts, m)


def _frequency_marks(ax: Any, freqs: np.ndarray, *, top_axis: bool) -> None:
  """Marks where the identity (g = 0) chunks start; optionally a top axis in rad/token."""
  identity = np.flatnonzero(freqs == 0)
  if identity.size and identity[0] > 0:
    x = identity[0] - 0.5
    ax.axvline(x, color="w", ls="--", lw=1.2)
    ax.annotate("g = 0 →", (x, 0.03), xycoords=("data", "axes fraction"), xytext=(3, 0),
                textcoords="offset points", color="w", ha="left", fontsize=7)
  if top_axis:
    ticks = np.unique(np.linspace(0, len(freqs) - 1, min(len(freqs), 4)).round().astype(int))
    top = ax.secondary_xaxis("top")
    top.set_ticks(ticks, labels=[f"{freqs[t]:.0e}" if freqs[t] else "0" for t in ticks])
    top.tick_params(labelsize=7)
    top.set_xlabel("frequency g_k (rad/token)", fontsize=8)


def plot_compare(columns: Sequence[str], panels: Sequence[dict[str, np.ndarray]], *,
                 rows: dict[str, str], xlabel: str, ylabel: str, units: str,
                 fixed_range: tuple[float, float] | None = None, cmap: str = "viridis",
                 freqs: Sequence[np.ndarray | None] | None = None, title: str = "") -> Any:
  """A grid of heatmaps: one column per run, one row per entry of ``rows``.

  Args:
    columns: column titles (one per run).
    panels: per run, ``{row key: [num_rows, num_cols]}``.
    rows: ``{row key: row title}``.
    xlabel, ylabel: axis labels of every panel.
    units: colour bar label; one colour bar (and scale) per row, shared by the runs.
    fixed_range: ``(vmin, vmax)`` for every row; default ``0 .. max over the row``.
    freqs: per run, the ``[H/2]`` chunk frequencies when the columns are RoPE chunks: adds the
      frequency (rad/token) axis on top and marks the identity (g = 0) chunks.
  """
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(3.6 * len(columns) + 1.2, 2.9 * len(rows) + 0.8), layout="constrained")
  axes = fig.subplots(len(rows), len(columns), squeeze=False)
  for r, (key, row_title) in enumerate(rows.items()):
    if fixed_range is None:
      vmax = max(float(np.max(p[key])) for p in panels) or 1.0
      vmin = 0.0
    else:
      vmin, vmax = fixed_range
    image = None
    for c, (column, panel) in enumerate(zip(columns, panels)):
      ax = axes[r, c]
      image = ax.imshow(np.asarray(panel[key]), aspect="auto", interpolation="nearest",
                        cmap=cmap, vmin=vmin, vmax=vmax)
      ax.set_title(f"{column}\n{row_title}" if r == 0 else row_title, fontsize=9)
      if freqs is not None and freqs[c] is not None:
        _frequency_marks(ax, np.asarray(freqs[c]), top_axis=r == 0)
      ax.set_xlabel(xlabel, fontsize=8)
      ax.set_ylabel(ylabel, fontsize=8)
      ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
      ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
      ax.tick_params(labelsize=7)
    fig.colorbar(image, ax=list(axes[r, :]), label=units, shrink=0.9)
  if title:
    fig.suptitle(title)
  return fig


def compare(workdirs: Sequence[str], out: str, *, prompts: str | None = None,
            step: int | None = None, vocab_path: str = "", batch_size: int = 16,
            per_run: bool = True) -> list[str]:
  """Side-by-side frequency usage and positional-head scores of ``workdirs``.

  Args:
    workdirs: run directories (each with ``checkpoints/``).
    out: output directory (created).
    prompts: prompts file (default: the built-in Shakespeare quotes).
    step: checkpoint step for every run (default: each run's newest intact one).
    vocab_path: overrides every run's ``data.vocab_path``.
    batch_size: prompts per forward pass.
    per_run: also write each run's own analyze outputs under ``out/<run name>/``.

  Returns:
    The written paths.

  Raises:
    errors.BadInputError, errors.NoCheckpointError: as ``report.analyze``.
  """
  from rope_jax.analysis import plots  # pylint: disable=g-import-not-at-top
  if not workdirs:
    raise errors.BadInputError("compare needs at least one run directory.")
  texts = measure_lib.read_prompts(prompts)
  names = _unique_names(workdirs)
  runs = []
  for name, workdir in zip(names, workdirs):
    restored, m, info = measure_run(workdir, texts, step=step, vocab_path=vocab_path,
                                    batch_size=batch_size)
    runs.append((name, workdir, restored, m, info))
  os.makedirs(out, exist_ok=True)
  paths: list[str] = []

  if per_run:
    for name, _, restored, m, info in runs:
      cfg = restored.model_config
      freqs = measure_lib.chunk_frequencies(cfg)
      run_out = os.path.join(out, name)
      paths += report.write_frequency_usage(m, info, run_out, freqs=freqs,
                                            layers=sorted({0, cfg.num_layers - 1}))
      paths += report.write_heads(m, info, run_out, freqs=freqs, epsilon=0.5, top_k=3)

  columns = [f"{name}: {info['positional_encoding']}\nstep {restored.step}"
             for name, _, restored, _, info in runs]
  subtitle = (f"{len(texts)} prompts; mean over heads and tokens; one colour scale per row "
              "shared by the runs")
  fig = plot_compare(
      columns, [{k: m.usage[k].mean(axis=1) for k in ROW_TITLES} for _, _, _, m, _ in runs],
      rows=ROW_TITLES, xlabel="RoPE chunk k (high → low frequency)", ylabel="layer",
      units="mean chunk 2-norm ‖x⁽ᵏ⁾‖\n(activation units)",
      freqs=[measure_lib.chunk_frequencies(r.model_config) for _, _, r, _, _ in runs],
      title=f"Frequency usage per layer by positional encoding\n{subtitle}")
  paths.append(plots.save_figure(fig, os.path.join(out, "frequency_usage_compare.png")))
  fig = plot_compare(
      columns, [m.scores for _, _, _, m, _ in runs],
      rows={"diagonal": "diagonal score (mean α_{i,i})",
            "previous_token": "previous-token score (mean α_{i,i-1})"},
      xlabel="head", ylabel="layer", units="mean attention weight α\n(probability)",
      fixed_range=(0.0, 1.0),
      cmap="magma", title=f"Positional heads by positional encoding\n{len(texts)} prompts")
  paths.append(plots.save_figure(fig, os.path.join(out, "positional_heads_compare.png")))

  result = {"prompts": list(texts), "runs": []}
  csv_rows = []
  for name, workdir, restored, m, info in runs:
    freqs = measure_lib.chunk_frequencies(restored.model_config)
    per_layer = {k: m.usage[k].mean(axis=1) for k in ROW_TITLES}
    result["runs"].append({
        "name": name, "workdir": workdir, "step": restored.step,
        "positional_encoding": info["positional_encoding"], "model": info["model"],
        "num_tokens": m.num_tokens, "num_queries": m.num_queries,
        "chunk_frequencies": None if freqs is None else np.round(freqs, 10).tolist(),
        "frequency_usage_per_layer": {k: np.round(v, 5).tolist() for k, v in per_layer.items()},
        **{kind: np.round(m.scores[kind], 5).tolist() for kind in measure_lib.HEAD_KINDS},
    })
    for k, values in per_layer.items():
      for (layer, chunk), value in np.ndenumerate(values):
        csv_rows.append((name, info["positional_encoding"], k, layer, chunk,
                         "" if freqs is None else f"{freqs[chunk]:.6g}", f"{value:.6g}"))
  paths.append(report.write_json(
      os.path.join(out, "frequency_usage_compare.json"), result))
  paths.append(report.write_csv(
      os.path.join(out, "frequency_usage_compare.csv"),
      ("run", "positional_encoding", "activation", "layer", "chunk", "frequency_rad_per_token",
       "mean_chunk_norm"), csv_rows))
  return paths


def _define_flags() -> None:
  """The script's flags (defined by :func:`main` only, so the Table 2 job, which has its own
  --workdir, can import compare())."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_list("workdirs", None, "Comma-separated run directories (one column each).")
  flags.DEFINE_string("out", None, "Output directory.")
  flags.DEFINE_string("prompts", None, "Prompts file (default: built-in Shakespeare quotes).")
  flags.DEFINE_integer("step", None, "Checkpoint step of every run (default: newest).")
  flags.DEFINE_string("vocab_path", "", "SentencePiece model overriding the runs' vocabulary.")
  flags.DEFINE_integer("batch_size", 16, "Prompts per forward pass.")


def _run(argv: Sequence[str]) -> None:
  import sys  # pylint: disable=g-import-not-at-top
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {list(argv[1:])}")
  f = flags.FLAGS
  try:
    if not f.workdirs or not f.out:
      raise errors.BadInputError("--workdirs and --out are required.")
    paths = compare(f.workdirs, f.out, prompts=f.prompts, step=f.step, vocab_path=f.vocab_path,
                    batch_size=f.batch_size)
  except (errors.RopeJaxError, ValueError, OSError) as e:
    print(f"frequency_usage_compare: error: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(errors.exit_code(e))
  print(f"Wrote {len(paths)} files to {f.out}")


def main(argv: Sequence[str] | None = None) -> None:
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(_run, argv=argv)


if __name__ == "__main__":
  main()
