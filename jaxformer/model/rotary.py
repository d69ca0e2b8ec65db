"""Interleaved ("rotate every two") rotary position embedding, as in GPT-J and CodeGen."""

import jax.numpy as jnp


def rotate_every_two(x):
  """[..., 2k] -> [..., 2k] with each pair (a, b) replaced by (-b, a)."""
  evens, odds = x[..., ::2], x[..., 1::2]
  return jnp.stack([-odds, evens], axis=-1).reshape(x.shape)


def apply_rotary(x, positions, rotary_dim: int, base: float = 10000.0):
  """Rotates the first `rotary_dim` features of each head.

  Args:
    x: [batch, length, heads, head_dim] queries or keys.
    positions: [batch, length] integer positions.
    rotary_dim: how many leading features of each head rotate (even).
  Returns:
    x with the same shape and dtype.
  """
  inv_freq = 1.0 / (base ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [b, t, rotary_dim/2]
  # Each frequency serves one (even, odd) pair, so repeat it twice in place.
  sin = jnp.repeat(jnp.sin(angles), 2, axis=-1)[:, :, None, :]
  cos = jnp.repeat(jnp.cos(angles), 2, axis=-1)[:, :, None, :]
  rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
  rot32 = rot.astype(jnp.float32)
  rotated = (rot32 * cos + rotate_every_two(rot32) * sin).astype(x.dtype)
  return jnp.concatenate([rotated, rest], axis=-1)
