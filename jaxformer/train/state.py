"""The train state (step, float32 params, optimizer state), created directly sharded."""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from jaxformer import sharding
from jaxformer.models.common import lora


@flax.struct.dataclass
class TrainState:
  """params: what the optimizer trains (with LoRA, the adapters only). frozen: the LoRA base, in the compute
  dtype, never updated and never saved (it is the base run's; checkpoint.save leaves it out); else None."""

  step: jax.Array
  params: Any
  opt_state: Any
  frozen: Any = None


def model_inputs(batch) -> dict:
  """The model's keyword arguments from a batch of data/features.py features."""
  return {
    "tokens": batch["decoder_input_tokens"],
    "positions": batch["decoder_positions"],
    "segment_ids": batch["decoder_segment_ids"],
    "prefix_mask": batch["decoder_causal_attention"],
  }


def state_shardings(model, optimizer: optax.GradientTransformation, mesh, rules):
  """(abstract TrainState with shardings, TrainState of NamedShardings), allocating nothing. With LoRA
  (model.config.lora) the optimizer's params are the adapters and the rest is `frozen`, in the compute dtype."""
  abstract_params, param_shardings = sharding.sharded_param_shapes(model.config, mesh, rules)
  abstract_params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract_params)
  abstract_frozen = frozen_shardings = None
  if model.config.lora is not None:
    compute = jnp.dtype(model.config.dtype)
    abstract_params, abstract_frozen = lora.split(abstract_params)
    abstract_frozen = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, compute), abstract_frozen)
    param_shardings, frozen_shardings = lora.split(param_shardings)
  abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
  replicated = NamedSharding(mesh, PartitionSpec())
  # Moments mirror the parameters' sharding; counts and other scalars replicate.
  opt_shardings = optax.tree_map_params(
    optimizer, lambda _, s: s, abstract_opt, param_shardings, transform_non_params=lambda _: replicated
  )
  shardings = TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings, frozen=frozen_shardings)
  abstract = TrainState(
    step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_params, opt_state=abstract_opt, frozen=abstract_frozen
  )
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)
  return abstract, shardings


def create_state(model, optimizer, mesh, rules, rng, shardings, with_frozen: bool = True) -> TrainState:
  """Initialises the state under jit with out_shardings: no array is ever whole on one device.
  with_frozen=False leaves a LoRA state's frozen base None (the caller restores the base run's; XLA then
  never computes the random base)."""
  tokens = jnp.zeros((1, 8), jnp.int32)
  dtype = jnp.dtype(model.config.dtype)

  def init(key):
    params = nn.unbox(model.init(key, tokens)["params"])
    frozen = None
    if model.config.lora is not None:
      params, frozen = lora.split(params)
      frozen = jax.tree.map(lambda x: x.astype(dtype), frozen) if with_frozen else None
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params), frozen=frozen)

  if not with_frozen:
    shardings = shardings.replace(frozen=None)
  with sharding.activation_sharding(mesh, rules):
    return jax.jit(init, out_shardings=shardings)(rng)
