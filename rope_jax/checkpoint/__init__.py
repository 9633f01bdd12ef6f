"""Layer 2: Orbax checkpoints and the run directory (where a run keeps what)."""
