"""Small helpers shared by model tests: a tiny float32 config and random inputs."""

import dataclasses

import jax
import numpy as np

from jaxformer.models import ModelConfig, param_shapes

TINY = ModelConfig(vocab_size=97, num_layers=2, d_model=32, num_heads=4, rotary_dim=4, dtype="float32")


def tiny(**overrides) -> ModelConfig:
  return dataclasses.replace(TINY, **overrides)


def init(config: ModelConfig, seed: int = 0):
  """The model and random parameters: shapes from model.param_shapes, values from numpy.

  Compiling model.init costs seconds per config on CPU; numpy costs nothing. Biases and
  LayerNorm offsets are random too, so tests see them.
  """
  model = config.module()
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 0.1).astype(np.float32), param_shapes(config))
  params = jax.tree_util.tree_map_with_path(
    lambda path, x: x + 1.0 if "scale" in jax.tree_util.keystr(path) else x, params
  )
  return model, params


def random_tokens(config: ModelConfig, batch: int, length: int, seed: int = 1):
  return np.random.default_rng(seed).integers(0, config.vocab_size, (batch, length)).astype(np.int32)


def jitted_apply(model):
  """model.apply under jit: op-by-op flax on CPU is ten times slower than one compile."""
  fn = jax.jit(lambda params, tokens, **kw: model.apply({"params": params}, tokens, **kw))
  return lambda params, tokens, **kw: np.asarray(fn(params, tokens, **kw))
