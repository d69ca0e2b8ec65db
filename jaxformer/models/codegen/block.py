"""The CodeGen block: one LayerNorm feeding attention and MLP in parallel.

    h = x + attention(ln(x)) + mlp(ln(x))

Parameter names follow HuggingFace CodeGen so export is a renaming:
ln (ln_1), qkv (qkv_proj), out (out_proj), fc_in, fc_out.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from jaxformer.models.common.attention import decode_kernel, get_attention
from jaxformer.models.common.layers import Dense, cached_kv, layer_norm
from jaxformer.models.common.rotary import apply_rotary


class Attention(nn.Module):
  """Self-attention. With decode=True, keys and values also go to a fixed-size cache (layers.cached_kv) at
  `positions`, and queries attend over the whole cache under `mask` ([batch, 1, length, cache_length])."""

  config: object
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
      key, value = cached_kv(self, key, value, positions)
    out = get_attention(decode_kernel(cfg.attention) if self.decode else cfg.attention)(query, key, value, mask)
    out = nn.with_logical_constraint(out, ("batch", "length", "heads", "kv"))
    out = Dense((cfg.d_model,), ("heads", "kv", "embed"), cfg, contract_dims=2, residual_output=True, name="out")(out)
    return checkpoint_name(out, "attention_out")


class Mlp(nn.Module):
  config: object

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

  config: object
  decode: bool = False

  @nn.compact
  def __call__(self, x, positions, mask):
    cfg = self.config
    h = layer_norm(cfg, "ln", cfg.layer_norm_epsilon)(x)
    x = x + Attention(cfg, self.decode, name="attention")(h, positions, mask) + Mlp(cfg, name="mlp")(h)
    x = nn.with_logical_constraint(x.astype(jnp.dtype(cfg.dtype)), ("batch", "length", "embed"))
    return x, None
