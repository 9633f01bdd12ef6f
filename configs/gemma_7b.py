"""Gemma 7B (Gemma 1): 28 layers, d_model 3072, 16 heads (MHA), head_dim 256 (SPEC.md §3).

8,538,074,112 parameters (786,825,216 embedding). The model the paper analyses (§2b-2d). Training
defaults follow the paper's from-scratch schedule (SPEC.md §2g: batch 512, 8,192-token context,
10,000 steps, Wikipedia), as for ``configs/gemma_2b.py``.
"""

from rope_jax.config import base as config_lib


def get_config(arg=None):
  config = config_lib.base_config()
  config.model.update(
      vocab_size=256_128,
      num_layers=28,
      embed_dim=3072,
      num_heads=16,
      num_kv_heads=16,
      head_dim=256,
      mlp_dim=24_576,
  )
  config_lib.apply_paper_schedule(config)
  return config_lib.apply_arg(config, arg)
