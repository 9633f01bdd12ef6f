"""Gemma 2B (Gemma 1): 18 layers, d_model 2048, 8 query heads, MQA, head_dim 256 (SPEC.md §3).

2,506,434,560 parameters (524,550,144 embedding). The paper's Table 2 model, trained from scratch
with the paper's schedule (SPEC.md §2g) by default: batch 512, 8,192-token context, 10,000 steps,
on Wikipedia (``data=flan_v2`` for FlanV2). One Table 2 cell::

    configs/gemma_2b.py:pe=p_rope,p=0.75,data=wiki

The Table 2 grid is ``rope_jax.sweeps.grid``. wiki / flan_v2 need Gemma's tokenizer
(``--config.data.vocab_path=gs://.../tokenizer.model``) and the prepared TFDS data
(``--config.data.tfds_data_dir=gs://.../tensorflow_datasets``).
"""

from rope_jax.config import base as config_lib


def get_config(arg=None):
  config = config_lib.base_config()
  config.model.update(
      vocab_size=256_128,
      num_layers=18,
      embed_dim=2048,
      num_heads=8,
      num_kv_heads=1,
      head_dim=256,
      mlp_dim=16_384,
  )
  config_lib.apply_paper_schedule(config)
  return config_lib.apply_arg(config, arg)
