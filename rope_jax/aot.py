r"""Ahead-of-time TPU check: compile the real train step for a TPU topology on a CPU host.

    JAX_PLATFORMS=cpu python -m rope_jax.aot --config=configs/gemma_2b.py \
        --topology=v5p:4x4x4 --config.mesh.fsdp=-1 --config.mesh.data=1 \
        --config.train.global_batch_size=256 --config.train.seq_len=2048

With ``libtpu`` installed (``pip install -e '.[tpu]'``), ``jax.experimental.topologies`` gives
the TPU devices of a topology without a TPU (the library: ``rope_jax.training.aot_compile``); the same ``train_lib.Setup`` as training builds
the mesh and shardings over them, and ``.lower(...).compile()`` runs the TPU compiler. Prints
per-device memory (``memory_analysis()``: does it fit HBM?) and FLOPs per step
(``cost_analysis()`` next to the model FLOPs of ``rope_jax.training.flops``), before anyone pays for a
pod (MaxText's ``train_compile.py`` does the same). Exit code 1 if it does not fit; bad input
(config, topology, libtpu missing) is one line and exit 2 (README "Exit codes").
"""

from __future__ import annotations

from rope_jax import entrypoint


def define_flags() -> None:
  """The CLI's flags (called from :func:`cli` only, so importing this module defines none)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", None, "Experiment config file[:args].",
                                  lock_config=True)
  flags.DEFINE_string("topology", "v5p:2x2x1",
                      "TPU topology, e.g. v5p:4x4x4, v5e:4x4, v4:2x2x2.")
  flags.DEFINE_integer("num_slices", 1, "Number of slices (multi-slice DCN); the config's "
                       "mesh.dcn_* must multiply to this.")


def main(argv: list[str]) -> int:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  from rope_jax import errors  # pylint: disable=g-import-not-at-top
  flag_values = flags.FLAGS
  config = entrypoint.config_flag(flag_values)
  if len(argv) > 1:
    raise errors.BadInputError(f"Unexpected arguments: {argv[1:]}; flags are --name=value.")
  if config is None:
    raise errors.BadInputError("--config is required (e.g. --config=configs/gemma_2b.py).")
  from rope_jax.training import aot_compile  # pylint: disable=g-import-not-at-top
  report = aot_compile.compile_for_topology(config, flag_values.topology, flag_values.num_slices)
  print(report.summary(), flush=True)
  logging.info("AOT report: %s", report)
  return 1 if report.fits is False else 0


def cli(argv: list[str] | None = None) -> None:
  entrypoint.run_absl(main, define_flags, argv)


if __name__ == "__main__":
  cli()
