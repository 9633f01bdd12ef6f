"""Submitting rope_jax configs to Cloud TPU VMs (single host and pods); see launch/tpu.py."""
