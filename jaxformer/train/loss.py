"""Weighted cross-entropy with an optional z-loss, and the token metrics."""

import jax
import jax.numpy as jnp


def cross_entropy_sums(logits, targets, weights, z_loss: float = 0.0):
  """Sums over tokens (normalise once over the whole batch, so microbatches add up exactly).

  Args:
    logits: [batch, length, vocab] float32.
    targets: [batch, length] int.
    weights: [batch, length] 0/1 loss weights.
  Returns:
    dict of sums: loss (cross-entropy + z-loss), cross_entropy, z_loss, correct, weight.
  """
  weights = weights.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  cross_entropy = (log_z - target_logit) * weights
  z_term = z_loss * jnp.square(log_z) * weights
  correct = (jnp.argmax(logits, axis=-1) == targets) * weights
  return {
    "loss": jnp.sum(cross_entropy + z_term),
    "cross_entropy": jnp.sum(cross_entropy),
    "z_loss": jnp.sum(z_term),
    "correct": jnp.sum(correct),
    "weight": jnp.sum(weights),
  }


def chunked_cross_entropy_sums(
  logits_fn, head_params, hidden, targets, weights, z_loss: float = 0.0, chunk_length: int = 512, unroll: bool = False
):
  """cross_entropy_sums without ever holding [batch, length, vocab] logits, forward or backward.

  The length is cut into chunks (the last one shorter when chunk_length does not divide it). A scan over
  the chunks computes each one's logits = logits_fn(head_params, hidden chunk), float32, and adds up its
  sums; jax.checkpoint makes the backward recompute each chunk's logits instead of keeping them, so at
  most one chunk's logits and their gradient live at a time. Same sums and gradients as full logits.

  Args:
    logits_fn: (head_params, [batch, chunk, embed]) -> [batch, chunk, vocab] float32 logits.
    head_params: what logits_fn differentiates (the LM head's parameters).
    hidden: [batch, length, embed], the final hidden state.
    targets, weights, z_loss: as cross_entropy_sums.
    chunk_length: positions per chunk (> 0).
    unroll: unroll the scan (XLA's cost analysis counts a loop body once; plan counts FLOPs unrolled).
  """
  if chunk_length <= 0:
    raise ValueError(f"loss chunk_length={chunk_length} must be positive")
  batch, length = targets.shape
  chunk_length = min(chunk_length, length)
  num_chunks, rest = divmod(length, chunk_length)

  @jax.checkpoint
  def chunk_sums(params, h, t, w):
    return cross_entropy_sums(logits_fn(params, h), t, w, z_loss)

  def chunks(x):  # [batch, num_chunks * chunk, ...] -> [num_chunks, batch, chunk, ...]
    x = x[:, : num_chunks * chunk_length]
    return jnp.swapaxes(x.reshape((batch, num_chunks, chunk_length) + x.shape[2:]), 0, 1)

  def body(carry, xs):
    return jax.tree.map(jnp.add, carry, chunk_sums(head_params, *xs)), None

  zero = {k: jnp.zeros((), jnp.float32) for k in ("loss", "cross_entropy", "z_loss", "correct", "weight")}
  sums, _ = jax.lax.scan(body, zero, (chunks(hidden), chunks(targets), chunks(weights)), unroll=unroll)
  if rest:
    tail = num_chunks * chunk_length
    tail_sums = chunk_sums(head_params, hidden[:, tail:], targets[:, tail:], weights[:, tail:])
    sums = jax.tree.map(jnp.add, sums, tail_sums)
  return sums
