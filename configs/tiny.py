"""Tiny Gemma-shaped decoder that trains in minutes on a 2-core CPU (the default job).

    python -m rope_jax.train --config=configs/tiny.py:pe=p_rope,p=0.75 --workdir=/tmp/tiny
"""

from rope_jax.config import base as config_lib


def get_config(arg=None):
  config = config_lib.base_config()
  config.model.update(
      vocab_size=2048,
      num_layers=4,
      embed_dim=128,
      num_heads=4,
      num_kv_heads=1,  # MQA, as Gemma 2B.
      head_dim=64,
      mlp_dim=512,
  )
  # 300 steps of batch 8 x 128 tokens: a few minutes on 2 CPU cores.
  config.checkpoint.save_every_steps = 100
  return config_lib.apply_arg(config, arg)
