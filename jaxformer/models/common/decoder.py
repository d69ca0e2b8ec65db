"""The decoder every family shares, as a prefix-LM: embedding, N layers of the family's block (scanned or
unrolled), the family's final norm, and the LM head (its own Dense, or the tied embedding table)."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer.models.common.attention import attention_mask, mask_inputs
from jaxformer.models.common.layers import Dense, weight_init
from jaxformer.models.common.remat import get_policy


def _block_class(config, decode: bool):
  block = config.block(decode)
  use_remat, policy = get_policy(config.remat_policy)
  if not use_remat or decode:
    return block
  return nn.remat(block, policy=policy, prevent_cse=not config.scan_layers)


def lm_head(config, name: str | None = None) -> Dense:
  """The untied LM head: Dense to the vocabulary (a bias where the family has one), axes ("embed", "vocab")."""
  return Dense((config.vocab_size,), ("embed", "vocab"), config, use_bias=config.lm_head_bias, name=name)


def _tied_logits(config, table, hidden):
  return jnp.einsum("ble,ve->blv", hidden.astype(config.dtype), table.astype(config.dtype))


def head_logits(config, head_params, hidden):
  """float32 logits of `hidden` (the final hidden state, as `return_hidden=True` gives it, or a slice of its
  length) under config.head_params(params): the same values the model returns for those positions."""
  if config.tie_embeddings:
    logits = _tied_logits(config, head_params["embed"], hidden)
  else:
    logits = lm_head(config).apply({"params": head_params}, hidden)
  return nn.with_logical_constraint(logits, ("batch", "length", "vocab")).astype(jnp.float32)


class Decoder(nn.Module):
  """Token ids in, float32 logits out.

  Call with:
    tokens: [batch, length] int token ids.
    positions: [batch, length] int, position of each token in its document (default 0..length-1).
    segment_ids: [batch, length] int, packed-document ids (default all ones: one document).
    prefix_mask: [batch, length] 0/1, 1 where the token is in the bidirectional prefix
      (default zeros: a plain causal decoder).
    decode: use and fill the KV cache (mutable 'cache' collection). Initialise it by calling
      model.init(..., tokens of shape [batch, cache_length], decode=True); then each call writes
      its tokens at `positions` (one sequence per row; segment_ids are ignored).
    return_hidden: return the final hidden state instead of the logits; the LM head's parameters exist all
      the same, and `head_logits` turns the state (or slices of it: the chunked loss) into the logits.
  Returns:
    logits [batch, length, vocab] float32; with return_hidden, hidden [batch, length, embed] in dtype.
  """

  config: object

  @nn.compact
  def __call__(
    self, tokens, positions=None, segment_ids=None, prefix_mask=None, decode: bool = False, return_hidden: bool = False
  ):
    cfg = self.config
    batch, length = tokens.shape
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
    if segment_ids is None:
      segment_ids = jnp.ones((batch, length), jnp.int32)
    if prefix_mask is None:
      prefix_mask = jnp.zeros((batch, length), jnp.int32)

    table = self.param(
      "embed",
      nn.with_logical_partitioning(weight_init(cfg, "embedding"), ("vocab", "embed")),
      (cfg.vocab_size, cfg.d_model),
      cfg.param_dtype,
    )
    # Gather over fsdp only, as every FSDP weight is: rows stay split over "vocab"'s axis, and XLA
    # partitions the lookup instead of replicating the whole table (test_sharding).
    embed = nn.with_logical_constraint(table, ("vocab", None))
    x = jnp.take(embed, tokens, axis=0).astype(cfg.dtype)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    if decode:
      mask = self._decode_mask(positions, prefix_mask)
    else:
      mask = mask_inputs(cfg.attention, segment_ids, prefix_mask, cfg.window)

    block = _block_class(cfg, decode)
    if cfg.scan_layers:
      stack = nn.scan(
        block,
        variable_axes={"params": 0, "cache": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast, nn.broadcast),
        length=cfg.num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
      )
      x, _ = stack(cfg, decode, name="layers")(x, positions, mask)
    else:
      for i in range(cfg.num_layers):
        x, _ = block(cfg, decode, name=f"layers_{i}")(x, positions, mask)

    x = cfg.final_norm(cfg.final_norm_name)(x)
    if cfg.tie_embeddings:
      if return_hidden:
        return x
      logits = nn.with_logical_constraint(_tied_logits(cfg, table, x), ("batch", "length", "vocab"))
      return logits.astype(jnp.float32)
    head = lm_head(cfg, name="lm_head")
    if return_hidden:
      if self.is_initializing():
        head(x[:, :1])  # the parameter tree is the same whatever the call returns
      return x
    logits = nn.with_logical_constraint(head(x), ("batch", "length", "vocab"))
    return logits.astype(jnp.float32)

  def _decode_mask(self, positions, prefix_mask):
    """[batch, 1, length, cache_length]: keys at or before each query's position (within the family's
    window), and prefix keys for prefix queries. The prefix flags of written positions live in the cache."""
    window = self.config.window
    initialized = self.has_variable("cache", "prefix")
    cached_prefix = self.variable("cache", "prefix", jnp.zeros, positions.shape, jnp.int32)
    if not initialized:
      return attention_mask(jnp.ones_like(positions), prefix_mask, window)
    rows = jnp.arange(positions.shape[0])[:, None]
    cached_prefix.value = cached_prefix.value.at[rows, positions].set(prefix_mask.astype(jnp.int32))
    keys = jnp.arange(cached_prefix.value.shape[1])
    causal = keys[None, None, :] <= positions[:, :, None]
    if window:
      causal = causal & (keys[None, None, :] > positions[:, :, None] - window)
    both_prefix = prefix_mask.astype(bool)[:, :, None] & cached_prefix.value.astype(bool)[:, None, :]
    return (causal | both_prefix)[:, None]


def unrolled(model, params):
  """The same model with its layers unrolled, and params to match ("layers" stacked [L, ...] ->
  "layers_0" ... "layers_{L-1}").

  Decoding runs unrolled: under the layer scan the KV cache is a scanned variable, so every
  decoded token would copy the whole cache out of the scan's outputs; unrolled, each layer's cache
  is its own loop-carried buffer that XLA updates in place."""
  if not model.config.scan_layers:
    return model, params
  params = dict(params)
  stacked = params.pop("layers")
  for i in range(model.config.num_layers):
    params[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
  return type(model)(dataclasses.replace(model.config, scan_layers=False)), params
