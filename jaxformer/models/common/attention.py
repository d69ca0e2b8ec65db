"""Attention masks and the attention kernels chosen by a model config's `attention` field.

A kernel is one function in IMPLEMENTATIONS, called (query, key, value, mask) with query
[batch, length, heads, head_dim] and key, value [batch, k_length, kv_heads, head_dim]: kv_heads may be
fewer than heads (grouped-query attention; 1 is multi-query), each kv head serving heads / kv_heads
consecutive query heads, as HuggingFace's repeat_kv lays them out. No kernel repeats K and V in memory.
Most take the dense [batch, 1, length, k_length] mask; those in MASK_FROM_IDS take (segment_ids,
prefix_mask) instead and build the mask themselves, tile by tile, with the window get_attention gives them
(see mask_inputs).
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer.models.common.flash import backend_for as flash_backend_for
from jaxformer.models.common.flash import flash_attention
from jaxformer.models.common.layers import program_platform


def attention_mask(segment_ids, prefix_mask, window: int = 0):
  """Which keys each query may see.

  A query attends to a key when both lie in the same segment and either the key is not later than the
  query (and, with a window, fewer than `window` positions earlier) or both are prefix tokens (prefix-LM).

  Args:
    segment_ids: [batch, length] int; tokens of one packed document share an id.
    prefix_mask: [batch, length] bool/int; 1 on bidirectional (prefix) tokens.
    window: sliding-window length (0: none), as HuggingFace's `sliding_window`.
  Returns:
    [batch, 1, length, length] bool, indexed [b, _, query, key].
  """
  length = segment_ids.shape[-1]
  same_segment = segment_ids[:, :, None] == segment_ids[:, None, :]
  index = jnp.arange(length)
  causal = index[:, None] >= index[None, :]
  if window:
    causal = causal & (index[None, :] > index[:, None] - window)
  prefix = prefix_mask.astype(bool)
  both_prefix = prefix[:, :, None] & prefix[:, None, :]
  return (same_segment & (causal[None] | both_prefix))[:, None]


def xla_attention(query, key, value, mask):
  """Plain einsum attention; scores and softmax in float32. Grouped queries share their kv head by a
  reshape (no repeated K or V).

  Args:
    query: [batch, length, heads, head_dim]; key, value: [batch, k_length, kv_heads, head_dim].
    mask: [batch, 1, length, k_length] bool.
  Returns:
    [batch, length, heads, head_dim] in value's dtype.
  """
  batch, length, heads, head_dim = query.shape
  kv_heads = key.shape[2]
  scale = head_dim**-0.5
  if kv_heads == heads:
    scores = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
    scores = jnp.where(mask, scores * scale, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(value.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, value)
  # Scores as [batch, kv_heads, q, group, k]: the order dot_general produces (batch dims, then the
  # query's free dims as they lie, then the key's), so the [.., q, k]-sized tensors are never transposed
  # (ordering them [.., group, q, k] cost about 12% of the tiny Llama step on CPU in copies).
  grouped = query.reshape(batch, length, kv_heads, heads // kv_heads, head_dim)
  scores = jnp.einsum("bqkgd,bskd->bkqgs", grouped, key, preferred_element_type=jnp.float32)
  scores = jnp.where(mask[:, :, :, None], scores * scale, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(value.dtype)
  return jnp.einsum("bkqgs,bskd->bqkgd", probs, value).reshape(batch, length, heads, head_dim)


def _dot_product_attention(implementation):

  def attend(query, key, value, mask):  # jax's own handles kv_heads < heads
    return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation=implementation)

  return attend


def _ways(mesh, axes) -> int:
  return math.prod(mesh.shape[a] for a in jax.tree.leaves(axes))


def sharded_flash_attention(query, key, value, mask, window: int = 0):
  """flash.flash_attention on each device's shard: a Pallas call is opaque to XLA's partitioner
  (which would gather its inputs whole), so under a mesh it runs in shard_map with batch and heads
  split as the activations' logical rules say. Sequence sharding is not supported.

  kv heads split like the query heads where the mesh divides them; where it does not (multi-query
  attention on a tensor axis wider than the kv heads), each device keeps every kv head and slices out
  the ones its query heads read."""
  segment_ids, prefix_mask = mask
  mesh = jax.sharding.get_abstract_mesh()
  # Mosaic when the program is for TPU (also when compiled ahead of time for a TPU topology on a
  # CPU host, as `plan` does), Triton on GPUs, interpret mode otherwise.
  attend = functools.partial(flash_attention, backend=flash_backend_for(program_platform()), window=window)
  if mesh.empty or mesh.size == 1:
    return attend(query, key, value, segment_ids, prefix_mask)
  spec = nn.logical_to_mesh_axes(("batch", "length", "heads", "kv"))
  for axis, name in ((1, "length"), (3, "kv")):
    if spec[axis] is not None:  # a split head_dim would give each device a partial softmax
      raise ValueError(f"attention='flash' needs '{name}' unsharded; the rules map it to {spec[axis]}")
  for axis, name in ((0, "batch"), (2, "heads")):
    ways = _ways(mesh, spec[axis])
    if query.shape[axis] % ways:  # shard_map needs even splits where XLA's partitioner would pad
      raise ValueError(
        f"attention='flash': {name} of {query.shape[axis]} does not split evenly over the "
        f"{ways} devices of mesh axes {spec[axis]}; use 'xla' or change the mesh or sizes"
      )
  heads, kv_heads = query.shape[2], key.shape[2]
  head_ways = _ways(mesh, spec[2])
  local_heads = heads // head_ways
  if kv_heads % head_ways == 0:
    kv_spec, kv_slice = spec, None
  elif (heads // kv_heads) % local_heads == 0:  # each device's query heads read one kv head
    kv_spec, kv_slice = jax.P(spec[0], spec[1], None, spec[3]), heads // kv_heads
  else:
    raise ValueError(
      f"attention='flash': {kv_heads} kv heads for {heads} query heads over {head_ways} devices leave a "
      "device's query heads reading parts of two kv heads; use 'xla' or change the mesh"
    )

  def local(q, k, v, s, p):
    if kv_slice is not None:  # the one kv head this device's query heads share
      first = jax.lax.axis_index(spec[2]) * local_heads // kv_slice
      k, v = (jax.lax.dynamic_slice_in_dim(x, first, 1, axis=2) for x in (k, v))
    return attend(q, k, v, s, p)

  ids_spec = jax.P(spec[0], None)
  return jax.shard_map(local, in_specs=(spec, kv_spec, kv_spec, ids_spec, ids_spec), out_specs=spec, check_vma=False)(
    query, key, value, segment_ids, prefix_mask
  )


IMPLEMENTATIONS = {
  "xla": xla_attention,
  # jax's own dispatcher: the XLA path on CPU/TPU, usable to check the cuDNN call shape.
  "jax": _dot_product_attention(None),
  # cuDNN fused attention on NVIDIA GPUs (bf16/fp16 inputs only).
  "cudnn": _dot_product_attention("cudnn"),
  # Pallas blockwise attention, mask built per tile from segment ids, prefix flags and the window
  # (models/common/flash.py): Mosaic on TPU, Triton on NVIDIA GPUs, interpret mode elsewhere.
  "flash": sharded_flash_attention,
}
MASK_FROM_IDS = frozenset({"flash"})


def mask_inputs(name: str, segment_ids, prefix_mask, window: int = 0):
  """What kernel `name` takes as its mask: (segment_ids, prefix_mask) or the dense mask (with the window)."""
  if name in MASK_FROM_IDS:
    return segment_ids, prefix_mask
  return attention_mask(segment_ids, prefix_mask, window)


def decode_kernel(name: str) -> str:
  """The kernel used while decoding (one query per step over a cache, with a dense mask)."""
  return "xla" if name in MASK_FROM_IDS else name


def get_attention(name: str, window: int = 0):
  """The kernel `name`, called (query, key, value, mask); the mask-building ones get the window here (a
  Python int, never traced), the others find it in the dense mask."""
  if name not in IMPLEMENTATIONS:
    raise ValueError(f"attention={name!r} is unknown; choose one of {sorted(IMPLEMENTATIONS)}")
  if name in MASK_FROM_IDS:
    return functools.partial(IMPLEMENTATIONS[name], window=window)
  return IMPLEMENTATIONS[name]
