"""Building blocks every family's layers share: the logical-axis Dense, LayerNorm and RMSNorm, the weight
initialiser (with the init schemes of models/base.py), and the KV cache of a decoding attention layer."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer.models.base import INIT_SCHEMES
from jaxformer.models.common.lora import adapter_init, targeted


def program_platform() -> str:
  """The platform the program being traced is for: the mesh's devices (a TPU topology when `plan` compiles
  ahead of time on a CPU host), else the default backend."""
  mesh = jax.sharding.get_abstract_mesh()
  device = None if mesh.empty else mesh.abstract_device
  return device.platform if device is not None else jax.default_backend()


def weight_init(config, role: str = "matrix", fan_in: int = 0):
  """The initialiser the config's init scheme (models/base.py INIT_SCHEMES) gives a weight of this role:
  'matrix' (fan_in inputs), 'residual' (writes into the residual stream) or 'embedding'."""
  distribution, std = INIT_SCHEMES[config.init_scheme](config, role, fan_in)
  if distribution == "truncated_normal":
    return nn.initializers.truncated_normal(stddev=std, lower=-2.0, upper=2.0)
  return nn.initializers.normal(stddev=std)


def layer_norm(config, name: str, epsilon: float, use_bias: bool = True):
  """LayerNorm over the embedding, scale (and bias) named logically ("embed")."""
  return nn.LayerNorm(
    epsilon=epsilon,
    dtype=config.dtype,
    param_dtype=config.param_dtype,
    use_bias=use_bias,
    use_fast_variance=False,
    scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
    name=name,
  )


class RMSNorm(nn.Module):
  """x * rsqrt(mean(x^2) + eps) * scale, computed in float32 and cast back, as HF's LlamaRMSNorm."""

  epsilon: float
  dtype: str
  param_dtype: str

  @nn.compact
  def __call__(self, x):
    scale = self.param(
      "scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)), (x.shape[-1],), self.param_dtype
    )
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
    return (scale.astype(jnp.float32) * normed).astype(self.dtype)


def rms_norm(config, name: str, epsilon: float):
  return RMSNorm(epsilon, config.dtype, config.param_dtype, name=name)


class Dense(nn.Module):
  """x @ kernel (+ bias) contracting the last axis; kernel axes named logically."""

  features: tuple[int, ...]
  kernel_axes: tuple[str, ...]
  config: object
  use_bias: bool = False
  contract_dims: int = 1
  residual_output: bool = False  # writes into the residual stream: the init scheme may scale it

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    in_shape = x.shape[-self.contract_dims :]
    kernel = self.param(
      "kernel",
      nn.with_logical_partitioning(
        weight_init(cfg, "residual" if self.residual_output else "matrix", math.prod(in_shape)), self.kernel_axes
      ),
      in_shape + tuple(self.features),
      cfg.param_dtype,
    )
    if self.contract_dims == 1 and x.ndim > 2 and program_platform() == "cpu":
      # On XLA:CPU, [batch, length, d] as one [batch * length, d] matrix: the same product, but the
      # weight gradient then needs no transposed copy of the output gradient (a bias-free 3-D product
      # made the tiny Llama step about 12% slower per FLOP than CodeGen's biased ones, `jaxformer bench`).
      # Not on TPU: there the reshape adds HBM traffic (+0.3 GiB of temporaries and +20% bytes accessed in
      # the 7B steps `plan --topology` compiles).
      flat = x.reshape(-1, x.shape[-1]).astype(cfg.dtype)
      y = (flat @ kernel.astype(cfg.dtype).reshape(x.shape[-1], -1)).reshape(*x.shape[:-1], *self.features)
    else:
      axes = tuple(range(x.ndim - self.contract_dims, x.ndim))
      y = jax.lax.dot_general(
        x.astype(cfg.dtype), kernel.astype(cfg.dtype), ((axes, tuple(range(self.contract_dims))), ((), ()))
      )
    if self.use_bias:
      bias_axes = self.kernel_axes[self.contract_dims :]
      bias = self.param(
        "bias", nn.with_logical_partitioning(nn.initializers.zeros, bias_axes), tuple(self.features), cfg.param_dtype
      )
      y = y + bias.astype(cfg.dtype)
    lora = getattr(cfg, "lora", None)
    if targeted(lora, self.name, getattr(self.parent, "name", None)):
      y = y + self._adapter(x, lora, in_shape)
    return y

  def _adapter(self, x, lora, in_shape):
    """scale * (dropout(x) @ lora_a) @ lora_b (models/common/lora.py); dropout only where a 'dropout' rng is
    given (the train step), so evals and sampling are deterministic."""
    cfg, n = self.config, self.contract_dims
    a = self.param(
      "lora_a",
      nn.with_logical_partitioning(adapter_init(math.prod(in_shape)), self.kernel_axes[:n] + (None,)),
      in_shape + (lora.rank,),
      cfg.param_dtype,
    )
    b = self.param(
      "lora_b",
      nn.with_logical_partitioning(nn.initializers.zeros, (None,) + self.kernel_axes[n:]),
      (lora.rank,) + tuple(self.features),
      cfg.param_dtype,
    )
    h = x.astype(cfg.dtype)
    if lora.dropout and self.has_rng("dropout"):
      keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - lora.dropout, h.shape)
      h = jnp.where(keep, h / (1.0 - lora.dropout), 0).astype(cfg.dtype)
    axes = tuple(range(h.ndim - n, h.ndim))
    low = jax.lax.dot_general(h, a.astype(cfg.dtype), ((axes, tuple(range(n))), ((), ())))
    up = jax.lax.dot_general(low, b.astype(cfg.dtype), (((low.ndim - 1,), (0,)), ((), ())))
    return (up * lora.scale).astype(cfg.dtype)


def constrain(x, logical_axes):
  """nn.with_logical_constraint, leaving a dimension whole where its mesh axes do not divide it (a few
  kv heads over a wider tensor axis: multi-query attention)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return nn.with_logical_constraint(x, logical_axes)
  spec = nn.logical_to_mesh_axes(logical_axes)
  fitted = []
  for axis, size in zip(logical_axes, x.shape):
    mesh_axes = spec[len(fitted)] if len(fitted) < len(spec) else None
    ways = 1 if mesh_axes is None else math.prod(mesh.shape[a] for a in jax.tree.leaves(mesh_axes))
    fitted.append(axis if size % ways == 0 else None)
  return nn.with_logical_constraint(x, tuple(fitted))


def cached_kv(module: nn.Module, key, value, positions):
  """A decoding layer's KV cache ('cache' collection, [batch, kv_heads, cache_length, head_dim]): writes
  key and value [batch, length, kv_heads, head_dim] at `positions` and returns the whole cache laid out as
  key and value are. At init the call's length is the cache length.

  The cache is stored heads-first, the layout the attention's batched matmuls read: stored as key and
  value come, XLA would transpose (copy) the whole cache at every decoded token."""
  initialized = module.has_variable("cache", "key")
  heads_first = lambda x: x.transpose(0, 2, 1, 3)
  cached_key = module.variable("cache", "key", jnp.zeros, heads_first(key).shape, key.dtype)
  cached_value = module.variable("cache", "value", jnp.zeros, heads_first(value).shape, value.dtype)
  if not initialized:
    return key, value
  rows = jnp.arange(key.shape[0])[:, None]
  cached_key.value = cached_key.value.at[rows, :, positions].set(key)
  cached_value.value = cached_value.value.at[rows, :, positions].set(value)
  return heads_first(cached_key.value), heads_first(cached_value.value)
