"""The CodeGen family's config (gin: ModelConfig.*, the name jaxformer's configs have always used; see
jaxformer/gin/models/*.gin): CodeGen/GPT-J blocks, one LayerNorm feeding attention and MLP in parallel,
fused QKV, interleaved rotary on the first rotary_dim features of each head, an untied LM head with a bias."""

import dataclasses

import gin

from jaxformer.models.base import FamilyConfig


@gin.configurable("ModelConfig")
@dataclasses.dataclass(frozen=True)
class CodeGenConfig(FamilyConfig):
  """CodeGen-architecture sizes and numerics. Defaults are the `tiny` model; gin/models/*.gin set the real
  sizes (and the shared knobs of FamilyConfig: dtype, attention, remat_policy, scan_layers, ...)."""

  family = "codegen"
  hf_module = "jaxformer.models.codegen.hf"

  rotary_dim: int = 8
  mlp_ratio: int = 4
  layer_norm_epsilon: float = 1e-5

  def __post_init__(self):
    super().__post_init__()
    if self.rotary_dim > self.head_dim or self.rotary_dim % 2:
      raise ValueError(f"ModelConfig.rotary_dim={self.rotary_dim} must be even and at most head_dim={self.head_dim}")

  @property
  def gin_name(self) -> str:
    return "ModelConfig"

  @property
  def mlp_dim(self) -> int:
    return self.mlp_ratio * self.d_model

  @property
  def lm_head_bias(self) -> bool:
    return True

  @property
  def matmul_params(self) -> int:
    d = self.d_model
    return self.num_layers * (3 * d * d + d * d + 2 * d * self.mlp_dim) + d * self.vocab_size

  def block(self, decode: bool):
    from jaxformer.models.codegen.block import Block

    return Block

  def final_norm(self, name: str):
    from jaxformer.models.common.layers import layer_norm

    return layer_norm(self, name, self.layer_norm_epsilon)

  @property
  def final_norm_name(self) -> str:
    return "ln_f"


# The name older code imported.
ModelConfig = CodeGenConfig
