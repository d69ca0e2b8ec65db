"""The parameter tree's shapes without allocating it: the one routine every layer above uses."""

import jax
import jax.numpy as jnp


def param_shapes(config, boxed: bool = False):
  """The parameter tree of config.module() as jax.ShapeDtypeStructs (jax.eval_shape: no memory used).

  Args:
    config: a family's config (models/base.py).
    boxed: keep flax's nn.Partitioned boxes, whose logical axis names sharding.py maps to the mesh.
  """
  model = config.module()
  # Key and tokens are made inside the trace: under a mesh of compile-only TPU devices (plan
  # --topology) nothing may run eagerly.
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  if boxed:
    return params
  return jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, params, is_leaf=lambda x: hasattr(x, "value"))
