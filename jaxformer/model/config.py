"""Model hyper-parameters: one frozen dataclass that gin fills in (see jaxformer/gin/models/*.gin)."""

import dataclasses

import gin

# Initialisation schemes: the normal(initializer_range) std of every weight matrix, and the factor on
# the residual-branch output projections (attention `out`, MLP `fc_out`) as a function of depth.
INIT_SCHEMES = {
  # HF's default (fine-tuning): every weight N(0, initializer_range).
  "normal": lambda num_layers: 1.0,
  # GPT-2 / Megatron / GPT-J manner: each of the 2L residual branches adds variance, so their output
  # projections start 1/sqrt(2L) smaller and the residual stream's variance stays bounded with depth.
  "depth_scaled": lambda num_layers: (2 * num_layers) ** -0.5,
}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """CodeGen-architecture sizes and numerics.

  Defaults are the `tiny` model; jaxformer/gin/models/*.gin set the real sizes.
  """

  vocab_size: int = 512
  num_layers: int = 2
  d_model: int = 64
  num_heads: int = 4
  rotary_dim: int = 8
  max_length: int = 2048  # n_ctx: the context the model is trained for.
  mlp_ratio: int = 4
  layer_norm_epsilon: float = 1e-5
  initializer_range: float = 0.02
  init_scheme: str = "normal"  # a key of INIT_SCHEMES
  dtype: str = "bfloat16"  # compute dtype; parameters stay float32.
  param_dtype: str = "float32"
  attention: str = "xla"  # a key of model.attention.IMPLEMENTATIONS
  remat_policy: str = "none"  # a key of model.remat.POLICIES
  scan_layers: bool = True

  def __post_init__(self):
    if self.init_scheme not in INIT_SCHEMES:
      raise ValueError(f"ModelConfig.init_scheme={self.init_scheme!r}: use one of {sorted(INIT_SCHEMES)}")
    if self.d_model % self.num_heads:
      raise ValueError(f"ModelConfig.d_model={self.d_model} is not divisible by ModelConfig.num_heads={self.num_heads}")
    if self.rotary_dim > self.head_dim or self.rotary_dim % 2:
      raise ValueError(f"ModelConfig.rotary_dim={self.rotary_dim} must be even and at most head_dim={self.head_dim}")

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @property
  def mlp_dim(self) -> int:
    return self.mlp_ratio * self.d_model

  @property
  def matmul_params(self) -> int:
    """N of the 6N accounting: QKV, attention out, MLP and LM head weights (no embeddings, biases, norms)."""
    d = self.d_model
    return self.num_layers * (3 * d * d + d * d + 2 * d * self.mlp_dim) + d * self.vocab_size

  def flops_per_token(self, length: int) -> dict:
    """Training FLOPs per token under the two labelled accountings (docs/DESIGN.md, "Measures").

    Returns:
      {"flops_per_token_6n": 6N, "flops_per_token_with_attention": 6N + causal attention}, where
      attention is QK^T and AV (2 matmuls x 2 FLOPs x length x d_model per layer forward, x3 with the
      backward pass), halved because the causal mask skips the upper triangle.
    """
    six_n = 6 * self.matmul_params
    attention = 12 * self.num_layers * length * self.d_model // 2
    return {"flops_per_token_6n": six_n, "flops_per_token_with_attention": six_n + attention}
