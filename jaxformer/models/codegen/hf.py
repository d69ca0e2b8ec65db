"""The CodeGen family's HF layout: HuggingFace CodeGenForCausalLM's config.json and tensor names, both ways
(numpy only).

HF's fused qkv_proj.weight is [3 * d_model, d_model], read as `groups` groups (the layout option), each
laid out [Q | V | K] with the group's heads (upstream transformers uses 4 groups; the remote code of
CodeGen2-1B/3.7B uses 8). Ours is a kernel [d_model, 3 (q, k, v), heads, head_dim].
"""

import os
import re

import numpy as np

from jaxformer.models.codegen.config import CodeGenConfig as ModelConfig
from jaxformer.models.common.hf_leaves import Leaf, required_ints, same, transpose

HF_PART_ORDER = (0, 2, 1)  # HF [Q | V | K] as indices into our (q, k, v)


def qkv_to_hf(kernel: np.ndarray, groups: int) -> np.ndarray:
  """[d, 3, H, D] -> HF qkv_proj.weight [3 * H * D, d]."""
  d, _, heads, head_dim = kernel.shape
  if heads % groups:
    raise ValueError(f"{heads} heads cannot be split into {groups} QKV groups")
  parts = kernel[:, list(HF_PART_ORDER)]  # [d, 3 (q, v, k), H, D]
  parts = parts.reshape(d, 3, groups, heads // groups, head_dim).transpose(0, 2, 1, 3, 4)
  return parts.reshape(d, 3 * heads * head_dim).T


def qkv_from_hf(weight: np.ndarray, heads: int, groups: int) -> np.ndarray:
  """HF qkv_proj.weight [3 * H * D, d] -> [d, 3, H, D]."""
  out_features, d = weight.shape
  head_dim = out_features // (3 * heads)
  if heads % groups:
    raise ValueError(f"{heads} heads cannot be split into {groups} QKV groups")
  parts = weight.T.reshape(d, groups, 3, heads // groups, head_dim).transpose(0, 2, 1, 3, 4)
  parts = parts.reshape(d, 3, heads, head_dim)
  return parts[:, list(np.argsort(HF_PART_ORDER))]


MODEL_TYPES = ("codegen",)


def leaves(config, **options) -> tuple[Leaf, ...]:
  """Every parameter of a CodeGen config and its HF tensor (options: groups, the QKV grouping)."""
  return LEAVES


LEAVES = (
  Leaf(("embed",), "transformer.wte.weight", same, same),
  Leaf(("layers", "ln", "scale"), "transformer.h.{i}.ln_1.weight", same, same),
  Leaf(("layers", "ln", "bias"), "transformer.h.{i}.ln_1.bias", same, same),
  Leaf(
    ("layers", "attention", "qkv", "kernel"),
    "transformer.h.{i}.attn.qkv_proj.weight",
    lambda x, c, o: qkv_to_hf(x, o["groups"]),
    lambda x, c, o: qkv_from_hf(x, c.num_heads, o["groups"]),
  ),
  Leaf(
    ("layers", "attention", "out", "kernel"),
    "transformer.h.{i}.attn.out_proj.weight",
    lambda x, c, o: x.reshape(c.num_heads * c.head_dim, c.d_model).T,
    lambda x, c, o: x.T.reshape(c.num_heads, c.head_dim, c.d_model),
  ),
  Leaf(("layers", "mlp", "fc_in", "kernel"), "transformer.h.{i}.mlp.fc_in.weight", transpose, transpose),
  Leaf(("layers", "mlp", "fc_in", "bias"), "transformer.h.{i}.mlp.fc_in.bias", same, same),
  Leaf(("layers", "mlp", "fc_out", "kernel"), "transformer.h.{i}.mlp.fc_out.weight", transpose, transpose),
  Leaf(("layers", "mlp", "fc_out", "bias"), "transformer.h.{i}.mlp.fc_out.bias", same, same),
  Leaf(("ln_f", "scale"), "transformer.ln_f.weight", same, same),
  Leaf(("ln_f", "bias"), "transformer.ln_f.bias", same, same),
  Leaf(("lm_head", "kernel"), "lm_head.weight", transpose, transpose),
  Leaf(("lm_head", "bias"), "lm_head.bias", same, same),
)


def hf_config(config: ModelConfig, bos_id: int, eos_id: int, pad_id: int, torch_dtype: str, **options) -> dict:
  return {
    "architectures": ["CodeGenForCausalLM"],
    "model_type": "codegen",
    "vocab_size": config.vocab_size,
    "n_positions": config.max_length,
    "n_ctx": config.max_length,
    "n_embd": config.d_model,
    "n_layer": config.num_layers,
    "n_head": config.num_heads,
    "rotary_dim": config.rotary_dim,
    "n_inner": config.mlp_dim,
    "activation_function": "gelu_new",
    "layer_norm_epsilon": config.layer_norm_epsilon,
    "initializer_range": config.initializer_range,
    "resid_pdrop": 0.0,
    "embd_pdrop": 0.0,
    "attn_pdrop": 0.0,
    "tie_word_embeddings": False,
    "bos_token_id": bos_id,
    "eos_token_id": eos_id,
    "pad_token_id": pad_id,
    "use_cache": True,
    "torch_dtype": torch_dtype,
  }


def config_from_hf(hf: dict, source: str = "config.json") -> ModelConfig:
  """Our config from a CodeGen config.json (ValueError naming the field it cannot take)."""
  required_ints(hf, ("vocab_size", "n_layer", "n_embd", "n_head"), source, "CodeGen")
  d = hf["n_embd"]
  inner = hf.get("n_inner") or 4 * d
  if inner % d:
    raise ValueError(f"{source}: n_inner={inner} is not a multiple of n_embd={d}")
  if hf.get("activation_function", "gelu_new") != "gelu_new":
    raise ValueError(f"{source}: activation_function={hf['activation_function']!r}; jaxformer has gelu_new")
  if hf.get("tie_word_embeddings"):
    raise ValueError(f"{source}: tie_word_embeddings=true; CodeGen's LM head is untied")
  return ModelConfig(
    vocab_size=hf["vocab_size"],
    num_layers=hf["n_layer"],
    d_model=d,
    num_heads=hf["n_head"],
    rotary_dim=hf.get("rotary_dim") or d // hf["n_head"],
    max_length=hf.get("n_ctx", 2048),
    mlp_ratio=inner // d,
    layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5),
    dtype="float32",
  )


HF_BUILTIN_QKV_GROUPS = 4  # transformers' CodeGenAttention: `mp_num = 4`
ASK_FOR_GROUPS = "pass --qkv_groups=8 (CodeGen2's remote code) or --qkv_groups=4 (transformers' built-in CodeGen)"


def detect_qkv_groups(hf_dir: str, hf: dict) -> int:
  """The QKV grouping the checkpoint's own attention code uses.

  No auto_map: HF's built-in CodeGen (4 groups). An auto_map: the remote modeling file it names
  fixes `mp_num` (CodeGen2's: 8); a file that is absent, or that sets several values, cannot be
  read, and the user is asked for --qkv_groups rather than given a guess.
  """
  auto_map = hf.get("auto_map")
  if not auto_map:
    return HF_BUILTIN_QKV_GROUPS
  target = auto_map.get("AutoModelForCausalLM") or auto_map.get("AutoModel") if isinstance(auto_map, dict) else None
  if not isinstance(target, str) or "." not in target:
    raise ValueError(f"{hf_dir}/config.json: auto_map names no AutoModelForCausalLM class; {ASK_FOR_GROUPS}")
  module = target.split("--")[-1].rsplit(".", 1)[0]  # "repo--modeling_codegen.Class" or "modeling_codegen.Class"
  code = os.path.join(hf_dir, module.replace(".", os.sep) + ".py")
  if not os.path.exists(code):
    raise ValueError(
      f"{hf_dir}/config.json: auto_map points to remote code {os.path.basename(code)}, which {hf_dir} does not "
      f"hold, so the QKV grouping (mp_num) cannot be read; {ASK_FOR_GROUPS}"
    )
  with open(code, encoding="utf-8") as f:
    values = set(re.findall(r"^[ \t]*(?:self\.)?mp_num\s*=\s*(\d+)\s*(?:#.*)?$", f.read(), re.MULTILINE))
  if len(values) != 1:
    found = f"sets mp_num to {sorted(values)}" if values else "sets no mp_num"
    raise ValueError(f"{code} {found}, so the QKV grouping cannot be read; {ASK_FOR_GROUPS}")
  return int(values.pop())


def layout_options(hf_dir: str, hf: dict, qkv_groups: int | None = None, **flags) -> dict:
  """{'groups': the QKV grouping}: --qkv_groups, else read from the checkpoint's own code."""
  if qkv_groups is not None and qkv_groups < 1:
    raise ValueError(f"--qkv_groups={qkv_groups} must be a positive number of groups")
  return {"groups": qkv_groups or detect_qkv_groups(hf_dir, hf)}
