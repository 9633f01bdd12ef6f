"""Writes tiny random Llama and Mistral checkpoints and their transformers logits (run once).

The reference is Hugging Face ``transformers``' own PyTorch ``LlamaForCausalLM`` /
``MistralForCausalLM`` (CPU, float32; weights drawn with std 0.2 so attention is far from
uniform): rope_jax's import is checked against an implementation it
shares no code with. For each model::

    tests/testdata/<name>/model.safetensors     save_pretrained (the safetensors library)
    tests/testdata/<name>/config.json           transformers >= 5 schema (rope_parameters)
    tests/testdata/<name>/config_legacy.json    the same model in the rope_theta + rope_scaling
                                                schema (transformers 4), written by this script
    tests/testdata/<name>/tokens.npy            int32 [B, L]
    tests/testdata/<name>/logits.npy            float32 [B, L, V], transformers on the tokens

``llama_tiny_gqa``: GQA (4 query, 2 kv heads), untied ``lm_head``, llama3 scaling with
``original_max_position_embeddings`` = 16 so that it changes every pair but the fastest within
the 48-token test (the script checks that the logits differ from the unscaled model's).
``mistral_tiny_mqa``: MQA, head_dim 32 != hidden/heads, θ = 1e6, tied embeddings.

    pip install torch==2.13.0 transformers safetensors
    python tools/make_hf_fixtures.py
"""

from __future__ import annotations

import json
import os

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTDATA = os.path.join(REPO_ROOT, "tests", "testdata")
BATCH, LENGTH = 2, 48
LLAMA3 = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
              original_max_position_embeddings=16)
MODELS = {
    "llama_tiny_gqa": ("LlamaForCausalLM", dict(
        vocab_size=96, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
        max_position_embeddings=128, tie_word_embeddings=False, initializer_range=0.2,
        hidden_act="silu",
        rope_parameters=dict(rope_theta=10_000.0, **LLAMA3))),
    "mistral_tiny_mqa": ("MistralForCausalLM", dict(
        vocab_size=96, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=32, rms_norm_eps=1e-6,
        max_position_embeddings=128, tie_word_embeddings=True, initializer_range=0.2,
        hidden_act="silu",
        sliding_window=None, rope_parameters=dict(rope_theta=1_000_000.0, rope_type="default"))),
}


def legacy_config(config: dict) -> dict:
  """The transformers-4 schema of a config.json: ``rope_theta`` + ``rope_scaling``."""
  out = {k: v for k, v in config.items() if k != "rope_parameters"}
  params = dict(config["rope_parameters"])
  out["rope_theta"] = params.pop("rope_theta")
  out["rope_scaling"] = None if params.get("rope_type", "default") == "default" else params
  return out


def main() -> None:
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  for name, (arch, fields) in MODELS.items():
    cls = getattr(transformers, arch)
    config = cls.config_class(**fields)
    model = cls(config).eval()
    with torch.no_grad():  # Norm scales away from 1 so that a wrong (1 + scale) shows.
      for p_name, p in model.named_parameters():
        if p_name.endswith("norm.weight"):
          p.copy_(1.0 + 0.3 * torch.randn_like(p))
    out = os.path.join(TESTDATA, name)
    model.save_pretrained(out, safe_serialization=True)
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, fields["vocab_size"], (BATCH, LENGTH)).astype(np.int32)
    with torch.no_grad():
      logits = model(torch.from_numpy(tokens.astype(np.int64))).logits.numpy()
    np.save(os.path.join(out, "tokens.npy"), tokens)
    np.save(os.path.join(out, "logits.npy"), logits.astype(np.float32))
    with open(os.path.join(out, "config.json")) as f:
      saved = json.load(f)
    with open(os.path.join(out, "config_legacy.json"), "w") as f:
      json.dump(legacy_config(saved), f, indent=2, sort_keys=True)
    if saved["rope_parameters"].get("rope_type") != "default":
      plain = dict(fields, rope_parameters=dict(rope_theta=saved["rope_parameters"]["rope_theta"],
                                                rope_type="default"))
      unscaled = cls(cls.config_class(**plain)).eval()
      unscaled.load_state_dict(model.state_dict())
      with torch.no_grad():
        base = unscaled(torch.from_numpy(tokens.astype(np.int64))).logits.numpy()
      diff = (np.abs(base - logits).max(-1) / np.abs(logits).max(-1)).min(0)  # Relative, [L].
      print(f"{name}: scaling changes logits by {diff[1]:.2e} (relative) at position 1, "
            f"{diff[8:].min():.2e} at least from position 8")
      assert diff[8:].min() > 1e-2, "the scaling must matter within the test length"
    print(f"wrote {out}: {sorted(os.listdir(out))}")


if __name__ == "__main__":
  main()
