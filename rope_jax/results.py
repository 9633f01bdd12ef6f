"""CLI: ``python -m rope_jax.results``; the library is :mod:`rope_jax.sweeps.results`.

Exit codes as every rope_jax CLI (``rope_jax.errors``): a bad ``--root`` / ``--workdirs`` /
``--scale`` is one line and exit 2; storage errors exit 4.
"""

from __future__ import annotations

from rope_jax import entrypoint


def main(argv=None) -> int:
  from rope_jax.sweeps import results  # pylint: disable=g-import-not-at-top
  return results.main(argv)


if __name__ == "__main__":
  entrypoint.run_plain(main)
