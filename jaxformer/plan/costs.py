"""Sizes and costs of a model config, computed without allocating it.

FLOPs per trained token come from ModelConfig.flops_per_token under two labelled accountings
(docs/DESIGN.md, "Measures"): 6N, and 6N + causal attention.
"""

import dataclasses
import math

import gin
import jax
import jax.numpy as jnp

from jaxformer import models
from jaxformer.models import FamilyConfig, param_shapes
from jaxformer.models.common import lora

ADAM_STATE_PER_PARAM = 2  # mu and nu, float32 like the parameters.


def count_params(config: FamilyConfig) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(param_shapes(config)))


@gin.configurable(module="plan")
def plan_report(length: int | None = None) -> dict:
  """Everything `jaxformer plan` prints without --topology, for the gin-bound ModelConfig.

  Args:
    length: training sequence length for the attention FLOPs (default ModelConfig.max_length).
  """
  config = models.bound()
  length = length or config.max_length
  params = count_params(config)
  param_bytes = params * jnp.dtype(config.param_dtype).itemsize
  lora_part = {}
  if config.lora is not None:  # the base frozen in the compute dtype, only the adapters in the optimizer
    adapters, base = lora.split(param_shapes(config))
    trainable = sum(math.prod(x.shape) for x in jax.tree.leaves(adapters))
    frozen_bytes = (params - trainable) * jnp.dtype(config.dtype).itemsize
    param_bytes = trainable * jnp.dtype(config.param_dtype).itemsize
    lora_part = {"trainable_params": trainable, "frozen_bytes": frozen_bytes}
  return {
    "model": {"family": config.family, **dataclasses.asdict(config)},
    "params": params,
    "matmul_params": config.matmul_params,
    "sequence_length": length,
    **config.flops_per_token(length),
    "param_bytes": param_bytes,
    "adam_state_bytes": ADAM_STATE_PER_PARAM * param_bytes,
    "train_state_bytes": (1 + ADAM_STATE_PER_PARAM) * param_bytes + lora_part.get("frozen_bytes", 0),
    **lora_part,
  }
