"""Rotary position embeddings: interleaved ("rotate every two", GPT-J and CodeGen) and rotate-half (Llama,
Qwen2, StarCoder2, with rope_theta and rope_scaling)."""

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


# --- rotate-half rotary (Llama, Qwen2, StarCoder2): the whole head, frequencies from rope_theta and a
# rope_scaling entry, exactly as HuggingFace's modeling_rope_utils computes them.
ROPE_KEYS = {
  "default": (),
  "linear": ("factor",),
  "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}


def check_rope_scaling(scaling: dict | None, where: str = "rope_scaling") -> str:
  """The rope_type of a rope_scaling dict; ValueError naming the field for a type or key jaxformer lacks."""
  scaling = dict(scaling or {})
  kind = scaling.get("rope_type", scaling.get("type", "default"))
  if kind not in ROPE_KEYS:
    raise ValueError(f"{where}.rope_type={kind!r} is not supported; jaxformer has {list(ROPE_KEYS)}")
  missing = [k for k in ROPE_KEYS[kind] if k not in scaling]
  if missing:
    raise ValueError(f"{where}: rope_type {kind!r} needs {missing}")
  return kind


def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None = None, where: str = "rope_scaling"):
  """The inverse frequencies [head_dim / 2] (float32) for rope_theta and a rope_scaling dict.

  rope_type 'linear' divides them by `factor`; 'llama3' divides the low frequencies by `factor` and
  interpolates the middle band (low_freq_factor, high_freq_factor, original_max_position_embeddings), as
  Llama 3.1. Another rope_type is a ValueError naming the field.
  """
  kind = check_rope_scaling(scaling, where)
  scaling = dict(scaling or {})
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  if kind == "default":
    return inv_freq
  if kind == "linear":
    return inv_freq / float(scaling["factor"])
  if kind == "llama3":
    factor, low, high = (float(scaling[k]) for k in ("factor", "low_freq_factor", "high_freq_factor"))
    old_context = float(scaling["original_max_position_embeddings"])
    wavelen = 2 * jnp.pi / inv_freq
    scaled = jnp.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_context / high) & ~(wavelen > old_context / low)
    return jnp.where(medium, smoothed, scaled)


def apply_rotary_half(x, positions, inv_freq):
  """Rotate-half rotary on the whole head: HF's x * cos + rotate_half(x) * sin, computed per half.

  Args:
    x: [batch, length, heads, head_dim]; positions: [batch, length]; inv_freq: [head_dim / 2].
  Returns:
    x with the same shape and dtype (the rotation in float32).

  Per half it is (x1 cos - x2 sin, x2 cos + x1 sin), the same float operations as HF's formula (negation
  is exact), with sin and cos over half the features and no rotated copy of x (on CPU about 10% of the
  tiny Llama step, `jaxformer bench`).
  """
  angles = (positions.astype(jnp.float32)[..., None] * inv_freq)[:, :, None, :]  # [b, t, 1, head_dim / 2]
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  x32 = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  x1, x2 = x32[..., :half], x32[..., half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)
