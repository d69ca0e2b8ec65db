"""Attention masks and the attention kernels chosen by `ModelConfig.attention`.

A new kernel (splash, flash, ring) is one function added to IMPLEMENTATIONS.
"""

import jax
import jax.numpy as jnp


def attention_mask(segment_ids, prefix_mask):
  """Which keys each query may see.

  A query attends to a key when both lie in the same segment and either the key
  is not later than the query or both are prefix tokens (prefix-LM).

  Args:
    segment_ids: [batch, length] int; tokens of one packed document share an id.
    prefix_mask: [batch, length] bool/int; 1 on bidirectional (prefix) tokens.
  Returns:
    [batch, 1, length, length] bool, indexed [b, _, query, key].
  """
  length = segment_ids.shape[-1]
  same_segment = segment_ids[:, :, None] == segment_ids[:, None, :]
  index = jnp.arange(length)
  causal = index[:, None] >= index[None, :]
  prefix = prefix_mask.astype(bool)
  both_prefix = prefix[:, :, None] & prefix[:, None, :]
  return (same_segment & (causal[None] | both_prefix))[:, None]


def xla_attention(query, key, value, mask):
  """Plain einsum attention; scores and softmax in float32.

  Args:
    query, key, value: [batch, length, heads, head_dim].
    mask: [batch, 1, q_length, k_length] bool.
  Returns:
    [batch, length, heads, head_dim] in value's dtype.
  """
  scale = query.shape[-1] ** -0.5
  scores = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
  scores = jnp.where(mask, scores * scale, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(value.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", probs, value)


def _dot_product_attention(implementation):

  def attend(query, key, value, mask):
    return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation=implementation)

  return attend


IMPLEMENTATIONS = {
  "xla": xla_attention,
  # jax's own dispatcher: the XLA path on CPU/TPU, usable to check the cuDNN call shape.
  "jax": _dot_product_attention(None),
  # cuDNN fused attention on NVIDIA GPUs (bf16/fp16 inputs only).
  "cudnn": _dot_product_attention("cudnn"),
}


def get_attention(name: str):
  if name not in IMPLEMENTATIONS:
    raise ValueError(f"ModelConfig.attention={name!r} is unknown; choose one of {sorted(IMPLEMENTATIONS)}")
  return IMPLEMENTATIONS[name]
