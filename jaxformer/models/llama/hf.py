"""The Llama family's HF layout: transformers' built-in LlamaForCausalLM, Qwen2ForCausalLM and
Starcoder2ForCausalLM (no remote code), config.json and tensor names both ways (numpy only).

Our q/k/v kernels are [d_model, heads, head_dim], HF's q_proj.weight [heads * head_dim, d_model]; o is ours
[heads, head_dim, d_model], HF's o_proj.weight [d_model, heads * head_dim]; every other matrix is a
transpose. HF's rotate-half rotary is ours, so no permutation of q and k. config.json: the hub's keys
(rope_theta, rope_scaling) are read, and so are transformers 5's rope_parameters; export writes the former,
which every transformers version reads.
"""

from jaxformer.models.common.hf_leaves import Leaf, required_ints, same, transpose
from jaxformer.models.llama.config import LlamaConfig

MODEL_TYPES = ("llama", "qwen2", "starcoder2")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "starcoder2": "Starcoder2ForCausalLM"}
# What each class fixes that our config leaves free (export refuses a config it cannot write).
CLASS_DEFAULTS = {
  "llama": {"tie_word_embeddings": False},
  "qwen2": {"tie_word_embeddings": False},
  "starcoder2": {"tie_word_embeddings": True},
}
ACTIVATIONS = {"silu": "swiglu", "gelu_pytorch_tanh": "gelu", "gelu_new": "gelu"}


def _heads(n: str):
  """(to HF, from HF) for a [d, n, head_dim] projection kernel."""
  count = lambda c: c.num_heads if n == "q" else c.kv_heads
  to_hf = lambda x, c, o: x.reshape(c.d_model, count(c) * c.head_dim).T
  from_hf = lambda x, c, o: x.T.reshape(c.d_model, count(c), c.head_dim)
  return to_hf, from_hf


def _head_bias(n: str):
  count = lambda c: c.num_heads if n == "q" else c.kv_heads
  return (lambda x, c, o: x.reshape(-1)), (lambda x, c, o: x.reshape(count(c), c.head_dim))


def leaves(config: LlamaConfig, **options) -> tuple[Leaf, ...]:
  """Every parameter of `config` and its HF tensor, in the order export writes them."""
  starcoder = config.hf_model_type == "starcoder2"
  layer = "model.layers.{i}."
  out = [Leaf(("embed",), "model.embed_tokens.weight", same, same)]
  norms = (("attention_norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm"))
  for ours, theirs in norms:
    out.append(Leaf(("layers", ours, "scale"), f"{layer}{theirs}.weight", same, same))
    if config.norm_bias:
      out.append(Leaf(("layers", ours, "bias"), f"{layer}{theirs}.bias", same, same))
  for n in ("q", "k", "v"):
    out.append(Leaf(("layers", "attention", n, "kernel"), f"{layer}self_attn.{n}_proj.weight", *_heads(n)))
    if config.qkv_bias:
      out.append(Leaf(("layers", "attention", n, "bias"), f"{layer}self_attn.{n}_proj.bias", *_head_bias(n)))
  o_to = lambda x, c, o: x.reshape(c.num_heads * c.head_dim, c.d_model).T
  o_from = lambda x, c, o: x.T.reshape(c.num_heads, c.head_dim, c.d_model)
  out.append(Leaf(("layers", "attention", "o", "kernel"), f"{layer}self_attn.o_proj.weight", o_to, o_from))
  if config.out_bias:
    out.append(Leaf(("layers", "attention", "o", "bias"), f"{layer}self_attn.o_proj.bias", same, same))
  if config.mlp == "swiglu":
    mlp = (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj"))
  else:
    mlp = (("fc_in", "c_fc" if starcoder else "up_proj"), ("fc_out", "c_proj" if starcoder else "down_proj"))
  for ours, theirs in mlp:
    out.append(Leaf(("layers", "mlp", ours, "kernel"), f"{layer}mlp.{theirs}.weight", transpose, transpose))
    if config.mlp_bias:
      out.append(Leaf(("layers", "mlp", ours, "bias"), f"{layer}mlp.{theirs}.bias", same, same))
  out.append(Leaf(("final_norm", "scale"), "model.norm.weight", same, same))
  if config.norm_bias:
    out.append(Leaf(("final_norm", "bias"), "model.norm.bias", same, same))
  if not config.tie_word_embeddings:
    out.append(Leaf(("lm_head", "kernel"), "lm_head.weight", transpose, transpose))
  return tuple(out)


def _rope(hf: dict, source: str) -> tuple[float, tuple]:
  """(rope_theta, rope_scaling pairs) from the hub's keys or transformers 5's rope_parameters."""
  parameters = hf.get("rope_parameters") if isinstance(hf.get("rope_parameters"), dict) else {}
  theta = hf.get("rope_theta", parameters.get("rope_theta", 10000.0))
  scaling = hf.get("rope_scaling") or {k: v for k, v in parameters.items() if k != "rope_theta"}
  if not isinstance(scaling, dict):
    raise ValueError(f"{source}: rope_scaling={scaling!r} is not a dict")
  if scaling.get("rope_type", scaling.get("type", "default")) == "default":
    scaling = {}
  return float(theta), tuple(sorted(scaling.items()))


def config_from_hf(hf: dict, source: str = "config.json") -> LlamaConfig:
  """Our config from a Llama, Qwen2 or Starcoder2 config.json (ValueError naming the field it cannot take)."""
  kind = hf.get("model_type")
  required_ints(hf, ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers"), source, kind)
  required_ints(hf, ("num_attention_heads",), source, kind)
  heads, d = hf["num_attention_heads"], hf["hidden_size"]
  head_dim = hf.get("head_dim") or 0
  if head_dim and (isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 0):
    raise ValueError(f"{source}: head_dim={head_dim!r} must be a positive integer")
  head_size = 0 if head_dim == d // heads and not d % heads else head_dim  # as d_model / num_heads: implied
  activation = hf.get("hidden_act", "gelu_pytorch_tanh" if kind == "starcoder2" else "silu")
  if activation not in ACTIVATIONS:
    raise ValueError(f"{source}: hidden_act={activation!r}; jaxformer has {sorted(ACTIVATIONS)}")
  theta, scaling = _rope(hf, source)
  if kind == "starcoder2":
    bias = bool(hf.get("use_bias", True))
    variant = dict(norm="layer", norm_bias=True, norm_epsilon=hf.get("norm_epsilon", 1e-5), qkv_bias=bias)
    variant.update(out_bias=bias, mlp_bias=bias, sliding_window=hf.get("sliding_window") or 0)
  elif kind == "qwen2":
    window = (hf.get("sliding_window") or 0) if hf.get("use_sliding_window") else 0
    if window and hf.get("max_window_layers", hf["num_hidden_layers"]) < hf["num_hidden_layers"]:
      raise ValueError(f"{source}: a sliding window on only some layers (max_window_layers) is not supported")
    variant = dict(norm_epsilon=hf.get("rms_norm_eps", 1e-6), qkv_bias=True, sliding_window=window)
  else:
    bias = bool(hf.get("attention_bias", False))
    variant = dict(norm_epsilon=hf.get("rms_norm_eps", 1e-6), qkv_bias=bias, out_bias=bias)
    variant.update(mlp_bias=bool(hf.get("mlp_bias", False)))
  tie = hf.get("tie_word_embeddings", CLASS_DEFAULTS[kind]["tie_word_embeddings"])
  return LlamaConfig(
    vocab_size=hf["vocab_size"],
    num_layers=hf["num_hidden_layers"],
    d_model=d,
    num_heads=heads,
    num_kv_heads=hf.get("num_key_value_heads") or heads,
    head_size=head_size,
    mlp_dim=hf["intermediate_size"],
    max_length=hf.get("max_position_embeddings", 2048),
    mlp=ACTIVATIONS[activation],
    rope_theta=theta,
    rope_scaling=scaling,
    tie_word_embeddings=bool(tie),
    hf_model_type=kind,
    dtype="float32",
    **variant,
  )


def _representable(config: LlamaConfig) -> None:
  """Raises ValueError naming the field that the chosen HF class cannot hold."""
  kind, problems = config.hf_model_type, []
  if kind in ("llama", "qwen2") and (config.norm != "rms" or config.mlp != "swiglu"):
    problems.append("norm='rms' and mlp='swiglu'")
  if kind == "llama" and config.qkv_bias != config.out_bias:
    problems.append("qkv_bias == out_bias (attention_bias)")
  if kind == "qwen2" and (not config.qkv_bias or config.out_bias or config.mlp_bias):
    problems.append("qkv_bias=True, out_bias=False, mlp_bias=False")
  if kind == "starcoder2":
    flags = {config.qkv_bias, config.out_bias, config.mlp_bias}
    if config.norm != "layer" or not config.norm_bias or config.mlp != "gelu" or len(flags) != 1:
      problems.append("norm='layer' with norm_bias, mlp='gelu', and one use_bias for q/k/v, o and the MLP")
  if problems:
    raise ValueError(f"LlamaConfig.hf_model_type={kind!r} needs " + "; ".join(problems) + ": change the config")


def hf_config(config: LlamaConfig, bos_id: int, eos_id: int, pad_id: int, torch_dtype: str, **options) -> dict:
  """config.json for the config's HF class; what `from_pretrained` loads without flags."""
  _representable(config)
  kind = config.hf_model_type
  out = {
    "architectures": [ARCHITECTURES[kind]],
    "model_type": kind,
    "vocab_size": config.vocab_size,
    "hidden_size": config.d_model,
    "intermediate_size": config.mlp_dim,
    "num_hidden_layers": config.num_layers,
    "num_attention_heads": config.num_heads,
    "num_key_value_heads": config.kv_heads,
    "max_position_embeddings": config.max_length,
    "rope_theta": config.rope_theta,
    "rope_scaling": config.rope_scaling_dict or None,
    "hidden_act": "silu" if config.mlp == "swiglu" else "gelu_pytorch_tanh",
    "tie_word_embeddings": config.tie_word_embeddings,
    "initializer_range": config.initializer_range,
    "bos_token_id": bos_id,
    "eos_token_id": eos_id,
    "pad_token_id": pad_id,
    "use_cache": True,
    "torch_dtype": torch_dtype,
  }
  if config.head_size:  # written only when it is not hidden_size / num_attention_heads, as the hub's files
    out["head_dim"] = config.head_size
  if kind == "starcoder2":
    out.update(norm_epsilon=config.norm_epsilon, use_bias=config.qkv_bias, sliding_window=config.sliding_window or None)
    out.update(attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0)
  else:
    out["rms_norm_eps"] = config.norm_epsilon
  if kind == "llama":
    out.update(attention_bias=config.qkv_bias, mlp_bias=config.mlp_bias)
  if kind == "qwen2":
    out.update(use_sliding_window=bool(config.sliding_window), sliding_window=config.sliding_window or None)
  return out


def layout_options(hf_dir: str, hf: dict, **flags) -> dict:
  """No options: these classes have one layout."""
  return {}
