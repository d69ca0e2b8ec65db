"""Sizes and costs of a model config, computed without allocating it.

FLOPs per trained token, two labelled accountings (DESIGN.md, Measures):
  6N:                 6 x matmul parameters (QKV, out, MLP, LM head; no embeddings, biases, norms).
  6N + attention:     plus attention scores and values, 12 * layers * length * d_model per token
                      for forward+backward, halved for the causal mask.
"""

import dataclasses
import math

import gin
import jax
import jax.numpy as jnp

from jaxformer.model import ModelConfig, Transformer

ADAM_STATE_PER_PARAM = 2  # mu and nu, float32 like the parameters.


def param_shapes(config: ModelConfig, length: int = 8):
  """The parameter tree as ShapeDtypeStructs (jax.eval_shape: no memory used)."""
  model = Transformer(config)
  tokens = jnp.zeros((1, length), jnp.int32)
  variables = jax.eval_shape(lambda key: model.init(key, tokens), jax.random.key(0))
  return jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, variables["params"],
                      is_leaf=lambda x: hasattr(x, "value"))


def count_params(config: ModelConfig) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(param_shapes(config)))


def matmul_params(config: ModelConfig) -> int:
  d, layers = config.d_model, config.num_layers
  per_layer = 3 * d * d + d * d + 2 * d * config.mlp_dim
  return layers * per_layer + d * config.vocab_size


def flops_per_token(config: ModelConfig, length: int) -> dict:
  six_n = 6 * matmul_params(config)
  # QK^T and AV: 2 matmuls x 2 FLOPs x length x d_model per layer forward, x3 for backward,
  # halved because a causal mask skips the upper triangle.
  attention = 12 * config.num_layers * length * config.d_model // 2
  return {"flops_per_token_6n": six_n, "flops_per_token_with_attention": six_n + attention}


@gin.configurable(module="plan")
def plan_report(length: int | None = None) -> dict:
  """Everything `jaxformer plan` prints, for the gin-bound ModelConfig.

  Args:
    length: training sequence length for the attention FLOPs (default ModelConfig.max_length).
  """
  config = ModelConfig()
  length = length or config.max_length
  params = count_params(config)
  param_bytes = params * jnp.dtype(config.param_dtype).itemsize
  return {
      "model": dataclasses.asdict(config),
      "params": params,
      "matmul_params": matmul_params(config),
      "sequence_length": length,
      **flops_per_token(config, length),
      "param_bytes": param_bytes,
      "adam_state_bytes": ADAM_STATE_PER_PARAM * param_bytes,
      "train_state_bytes": (1 + ADAM_STATE_PER_PARAM) * param_bytes,
  }
