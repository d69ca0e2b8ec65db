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
