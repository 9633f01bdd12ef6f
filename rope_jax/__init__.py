"""rope_jax: RoPE, p-RoPE and the analyses of "Round and Round We Go!" in JAX/Flax."""

__version__ = "0.1.0"
