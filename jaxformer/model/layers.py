"""The CodeGen block: one LayerNorm feeding attention and MLP in parallel.

    h = x + attention(ln(x)) + mlp(ln(x))

Parameter names follow HuggingFace CodeGen so export is a renaming:
ln (ln_1), qkv (qkv_proj), out (out_proj), fc_in, fc_out.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from jaxformer.model.attention import decode_kernel, get_attention
from jaxformer.model.config import INIT_SCHEMES, ModelConfig
from jaxformer.model.rotary import apply_rotary


def weight_init(config: ModelConfig, residual_output: bool = False):
  """normal(initializer_range), scaled by the init scheme's depth factor on residual-branch outputs."""
  factor = INIT_SCHEMES[config.init_scheme](config.num_layers) if residual_output else 1.0
  return nn.initializers.normal(stddev=config.initializer_range * factor)


def layer_norm(config: ModelConfig, name: str):
  return nn.LayerNorm(
    epsilon=config.layer_norm_epsilon,
    dtype=config.dtype,
    param_dtype=config.param_dtype,
    use_fast_variance=False,
    scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
    name=name,
  )


class Dense(nn.Module):
  """x @ kernel (+ bias) contracting the last axis; kernel axes named logically."""

  features: tuple[int, ...]
  kernel_axes: tuple[str, ...]
  config: ModelConfig
  use_bias: bool = False
  contract_dims: int = 1
  residual_output: bool = False  # writes into the residual stream: the init scheme may scale it

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    in_shape = x.shape[-self.contract_dims :]
    kernel = self.param(
      "kernel",
      nn.with_logical_partitioning(weight_init(cfg, self.residual_output), self.kernel_axes),
      in_shape + tuple(self.features),
      cfg.param_dtype,
    )
    axes = tuple(range(x.ndim - self.contract_dims, x.ndim))
    y = jax.lax.dot_general(
      x.astype(cfg.dtype), kernel.astype(cfg.dtype), ((axes, tuple(range(self.contract_dims))), ((), ()))
    )
    if self.use_bias:
      bias_axes = self.kernel_axes[self.contract_dims :]
      bias = self.param(
        "bias", nn.with_logical_partitioning(nn.initializers.zeros, bias_axes), tuple(self.features), cfg.param_dtype
      )
      y = y + bias.astype(cfg.dtype)
    return y


class Attention(nn.Module):
  """Self-attention. With decode=True, keys and values also go to a fixed-size cache
  ('cache' collection, [batch, heads, cache_length, head_dim]) at `positions`, and queries attend
  over the whole cache under `mask` ([batch, 1, length, cache_length])."""

  config: ModelConfig
  decode: bool = False

  @nn.compact
  def __call__(self, x, positions, mask):
    cfg = self.config
    qkv = Dense((3, cfg.num_heads, cfg.head_dim), ("embed", "qkv", "heads", "kv"), cfg, name="qkv")(x)
    qkv = checkpoint_name(qkv, "qkv")
    query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    query = nn.with_logical_constraint(
      apply_rotary(query, positions, cfg.rotary_dim), ("batch", "length", "heads", "kv")
    )
    key = nn.with_logical_constraint(apply_rotary(key, positions, cfg.rotary_dim), ("batch", "length", "heads", "kv"))
    if self.decode:
      key, value = self._cached(key, value, positions)
    out = get_attention(decode_kernel(cfg.attention) if self.decode else cfg.attention)(query, key, value, mask)
    out = nn.with_logical_constraint(out, ("batch", "length", "heads", "kv"))
    out = Dense((cfg.d_model,), ("heads", "kv", "embed"), cfg, contract_dims=2, residual_output=True, name="out")(out)
    return checkpoint_name(out, "attention_out")

  def _cached(self, key, value, positions):
    """The cache is stored [batch, heads, cache_length, head_dim], the layout the attention's batched
    matmuls read: stored [batch, length, heads, head_dim], XLA would transpose (copy) the whole
    cache at every decoded token."""
    initialized = self.has_variable("cache", "key")
    # At init the call's length is the cache length; afterwards the shapes stay.
    heads_first = lambda x: x.transpose(0, 2, 1, 3)
    cached_key = self.variable("cache", "key", jnp.zeros, heads_first(key).shape, key.dtype)
    cached_value = self.variable("cache", "value", jnp.zeros, heads_first(value).shape, value.dtype)
    if not initialized:
      return key, value
    rows = jnp.arange(key.shape[0])[:, None]
    cached_key.value = cached_key.value.at[rows, :, positions].set(key)
    cached_value.value = cached_value.value.at[rows, :, positions].set(value)
    return heads_first(cached_key.value), heads_first(cached_value.value)


class Mlp(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    h = Dense((cfg.mlp_dim,), ("embed", "mlp"), cfg, use_bias=True, name="fc_in")(x)
    h = nn.with_logical_constraint(jax.nn.gelu(h, approximate=True), ("batch", "length", "mlp"))
    h = checkpoint_name(h, "mlp_hidden")
    out = Dense((cfg.d_model,), ("mlp", "embed"), cfg, use_bias=True, residual_output=True, name="fc_out")(h)
    return checkpoint_name(out, "mlp_out")


class Block(nn.Module):
  """One decoder layer. Signature (carry, broadcast...) -> (carry, None) so nn.scan can stack it."""

  config: ModelConfig
  decode: bool = False

  @nn.compact
  def __call__(self, x, positions, mask):
    cfg = self.config
    h = layer_norm(cfg, "ln")(x)
    x = x + Attention(cfg, self.decode, name="attention")(h, positions, mask) + Mlp(cfg, name="mlp")(h)
    x = nn.with_logical_constraint(x.astype(jnp.dtype(cfg.dtype)), ("batch", "length", "embed"))
    return x, None
