"""Gemma 2B (Gemma 1): 18 layers, d_model 2048, 8 query heads, MQA, head_dim 256 (SPEC.md §3).

2,506,434,560 parameters (524,550,144 embedding). The paper's Table 2 model, trained from scratch
with the paper's schedule (SPEC.md §2g) by default: batch 512, 8,192-token context, 10,000 steps,
on Wikipedia (``data=flan_v2`` for FlanV2). One Table 2 cell::

    configs/gemma_2b.py:pe=p_rope,p=0.75,data=wiki

The Table 2 grid is ``rope_jax.grid``. wiki / flan_v2 need Gemma's tokenizer
(``--config.data.vocab_path=gs://.../tokenizer.model``) and the prepared TFDS data
(``--config.data.tfds_data_dir=gs://.../tensorflow_datasets``).
"""

from rope_jax import config_lib


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
  # The paper's schedule (SPEC.md §2g). The paper does not state the optimizer, learning rate,
  # warmup or decay: learning_rate / warmup_steps below are our choice for a ~2B model, not the
  # paper's.
  config.train.update(
      global_batch_size=512,
      seq_len=8192,
      num_steps=10_000,
      learning_rate=3e-4,
      warmup_steps=1000,
  )
  config.eval.every_steps = 1000
  # Eval runs at 1x/2x/4x the training length; the full 512-row batch at 32k tokens would need
  # ~1 TB of logits per v5p-32 chip. 64 rows divide any data-parallel size up to 64.
  config.eval.global_batch_size = 64
  config.checkpoint.save_every_steps = 500
  config.data.task = "wiki"
  return config_lib.apply_arg(config, arg)
