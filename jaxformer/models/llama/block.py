"""The Llama-family decoder layer: pre-norm attention, then pre-norm MLP, each added to the residual.

    h = x + attention(attention_norm(x));  out = h + mlp(mlp_norm(h))

Parameters (one layer): attention_norm, attention/{q, k, v, o}, mlp_norm, mlp/{gate, up, down} (SwiGLU)
or mlp/{fc_in, fc_out} (GELU). models/llama/hf.py maps them to HuggingFace's names.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from jaxformer.models.common.attention import decode_kernel, get_attention
from jaxformer.models.common.layers import Dense, cached_kv, constrain
from jaxformer.models.common.rotary import apply_rotary_half, rope_inv_freq


class Attention(nn.Module):
  """Grouped-query self-attention with rotate-half rotary. Decoding caches kv_heads only (layers.cached_kv)."""

  config: object
  decode: bool = False

  @nn.compact
  def __call__(self, x, positions, mask):
    cfg = self.config
    heads, kv_heads, head_dim = cfg.num_heads, cfg.kv_heads, cfg.head_dim
    project = lambda n, axes, name: Dense((n, head_dim), ("embed", axes, "kv"), cfg, use_bias=cfg.qkv_bias, name=name)
    query = checkpoint_name(project(heads, "heads", "q")(x), "qkv")
    key = checkpoint_name(project(kv_heads, "kv_heads", "k")(x), "qkv")
    value = checkpoint_name(project(kv_heads, "kv_heads", "v")(x), "qkv")
    inv_freq = rope_inv_freq(head_dim, cfg.rope_theta, cfg.rope_scaling_dict)
    query = nn.with_logical_constraint(
      apply_rotary_half(query, positions, inv_freq), ("batch", "length", "heads", "kv")
    )
    key = constrain(apply_rotary_half(key, positions, inv_freq), ("batch", "length", "kv_heads", "kv"))
    value = constrain(value, ("batch", "length", "kv_heads", "kv"))
    if self.decode:
      key, value = cached_kv(self, key, value, positions)
    out = get_attention(decode_kernel(cfg.attention) if self.decode else cfg.attention, cfg.window)(
      query, key, value, mask
    )
    out = nn.with_logical_constraint(out, ("batch", "length", "heads", "kv"))
    out = Dense(
      (cfg.d_model,),
      ("heads", "kv", "embed"),
      cfg,
      use_bias=cfg.out_bias,
      contract_dims=2,
      residual_output=True,
      name="o",
    )(out)
    return checkpoint_name(out, "attention_out")


class Mlp(nn.Module):
  """SwiGLU (down(silu(gate(x)) * up(x))) or GELU-tanh (fc_out(gelu(fc_in(x)))), as the config says."""

  config: object

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    dense = lambda name: Dense((cfg.mlp_dim,), ("embed", "mlp"), cfg, use_bias=cfg.mlp_bias, name=name)
    if cfg.mlp == "swiglu":
      h = jax.nn.silu(dense("gate")(x)) * dense("up")(x)
      out_name = "down"
    else:
      h = jax.nn.gelu(dense("fc_in")(x), approximate=True)
      out_name = "fc_out"
    h = checkpoint_name(nn.with_logical_constraint(h, ("batch", "length", "mlp")), "mlp_hidden")
    out = Dense((cfg.d_model,), ("mlp", "embed"), cfg, use_bias=cfg.mlp_bias, residual_output=True, name=out_name)(h)
    return checkpoint_name(out, "mlp_out")


class Block(nn.Module):
  """One decoder layer. Signature (carry, broadcast...) -> (carry, None) so nn.scan can stack it."""

  config: object
  decode: bool = False

  @nn.compact
  def __call__(self, x, positions, mask):
    cfg = self.config
    h = x + Attention(cfg, self.decode, name="attention")(cfg.norm_layer("attention_norm")(x), positions, mask)
    out = h + Mlp(cfg, name="mlp")(cfg.norm_layer("mlp_norm")(h))
    return nn.with_logical_constraint(out.astype(jnp.dtype(cfg.dtype)), ("batch", "length", "embed")), None
