"""The Llama family's config (gin: LlamaConfig.*): pre-norm decoder layers, h = x + attn(norm(x)), then
out = h + mlp(norm(h)), with the variants the code models built on it need, each a field:

  norm          'rms' (Llama, Qwen2) or 'layer' (StarCoder2, with a bias when norm_bias)
  mlp           'swiglu' (silu(gate) * up, then down: Llama, Qwen2) or 'gelu' (tanh GELU: StarCoder2)
  kv_heads      grouped-query attention (fewer key/value heads than query heads; 1: multi-query)
  head_size     each head's width when it is not d_model / num_heads (HF's head_dim: Gemma, Qwen3, MaxText's
                scaled models), so num_heads x head_size may differ from d_model; 0: d_model / num_heads
  rope_theta    the rotate-half rotary's base, and rope_scaling: {'rope_type': 'linear', 'factor': ...} or
                'llama3' (factor, low_freq_factor, high_freq_factor, original_max_position_embeddings)
  qkv_bias, out_bias, mlp_bias   biases (Qwen2: q/k/v only; StarCoder2: all)
  tie_word_embeddings            the LM head is the embedding table
  sliding_window                 a causal query sees at most this many keys back (StarCoder2: 4096)
  hf_model_type                  which HuggingFace class export writes: llama, qwen2 or starcoder2
"""

import dataclasses

import gin

from jaxformer.models.base import FamilyConfig

NORMS = ("rms", "layer")
MLPS = ("swiglu", "gelu")
HF_MODEL_TYPES = ("llama", "qwen2", "starcoder2")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LlamaConfig(FamilyConfig):
  """Sizes, variants and numerics of a Llama-family model (gin: LlamaConfig.*; jaxformer/gin/models/)."""

  family = "llama"
  hf_module = "jaxformer.models.llama.hf"

  num_kv_heads: int = 0  # 0: as many as num_heads
  head_size: int = 0  # 0: d_model / num_heads (config.json's head_dim otherwise)
  mlp_dim: int = 256
  norm: str = "rms"
  norm_bias: bool = False
  norm_epsilon: float = 1e-6
  mlp: str = "swiglu"
  mlp_bias: bool = False
  qkv_bias: bool = False
  out_bias: bool = False
  rope_theta: float = 10000.0
  rope_scaling: tuple = ()  # a dict in gin; kept as sorted (key, value) pairs so the config stays hashable
  tie_word_embeddings: bool = False
  sliding_window: int = 0
  hf_model_type: str = "llama"

  def __post_init__(self):
    super().__post_init__()
    if isinstance(self.rope_scaling, dict):
      object.__setattr__(self, "rope_scaling", tuple(sorted(self.rope_scaling.items())))
    for field, choices in (("norm", NORMS), ("mlp", MLPS), ("hf_model_type", HF_MODEL_TYPES)):
      if getattr(self, field) not in choices:
        raise ValueError(f"LlamaConfig.{field}={getattr(self, field)!r}: use one of {list(choices)}")
    if self.num_heads % self.kv_heads:
      raise ValueError(
        f"LlamaConfig.num_kv_heads={self.num_kv_heads} must divide LlamaConfig.num_heads={self.num_heads}"
      )
    if self.head_dim % 2:
      source = "LlamaConfig.head_size" if self.head_size else "d_model / num_heads"
      raise ValueError(f"LlamaConfig: head_dim={self.head_dim} ({source}) must be even for rotary")
    if self.norm == "rms" and self.norm_bias:
      raise ValueError("LlamaConfig.norm_bias=True needs LlamaConfig.norm='layer' (RMSNorm has no bias)")
    if self.sliding_window < 0:
      raise ValueError(f"LlamaConfig.sliding_window={self.sliding_window} must be >= 0 (0: no window)")
    from jaxformer.models.common.rotary import check_rope_scaling

    check_rope_scaling(self.rope_scaling_dict, where="LlamaConfig.rope_scaling")

  def check_head_dim(self) -> None:
    if isinstance(self.head_size, bool) or not isinstance(self.head_size, int) or self.head_size < 0:
      raise ValueError(f"LlamaConfig.head_size={self.head_size!r} must be a positive integer (0: d_model / num_heads)")
    if not self.head_size:
      super().check_head_dim()

  @property
  def head_dim(self) -> int:
    return self.head_size or self.d_model // self.num_heads

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  @property
  def rope_scaling_dict(self) -> dict:
    return dict(self.rope_scaling)

  @property
  def tie_embeddings(self) -> bool:
    return self.tie_word_embeddings

  @property
  def window(self) -> int:
    return self.sliding_window if self.sliding_window and self.sliding_window < self.max_length else 0

  @property
  def matmul_params(self) -> int:
    d, h, kv = self.d_model, self.num_heads * self.head_dim, self.kv_heads * self.head_dim
    mlp = (3 if self.mlp == "swiglu" else 2) * d * self.mlp_dim
    return self.num_layers * (d * h + 2 * d * kv + h * d + mlp) + d * self.vocab_size

  def block(self, decode: bool):
    from jaxformer.models.llama.block import Block

    return Block

  def norm_layer(self, name: str):
    from jaxformer.models.common.layers import layer_norm, rms_norm

    if self.norm == "rms":
      return rms_norm(self, name, self.norm_epsilon)
    return layer_norm(self, name, self.norm_epsilon, use_bias=self.norm_bias)

  def final_norm(self, name: str):
    return self.norm_layer(name)
