"""A ~100M-parameter Gemma-shaped decoder (108M; 84M non-embedding) for the train-step benchmark.

10 layers, d_model 768, 12 query heads with one key/value head (MQA, as Gemma 2B), head_dim 64,
GeGLU width 3072, vocabulary 32,768 (tied). Trains on CPU only for a few benchmark steps; on an
accelerator it is a quick p-RoPE ablation size::

    python -m rope_jax.train --config=configs/small_100m.py:pe=p_rope,p=0.75 --workdir=/tmp/s100m
"""

from rope_jax.config import base as config_lib


def get_config(arg=None):
  config = config_lib.base_config()
  config.model.update(
      vocab_size=32_768,
      num_layers=10,
      embed_dim=768,
      num_heads=12,
      num_kv_heads=1,
      head_dim=64,
      mlp_dim=3072,
  )
  config.train.update(global_batch_size=32, seq_len=512, num_steps=10_000, warmup_steps=500,
                      learning_rate=6e-4)
  config.checkpoint.save_every_steps = 1000
  config.eval.every_steps = 1000
  return config_lib.apply_arg(config, arg)
