"""The parameter tree's shapes without allocating it: the one routine every layer above uses."""

import jax
import jax.numpy as jnp

from jaxformer.model.config import ModelConfig
from jaxformer.model.transformer import Transformer


def param_shapes(config: ModelConfig, boxed: bool = False):
  """The parameter tree as jax.ShapeDtypeStructs (jax.eval_shape: no memory used).

  Args:
    config: the model.
    boxed: keep flax's nn.Partitioned boxes, whose logical axis names sharding.py maps to the mesh.
  """
  model = Transformer(config)
  # Key and tokens are made inside the trace: under a mesh of compile-only TPU devices (plan
  # --topology) nothing may run eagerly.
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  if boxed:
    return params
  return jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, params, is_leaf=lambda x: hasattr(x, "value"))
