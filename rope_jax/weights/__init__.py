"""Weights from elsewhere: official Gemma 1 checkpoints (``gemma``), streamed ``.safetensors``
I/O (``safetensors_io``), and params-only rope_jax checkpoints (``checkpoints``)."""
