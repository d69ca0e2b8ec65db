"""The one mapping between our parameter tree and HuggingFace CodeGen tensor names (numpy only).

HF's fused qkv_proj.weight is [3 * d_model, d_model], read as `qkv_groups` groups, each laid
out [Q | V | K] with the group's heads (upstream transformers uses 4 groups; the remote code
of CodeGen2-1B/3.7B uses 8). Ours is a kernel [d_model, 3 (q, k, v), heads, head_dim].
Scanned layers are stacked on a leading axis: one of our leaves is `num_layers` HF tensors.
"""

import dataclasses
from collections.abc import Callable

import numpy as np

from jaxformer.model import ModelConfig

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


@dataclasses.dataclass(frozen=True)
class Leaf:
  """One of our parameter leaves and the HF tensor(s) it becomes."""

  path: tuple[str, ...]
  hf_name: str  # '{i}' stands for the layer index in stacked leaves
  to_hf: Callable  # (our array of one layer, config, groups) -> HF array
  from_hf: Callable  # (HF array, config, groups) -> our array of one layer

  @property
  def per_layer(self) -> bool:
    return self.path[0] == "layers"


same = lambda x, c, g: x
transpose = lambda x, c, g: x.T

LEAVES = (
  Leaf(("embed",), "transformer.wte.weight", same, same),
  Leaf(("layers", "ln", "scale"), "transformer.h.{i}.ln_1.weight", same, same),
  Leaf(("layers", "ln", "bias"), "transformer.h.{i}.ln_1.bias", same, same),
  Leaf(
    ("layers", "attention", "qkv", "kernel"),
    "transformer.h.{i}.attn.qkv_proj.weight",
    lambda x, c, g: qkv_to_hf(x, g),
    lambda x, c, g: qkv_from_hf(x, c.num_heads, g),
  ),
  Leaf(
    ("layers", "attention", "out", "kernel"),
    "transformer.h.{i}.attn.out_proj.weight",
    lambda x, c, g: x.reshape(c.num_heads * c.head_dim, c.d_model).T,
    lambda x, c, g: x.T.reshape(c.num_heads, c.head_dim, c.d_model),
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


def hf_tensors(leaf: Leaf, value: np.ndarray, config: ModelConfig, groups: int):
  """Yields (HF name, HF array) for one of our leaves (stacked: one per layer)."""
  if leaf.per_layer:
    for i in range(value.shape[0]):
      yield leaf.hf_name.format(i=i), np.ascontiguousarray(leaf.to_hf(value[i], config, groups))
  else:
    yield leaf.hf_name, np.ascontiguousarray(leaf.to_hf(value, config, groups))


def our_leaf(leaf: Leaf, get, config: ModelConfig, groups: int) -> np.ndarray:
  """One of our leaves from HF tensors; get(name) returns a numpy array."""
  if leaf.per_layer:
    return np.stack([leaf.from_hf(get(leaf.hf_name.format(i=i)), config, groups) for i in range(config.num_layers)])
  return leaf.from_hf(get(leaf.hf_name), config, groups)


def set_path(tree: dict, path: tuple[str, ...], value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def get_path(tree, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


def hf_config(config: ModelConfig, bos_id: int, eos_id: int, pad_id: int, torch_dtype: str) -> dict:
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


def model_config_from_hf(hf: dict, source: str = "config.json") -> ModelConfig:
  if hf.get("model_type") != "codegen":
    raise ValueError(
      f"{source} has model_type {hf.get('model_type')!r}; only 'codegen' (CodeGenForCausalLM) can be imported"
    )
  missing = [k for k in ("vocab_size", "n_layer", "n_embd", "n_head") if not isinstance(hf.get(k), int)]
  if missing:
    raise ValueError(f"{source}: no integer {', '.join(missing)}; is this a CodeGen config.json?")
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
