"""CLI: ``python -m rope_jax.results``; the library is :mod:`rope_jax.sweeps.results`."""

import sys

from rope_jax.sweeps import results

if __name__ == "__main__":
  sys.exit(results.main())
