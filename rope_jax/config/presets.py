"""The named positional encodings (``pe=`` of a config argument) and their inverse.

:data:`PE_PRESETS` maps a preset name to a ``RopeConfig`` variant and fraction; :func:`describe`
goes the other way, from a ``ModelConfig`` to a short readable name for titles and tables
(``"0.75-RoPE θ=10k"``). Layer 0: imports only the schema.
"""

from __future__ import annotations

from rope_jax.config.schema import ModelConfig, RopeConfig

# name -> (variant, fraction or None for "take p from the argument").
PE_PRESETS: dict[str, tuple[str, float | None]] = {
    "nope": ("p_rope", 0.0),
    "rope": ("p_rope", 1.0),
    "p_rope": ("p_rope", None),
    "reversed": ("reversed", None),
    "partial": ("partial", None),
    "alibi": ("p_rope", 0.0),
    "fire": ("p_rope", 0.0),
    "sinusoidal": ("p_rope", 0.0),
    "rnope": ("p_rope", 1.0),
}
# Further fields a preset sets, by dotted path under the config (beyond variant and fraction).
PE_EXTRAS: dict[str, dict[str, object]] = {
    "alibi": {"model.rope.bias": "alibi"},  # ALiBi on NoPE layers (Press et al.).
    "fire": {"model.rope.bias": "fire"},  # FIRE on NoPE layers (Li et al.).
    "sinusoidal": {"model.absolute_encoding": "sinusoidal"},  # NoPE with absolute positions.
    # Interleaved RoPE / NoPE ("RNoPE", Llama 4 / Cohere): every 4th layer is NoPE.
    "rnope": {"model.global_every": 4, "model.global_rope.fraction": 0.0},
}
DEFAULT_P = 0.75  # The fraction of p_rope / reversed / partial when the argument gives no p.
BIAS_NAMES = {"alibi": "ALiBi", "fire": "FIRE"}


def describe_rope(rope: RopeConfig) -> str:
  """A short name of one encoding, e.g. ``"0.75-RoPE θ=10k"`` or ``"NoPE"``.

  ``p_rope`` with p = 0 is NoPE and p = 1 is RoPE (the paper's names); ``reversed`` removes the
  highest frequencies instead of the lowest; ``partial`` is GPT-NeoX partial rotary.
  """
  theta = f"θ={rope.theta / 1000:g}k" if rope.theta >= 1000 else f"θ={rope.theta:g}"
  p = f"{rope.fraction:g}"
  if rope.variant == "p_rope" and rope.fraction == 0:
    return BIAS_NAMES.get(rope.bias, "NoPE")
  if rope.variant == "p_rope":
    name = "RoPE" if rope.fraction == 1 else f"{p}-RoPE"
  elif rope.variant == "reversed":
    name = f"{p}-RoPE reversed"
  elif rope.variant == "partial":
    name = f"partial rotary {p}"
  else:
    name = f"{rope.variant} p={p}"
  if rope.bias in BIAS_NAMES:
    name = f"{BIAS_NAMES[rope.bias]} + {name}"
  extras = [theta]
  if rope.type != "default":
    extras.append(f"{rope.type}×{rope.factor:g}" if rope.factor is not None else rope.type)
  if rope.scale_factor != 1:
    extras.append(f"scale {rope.scale_factor:g}")
  if rope.layout != "split_half":
    extras.append(rope.layout)
  return f"{name} {' '.join(extras)}"


def describe(cfg: ModelConfig) -> str:
  """A short name of the model's positional encoding for titles, e.g. ``"0.75-RoPE θ=10k"``.

  With Gemma-4 style global layers: ``"... ; every 6th layer 0.25-RoPE θ=10k"``.
  """
  text = describe_rope(cfg.rope)
  if cfg.absolute_encoding != "none":
    text += f" + {cfg.absolute_encoding} absolute"
  if cfg.global_rope is not None:
    text += f"; every {cfg.global_every}th layer {describe_rope(cfg.global_rope)}"
  return text
