"""The train state (step, float32 params, optimizer state), created directly sharded."""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from jaxformer import sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def model_inputs(batch) -> dict:
  """The model's keyword arguments from a batch of data/features.py features."""
  return {
    "tokens": batch["decoder_input_tokens"],
    "positions": batch["decoder_positions"],
    "segment_ids": batch["decoder_segment_ids"],
    "prefix_mask": batch["decoder_causal_attention"],
  }


def state_shardings(model, optimizer: optax.GradientTransformation, mesh, rules):
  """(abstract TrainState with shardings, TrainState of NamedShardings), allocating nothing."""
  abstract_params, param_shardings = sharding.sharded_param_shapes(model.config, mesh, rules)
  abstract_params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract_params)
  abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
  replicated = NamedSharding(mesh, PartitionSpec())
  # Moments mirror the parameters' sharding; counts and other scalars replicate.
  opt_shardings = optax.tree_map_params(
    optimizer, lambda _, s: s, abstract_opt, param_shardings, transform_non_params=lambda _: replicated
  )
  shardings = TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings)
  abstract = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_params, opt_state=abstract_opt)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)
  return abstract, shardings


def create_state(model, optimizer, mesh, rules, rng, shardings) -> TrainState:
  """Initialises the state under jit with out_shardings: no array is ever whole on one device."""
  tokens = jnp.zeros((1, 8), jnp.int32)

  def init(key):
    params = nn.unbox(model.init(key, tokens)["params"])
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))

  with sharding.activation_sharding(mesh, rules):
    return jax.jit(init, out_shardings=shardings)(rng)
