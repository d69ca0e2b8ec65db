"""Attention masks and the attention kernels chosen by `ModelConfig.attention`.

A kernel is one function in IMPLEMENTATIONS, called (query, key, value, mask). Most take the dense
[batch, 1, length, length] mask; those in MASK_FROM_IDS take (segment_ids, prefix_mask) instead and
build the mask themselves, tile by tile (see mask_inputs).
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer.model.flash import backend_for as flash_backend_for
from jaxformer.model.flash import flash_attention


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


def sharded_flash_attention(query, key, value, mask):
  """flash.flash_attention on each device's shard: a Pallas call is opaque to XLA's partitioner
  (which would gather its inputs whole), so under a mesh it runs in shard_map with batch and heads
  split as the activations' logical rules say. Sequence sharding is not supported."""
  segment_ids, prefix_mask = mask
  mesh = jax.sharding.get_abstract_mesh()
  device = None if mesh.empty else mesh.abstract_device
  # Mosaic when the program is for TPU (also when compiled ahead of time for a TPU topology on a
  # CPU host, as `plan` does), Triton on GPUs, interpret mode otherwise.
  platform = device.platform if device is not None else jax.default_backend()
  attend = functools.partial(flash_attention, backend=flash_backend_for(platform))
  if mesh.empty or mesh.size == 1:
    return attend(query, key, value, segment_ids, prefix_mask)
  spec = nn.logical_to_mesh_axes(("batch", "length", "heads", "kv"))
  for axis, name in ((1, "length"), (3, "kv")):
    if spec[axis] is not None:  # a split head_dim would give each device a partial softmax
      raise ValueError(f"ModelConfig.attention='flash' needs '{name}' unsharded; the rules map it to {spec[axis]}")
  for axis, name in ((0, "batch"), (2, "heads")):
    ways = math.prod(mesh.shape[a] for a in jax.tree.leaves(spec[axis]))
    if query.shape[axis] % ways:  # shard_map needs even splits where XLA's partitioner would pad
      raise ValueError(
        f"ModelConfig.attention='flash': {name} of {query.shape[axis]} does not split evenly over the "
        f"{ways} devices of mesh axes {spec[axis]}; use 'xla' or change the mesh or sizes"
      )
  ids_spec = jax.P(spec[0], None)
  return jax.shard_map(attend, in_specs=(spec, spec, spec, ids_spec, ids_spec), out_specs=spec, check_vma=False)(
    query, key, value, segment_ids, prefix_mask
  )


IMPLEMENTATIONS = {
  "xla": xla_attention,
  # jax's own dispatcher: the XLA path on CPU/TPU, usable to check the cuDNN call shape.
  "jax": _dot_product_attention(None),
  # cuDNN fused attention on NVIDIA GPUs (bf16/fp16 inputs only).
  "cudnn": _dot_product_attention("cudnn"),
  # Pallas blockwise attention, mask built per tile from segment ids and prefix flags (model/flash.py):
  # Mosaic on TPU, Triton on NVIDIA GPUs, interpret mode elsewhere.
  "flash": sharded_flash_attention,
}
MASK_FROM_IDS = frozenset({"flash"})


def mask_inputs(name: str, segment_ids, prefix_mask):
  """What kernel `name` takes as its mask: (segment_ids, prefix_mask) or the dense mask."""
  if name in MASK_FROM_IDS:
    return segment_ids, prefix_mask
  return attention_mask(segment_ids, prefix_mask)


def decode_kernel(name: str) -> str:
  """The kernel used while decoding (one query per step over a cache, with a dense mask)."""
  return "xla" if name in MASK_FROM_IDS else name


def get_attention(name: str):
  if name not in IMPLEMENTATIONS:
    raise ValueError(f"ModelConfig.attention={name!r} is unknown; choose one of {sorted(IMPLEMENTATIONS)}")
  return IMPLEMENTATIONS[name]
