"""The family interface: what every model family's config is and answers. Every caller (train setup, bench,
plan, infer, sample, export, import, evals, sharding, state) goes through it, never through a family by name.

A family is one folder under jaxformer/models/ with a frozen, gin-configurable config class derived from
FamilyConfig that says, for itself:

  block(decode)          the decoder layer (a Flax module class, called (x, positions, mask) -> (x, None));
  final_norm(name)       the norm after the last layer;
  tie_embeddings         whether the LM head is the embedding table (else an `lm_head` Dense, with
                         lm_head_bias);
  matmul_params          N of the 6N accounting (every matmul weight the forward runs, the LM head included);
  kv_heads, head_dim     the attention's shapes (decoding caches kv_heads; FLOPs count num_heads * head_dim);
  hf                     its HuggingFace layout module: config.json both ways and every weight's name and
                         transpose (models/<family>/hf.py).

Everything else is shared (models/common/): the decoder skeleton (embedding, scanned or unrolled layers,
the prefix-LM and packing masks, the KV cache, the LM head), the attention kernels, rotary embeddings,
norms, remat policies. `config.module()` is the model; `models.bound()` is the config the run's gin binds.
"""

import abc
import dataclasses
import importlib
from typing import ClassVar

# Initialisation schemes: scheme(config, role, fan_in) -> (distribution, std) for each weight matrix, by its
# role: "matrix" (fan_in inputs), "residual" (an output projection writing into the residual stream:
# attention out, MLP down) or "embedding" (the token table). Biases start at 0, norm scales at 1.
INIT_SCHEMES = {
  # HF's default (fine-tuning): every weight N(0, initializer_range).
  "normal": lambda c, role, fan_in: ("normal", c.initializer_range),
  # GPT-2 / Megatron / GPT-J manner: each of the 2L residual branches adds variance, so their output
  # projections start 1/sqrt(2L) smaller and the residual stream's variance stays bounded with depth.
  "depth_scaled": lambda c, role, fan_in: (
    "normal",
    c.initializer_range * ((2 * c.num_layers) ** -0.5 if role == "residual" else 1.0),
  ),
  # CodeGen1's released trainer (salesforce/jaxformer, models/decoder/inter/{model,modules}.py): haiku's
  # TruncatedNormal (a normal of that std cut at 2 std) with std 1/sqrt(fan_in) (hk.Linear's default),
  # (2/L)/sqrt(d_model) on the residual outputs (Block init_scale=2/L), 1/sqrt(vocab) for the embedding.
  "codegen1": lambda c, role, fan_in: (
    "truncated_normal",
    c.vocab_size**-0.5
    if role == "embedding"
    else 2 / c.num_layers * c.d_model**-0.5
    if role == "residual"
    else fan_in**-0.5,
  ),
}
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class FamilyConfig(abc.ABC):
  """The knobs every family shares (its own config adds the rest). Defaults are a tiny model."""

  family: ClassVar[str] = ""

  vocab_size: int = 512
  num_layers: int = 2
  d_model: int = 64
  num_heads: int = 4
  max_length: int = 2048  # the context the model is trained for
  initializer_range: float = 0.02
  init_scheme: str = "normal"  # a key of INIT_SCHEMES
  dtype: str = "bfloat16"  # compute dtype; parameters stay param_dtype
  param_dtype: str = "float32"
  attention: str = "xla"  # a key of models.common.attention.IMPLEMENTATIONS
  remat_policy: str = "none"  # a key of models.common.remat.POLICIES
  scan_layers: bool = True
  lora: object = None  # a models.LoraConfig: low-rank adapters on its targets (models/common/lora.py)

  def __post_init__(self):
    name = self.gin_name
    from jaxformer.models.common.lora import as_lora_config

    object.__setattr__(self, "lora", as_lora_config(self.lora))
    if self.init_scheme not in INIT_SCHEMES:
      raise ValueError(f"{name}.init_scheme={self.init_scheme!r}: use one of {sorted(INIT_SCHEMES)}")
    for field in ("dtype", "param_dtype"):
      if getattr(self, field) not in DTYPES:
        raise ValueError(f"{name}.{field}={getattr(self, field)!r}: use one of {list(DTYPES)}")
    for field in ("vocab_size", "num_layers", "d_model", "num_heads", "max_length"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}.{field}={value!r} must be a positive integer")
    self.check_head_dim()

  def check_head_dim(self) -> None:
    """head_dim is d_model / num_heads; a family whose config sets head_dim itself checks it there."""
    if self.d_model % self.num_heads:
      name = self.gin_name
      raise ValueError(f"{name}.d_model={self.d_model} is not divisible by {name}.num_heads={self.num_heads}")

  @property
  def gin_name(self) -> str:
    """How gin names this config (in error messages: 'ModelConfig', 'LlamaConfig')."""
    return type(self).__name__

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @property
  def kv_heads(self) -> int:
    """Key/value heads (fewer than num_heads: grouped-query attention; 1: multi-query)."""
    return self.num_heads

  # --- what each family says for itself ------------------------------------------------------

  @abc.abstractmethod
  def block(self, decode: bool):
    """The decoder layer's Flax module class for this config (see models/common/decoder.py)."""

  @abc.abstractmethod
  def final_norm(self, name: str):
    """The norm applied after the last layer."""

  @property
  @abc.abstractmethod
  def matmul_params(self) -> int:
    """N of the 6N accounting: every matmul weight of the forward pass, the LM head's included."""

  # The family's HuggingFace layout module (models/<family>/hf.py): config.json both ways, every weight.
  hf_module: ClassVar[str] = ""

  @property
  def hf(self):
    return importlib.import_module(self.hf_module)

  @property
  def tie_embeddings(self) -> bool:
    """Whether the LM head is the embedding table (else an `lm_head` Dense)."""
    return False

  @property
  def lm_head_bias(self) -> bool:
    return False

  @property
  def final_norm_name(self) -> str:
    """The final norm's parameter name (CodeGen keeps HF's ln_f)."""
    return "final_norm"

  @property
  def window(self) -> int:
    """Sliding-window attention: a causal query sees keys at most this many positions back (0: all)."""
    return 0

  # --- what every caller uses ------------------------------------------------------------------

  def module(self):
    """The model (Flax Linen): token ids in, float32 logits out (models/common/decoder.py)."""
    from jaxformer.models.common.decoder import Decoder

    return Decoder(self)

  def flops_per_token(self, length: int) -> dict:
    """Training FLOPs per token under the two labelled accountings (docs/DESIGN.md, "Measures").

    Returns:
      {"flops_per_token_6n": 6N, "flops_per_token_with_attention": 6N + causal attention}, where attention
      is QK^T and AV (2 matmuls x 2 FLOPs x length x heads x head_dim per layer forward, x3 with the backward
      pass), halved because the causal mask skips the upper triangle (a sliding window shorter than the
      length counts only the window).
    """
    six_n = 6 * self.matmul_params
    seen = min(length, self.window) if self.window else length
    attention = 12 * self.num_layers * seen * self.num_heads * self.head_dim // 2
    return {"flops_per_token_6n": six_n, "flops_per_token_with_attention": six_n + attention}

  def head_params(self, params: dict) -> dict:
    """The parameters the LM head reads (the chunked loss differentiates them): lm_head, or the tied table."""
    return {"embed": params["embed"]} if self.tie_embeddings else params["lm_head"]

  @classmethod
  def hf_model_types(cls) -> tuple[str, ...]:
    """HuggingFace config.json model_types this family imports (its hf module's MODEL_TYPES)."""
    return importlib.import_module(cls.hf_module).MODEL_TYPES

  def replace(self, **changes) -> "FamilyConfig":
    return dataclasses.replace(self, **changes)
