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
* ``frequency_usage_profiles.png``: every run's per-chunk mean norm (over layers, heads and
  tokens) overlaid, queries and keys: how the norm distribution moves between encodings.
* ``frequency_usage_bands.csv`` / ``.md``: per run, the share of the mean q / k chunk norm in
  each of ``bands`` frequency bands (high → low), in one table.
* ``frequency_usage_compare.json`` / ``.csv``: the numbers behind the figures.
* ``<run name>/``: each run's own ``rope_jax.analyze`` frequency-usage and heads outputs.

``compare(workdirs, out)`` is the same as a function (the CPU Table 2 job calls it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from rope_jax import errors
from rope_jax.analysis import cauchy_schwarz as cs
from rope_jax.analysis import compare as compare_lib
from rope_jax.analysis import measure as measure_lib
from rope_jax.analysis import report
from rope_jax.checkpoint import rundir

ROW_TITLES = {"q": "queries q", "k": "keys k", "v": "values v (control)"}


def run_name(workdir: str) -> str:
  """The run's directory name (the Table 2 row key for ``runs/table2_cpu/<task>/<row>``); a seed
  directory ``<row>/s<k>`` (``experiments/table2_cpu.py``) is named ``<row>_s<k>``."""
  path = os.path.normpath(workdir)
  base = os.path.basename(path)
  if re.fullmatch(r"s\d+", base):
    return f"{os.path.basename(os.path.dirname(path))}_{base}"
  return base


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


def _run_bands(num_chunks: int, bands: int | str) -> list[tuple[int, int]]:
  """``bands`` for a run with ``num_chunks`` chunks; a range spec that does not fit this run's
  head becomes the same number of equal bands."""
  try:
    return cs.band_slices(num_chunks, bands)
  except ValueError:
    if isinstance(bands, int):
      raise
    return cs.band_slices(num_chunks, len(bands.split(",")))


def compare(workdirs: Sequence[str], out: str, *, prompts: str | None = None,
            step: int | None = None, vocab_path: str = "", batch_size: int = 16,
            per_run: bool = True, bands: int | str = 4) -> list[str]:
  """Side-by-side frequency usage and positional-head scores of ``workdirs``.

  Args:
    workdirs: run directories (each with ``checkpoints/``).
    out: output directory (created).
    prompts: prompts file (default: the built-in Shakespeare quotes).
    step: checkpoint step for every run (default: each run's newest intact one).
    vocab_path: overrides every run's ``data.vocab_path``.
    batch_size: prompts per forward pass.
    per_run: also write each run's own analyze outputs under ``out/<run name>/``.
    bands: frequency bands of the band table (``cauchy_schwarz.band_slices``: a number of equal
      bands or ``"0:4,4:32"``); runs with another head_dim get the same number of equal bands.

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
  fig = compare_lib.plot_compare(
      columns, [{k: m.usage[k].mean(axis=1) for k in ROW_TITLES} for _, _, _, m, _ in runs],
      rows=ROW_TITLES, xlabel="RoPE chunk k (high → low frequency)", ylabel="layer",
      units="mean chunk 2-norm ‖x⁽ᵏ⁾‖\n(activation units)",
      freqs=[measure_lib.chunk_frequencies(r.model_config) for _, _, r, _, _ in runs],
      title=f"Frequency usage per layer by positional encoding\n{subtitle}")
  paths.append(plots.save_figure(fig, os.path.join(out, "frequency_usage_compare.png")))
  fig = compare_lib.plot_compare(
      columns, [m.scores for _, _, _, m, _ in runs],
      rows={"diagonal": "diagonal score (mean α_{i,i})",
            "previous_token": "previous-token score (mean α_{i,i-1})"},
      xlabel="head", ylabel="layer", units="mean attention weight α\n(probability)",
      fixed_range=(0.0, 1.0),
      cmap="magma", title=f"Positional heads by positional encoding\n{len(texts)} prompts")
  paths.append(plots.save_figure(fig, os.path.join(out, "positional_heads_compare.png")))

  profiles = {f"{name}: {info['positional_encoding']}": {k: m.usage[k].mean(axis=(0, 1))
                                                       for k in ("q", "k")}
              for name, _, _, m, info in runs}
  fig = compare_lib.plot_profiles(
      profiles, panels={"q": "queries q", "k": "keys k"},
      freqs=[next((f for f in (measure_lib.chunk_frequencies(r.model_config)
                               for _, _, r, _, _ in runs) if f is not None and f.any()), None)],
      ylabel="mean chunk 2-norm (over layers, heads, tokens)",
      title=f"Frequency usage profiles by positional encoding\n{len(texts)} prompts")
  paths.append(plots.save_figure(fig, os.path.join(out, "frequency_usage_profiles.png")))
  band_rows = []
  for name, _, restored, m, info in runs:
    band_list = _run_bands(restored.model_config.head_dim // 2, bands)
    for k in ("q", "k"):
      shares = compare_lib.band_fractions(m.usage[k].mean(axis=(0, 1)), band_list)
      band_rows.append((name, info["positional_encoding"], k,
                        *(f"{cs.band_label(b)}: {x:.3f}" for b, x in zip(band_list, shares))))
  width = max(len(r) for r in band_rows) - 3
  band_header = ("run", "positional_encoding", "activation",
                 *(f"band {i} (high → low)" for i in range(width)))
  paths.append(report.write_csv(os.path.join(out, "frequency_usage_bands.csv"), band_header,
                                band_rows))
  paths.append(report.write_markdown(os.path.join(out, "frequency_usage_bands.md"), band_header,
                                     band_rows))

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
  flags.DEFINE_string("prompts", None, "Prompts file or shipped set name (shakespeare, italian, "
                      "chinese, code, arithmetic; default: shakespeare).")
  flags.DEFINE_string("bands", "4", "Frequency bands of the band table: a number of equal bands "
                      "or start:stop chunk ranges, e.g. 0:4,4:16,16:32.")
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
                    batch_size=f.batch_size,
                    bands=int(f.bands) if f.bands.isdigit() else f.bands)
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
