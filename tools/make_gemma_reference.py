"""Writes the tiny Gemma checkpoints and reference logits under tests/testdata/ (run once).

An independent implementation checks the importer: Hugging Face ``transformers``'
``GemmaForCausalLM`` (PyTorch, CPU, float32) builds two tiny random Gemma 1 models, one MQA
(like Gemma 2B) and one MHA (like Gemma 7B, so the gemma library's ``qkv_einsum`` path is
covered), each with a head_dim independent of d_model. For each model this writes::

    tests/testdata/<name>/hf/model.safetensors    HF layout, written by the safetensors library
    tests/testdata/<name>/hf/config.json
    tests/testdata/<name>/flax/                   the gemma library's Orbax params layout
    tests/testdata/<name>/reference_logits.npz    tokens [B, L] int32, logits [B, L, V] float32

The Flax layout follows the einsum equations of google-deepmind/gemma (``gemma/modules.py``):
``q_einsum/w [N, D, H]`` ('BTD,NDH->BTNH'), ``kv_einsum/w [2, K, D, H]`` ('BSD,CKDH->CBSKH') or
``qkv_einsum/w [3, N, D, H]`` when K = N, ``attn_vec_einsum/w [N, H, D]`` ('BTNH,NHD->BTD'),
``mlp/gating_einsum/w [2, D, F]`` (index 0 is the GELU'd gate; Gemma 1 has
``transpose_gating_einsum=False``) and ``mlp/linear/w [F, D]``, saved as the semi-flat dict that
``gemma.params.format_and_save_params`` writes (``{"transformer/layer_0/attn/q_einsum": {"w": ..}}``)
through ``orbax.checkpoint.PyTreeCheckpointer``. Before anything is written, a float64 numpy
forward pass that follows those einsum equations literally must reproduce the PyTorch logits, so
the Flax arrays are checked against Hugging Face independently of rope_jax.

Two interpreters (torch must stay out of the project's venv)::

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0 transformers safetensors numpy
    /tmp/torchenv/bin/python tools/make_gemma_reference.py --orbax_python=.venv/bin/python

The first stage (torch) writes the HF files and an npz of the Flax-layout arrays; it then runs
this file again under ``--orbax_python`` (the project's venv, which has orbax) to write the
Orbax checkpoint.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTDATA = os.path.join(REPO_ROOT, "tests", "testdata")

# name -> HF GemmaConfig fields. head_dim != hidden_size / num_attention_heads on purpose.
MODELS = {
    "gemma_tiny_mqa": dict(vocab_size=128, hidden_size=64, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                           head_dim=32),
    "gemma_tiny_mha": dict(vocab_size=128, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                           head_dim=24),
}
BATCH, LENGTH = 3, 12


def _gelu_tanh(x):
  return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def _rms_norm(x, scale, eps):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * (1.0 + scale)


def _apply_rope(x, positions, theta):
  """gemma's apply_rope: split-half pairs, timescale theta^(2i/H). x [B, L, N, H]."""
  h = x.shape[-1]
  timescale = theta ** (2.0 * np.arange(h // 2) / h)
  angle = positions[..., None, None] / timescale  # [B, L, 1, H/2]
  a, b = x[..., : h // 2], x[..., h // 2:]
  return np.concatenate([a * np.cos(angle) - b * np.sin(angle),
                         b * np.cos(angle) + a * np.sin(angle)], axis=-1)


def gemma_layout_forward(params: dict, tokens: np.ndarray, cfg: dict) -> np.ndarray:
  """float64 logits from the gemma library's params layout (its einsum equations, literally)."""
  p = {k: {kk: np.asarray(vv, np.float64) for kk, vv in v.items()} for k, v in params.items()}
  eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
  table = p["transformer/embedder"]["input_embedding"]
  d = table.shape[1]
  x = table[tokens] * np.sqrt(d)
  positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape).astype(np.float64)
  length = tokens.shape[1]
  causal = np.tril(np.ones((length, length), bool))
  for i in range(cfg["num_hidden_layers"]):
    pre = f"transformer/layer_{i}"
    y = _rms_norm(x, p[f"{pre}/pre_attention_norm"]["scale"], eps)
    if f"{pre}/attn/qkv_einsum" in p:
      q, k, v = np.einsum("BTD,SNDH->SBTNH", y, p[f"{pre}/attn/qkv_einsum"]["w"])
    else:
      q = np.einsum("BTD,NDH->BTNH", y, p[f"{pre}/attn/q_einsum"]["w"])
      k, v = np.einsum("BSD,CKDH->CBSKH", y, p[f"{pre}/attn/kv_einsum"]["w"])
    q = _apply_rope(q, positions, theta) * cfg["head_dim"]**-0.5
    k = _apply_rope(k, positions, theta)
    groups = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
    logits = np.einsum("BTNH,BSNH->BTNS", q, k)
    logits = np.where(causal[None, :, None, :], logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    encoded = np.einsum("BTNS,BSNH->BTNH", probs, v)
    x = x + np.einsum("BTNH,NHD->BTD", encoded, p[f"{pre}/attn/attn_vec_einsum"]["w"])
    y = _rms_norm(x, p[f"{pre}/pre_ffw_norm"]["scale"], eps)
    gate = np.einsum("...F,NFH->...NH", y, p[f"{pre}/mlp/gating_einsum"]["w"])
    act = _gelu_tanh(gate[..., 0, :]) * gate[..., 1, :]
    x = x + np.einsum("...H,HF->...F", act, p[f"{pre}/mlp/linear"]["w"])
  x = _rms_norm(x, p["transformer/final_norm"]["scale"], eps)
  return x @ table.T


def hf_to_gemma_layout(sd: dict, cfg: dict) -> dict:
  """HF state dict (numpy) -> the gemma library's semi-flat params dict."""
  n, k, h = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
  d = cfg["hidden_size"]
  out = {"transformer/embedder": {"input_embedding": sd["model.embed_tokens.weight"]},
         "transformer/final_norm": {"scale": sd["model.norm.weight"]}}
  for i in range(cfg["num_hidden_layers"]):
    hf, pre = f"model.layers.{i}", f"transformer/layer_{i}"
    # PyTorch Linear weights are [out, in]; gemma's are [heads, in, head_dim].
    q = sd[f"{hf}.self_attn.q_proj.weight"].reshape(n, h, d).transpose(0, 2, 1)
    kk = sd[f"{hf}.self_attn.k_proj.weight"].reshape(k, h, d).transpose(0, 2, 1)
    vv = sd[f"{hf}.self_attn.v_proj.weight"].reshape(k, h, d).transpose(0, 2, 1)
    if k == n:
      out[f"{pre}/attn/qkv_einsum"] = {"w": np.stack([q, kk, vv])}
    else:
      out[f"{pre}/attn/q_einsum"] = {"w": q}
      out[f"{pre}/attn/kv_einsum"] = {"w": np.stack([kk, vv])}
    out[f"{pre}/attn/attn_vec_einsum"] = {
        "w": sd[f"{hf}.self_attn.o_proj.weight"].T.reshape(n, h, d)}
    out[f"{pre}/mlp/gating_einsum"] = {"w": np.stack([sd[f"{hf}.mlp.gate_proj.weight"].T,
                                                      sd[f"{hf}.mlp.up_proj.weight"].T])}
    out[f"{pre}/mlp/linear"] = {"w": sd[f"{hf}.mlp.down_proj.weight"].T}
    out[f"{pre}/pre_attention_norm"] = {"scale": sd[f"{hf}.input_layernorm.weight"]}
    out[f"{pre}/pre_ffw_norm"] = {"scale": sd[f"{hf}.post_attention_layernorm.weight"]}
  return {key: {kk: np.ascontiguousarray(vv, np.float32) for kk, vv in val.items()}
          for key, val in out.items()}


def torch_stage(name: str, fields: dict, seed: int, staging: str) -> str:
  """Builds the HF model, writes hf/ and the reference logits; returns the staged npz path."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  torch.manual_seed(seed)
  config = transformers.GemmaConfig(**fields, rms_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh",
                                    max_position_embeddings=64, tie_word_embeddings=True,
                                    attention_bias=False, pad_token_id=0, bos_token_id=2,
                                    eos_token_id=1)
  config._attn_implementation = "eager"  # pylint: disable=protected-access
  model = transformers.GemmaForCausalLM(config).eval().float()
  # Re-draw every weight at a scale where the logits are O(1) and every (1 + scale) RMSNorm
  # factor differs from 1, so that a transposed or mis-scaled tensor cannot go unnoticed.
  gen = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for pname, param in model.named_parameters():
      if pname.endswith("norm.weight") or "layernorm" in pname:
        param.copy_(0.5 * torch.randn(param.shape, generator=gen))
      elif "embed_tokens" in pname:
        param.copy_(torch.randn(param.shape, generator=gen) * fields["hidden_size"]**-0.5)
      else:
        param.copy_(torch.randn(param.shape, generator=gen) * param.shape[1]**-0.5)

  rng = np.random.default_rng(seed)
  tokens = rng.integers(3, fields["vocab_size"], size=(BATCH, LENGTH)).astype(np.int32)
  tokens[:, 0] = 2  # BOS, as Gemma prompts start.
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(tokens.astype(np.int64)),
                attention_mask=torch.ones(tokens.shape, dtype=torch.int64), use_cache=False)
  logits = out.logits.float().numpy()

  out_dir = os.path.join(TESTDATA, name)
  hf_dir = os.path.join(out_dir, "hf")
  shutil.rmtree(out_dir, ignore_errors=True)
  os.makedirs(hf_dir)
  model.save_pretrained(hf_dir, safe_serialization=True)
  for extra in os.listdir(hf_dir):  # Keep model.safetensors and config.json only.
    if extra not in ("model.safetensors", "config.json"):
      os.remove(os.path.join(hf_dir, extra))
  np.savez(os.path.join(out_dir, "reference_logits.npz"), tokens=tokens,
           logits=logits.astype(np.float32))

  sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
  flax_params = hf_to_gemma_layout(sd, fields)
  cfg = dict(fields, rms_norm_eps=1e-6, rope_theta=config.rope_parameters["rope_theta"])
  ref = gemma_layout_forward(flax_params, tokens, cfg)
  err = np.max(np.abs(ref - logits)) / np.max(np.abs(logits))
  print(f"{name}: max |logits| {np.max(np.abs(logits)):.3f}, gemma-layout numpy forward vs "
        f"PyTorch: max rel err {err:.2e}")
  if err > 1e-4:
    raise SystemExit(f"{name}: the gemma-layout arrays do not reproduce the HF logits.")
  staged = os.path.join(staging, f"{name}.npz")
  np.savez(staged, **{f"{k}|{kk}": vv for k, v in flax_params.items() for kk, vv in v.items()})
  return staged


def orbax_stage(staged: str, out_dir: str) -> None:
  """Writes the staged gemma-layout arrays as the gemma library does (PyTreeCheckpointer)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  params: dict = {}
  with np.load(staged) as z:
    for key in z.files:
      module, leaf = key.split("|")
      params.setdefault(module, {})[leaf] = z[key]
  shutil.rmtree(out_dir, ignore_errors=True)
  ocp.PyTreeCheckpointer().save(os.path.abspath(out_dir), params)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--orbax_python", default=os.path.join(REPO_ROOT, ".venv", "bin", "python"),
                      help="interpreter with orbax-checkpoint (the project's venv)")
  parser.add_argument("--write_orbax", nargs=2, metavar=("STAGED_NPZ", "OUT_DIR"),
                      help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.write_orbax:
    orbax_stage(*args.write_orbax)
    return
  with tempfile.TemporaryDirectory() as staging:
    for seed, (name, fields) in enumerate(MODELS.items()):
      staged = torch_stage(name, fields, seed, staging)
      subprocess.run([args.orbax_python, os.path.abspath(__file__), "--write_orbax", staged,
                      os.path.join(TESTDATA, name, "flax")], check=True,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"))
  total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(TESTDATA) for f in fs)
  print(f"wrote {TESTDATA} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
  main()
