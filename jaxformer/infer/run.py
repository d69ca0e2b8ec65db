"""A trained (or imported) run, loaded for inference: model, parameters, vocabulary."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer import checkpoint, fs, sharding
from jaxformer.data.vocabulary import load_vocabulary
from jaxformer.model import ModelConfig, Transformer


@dataclasses.dataclass
class LoadedRun:
  config: ModelConfig
  model: Transformer
  params: dict
  step: int
  vocabulary: object
  vocabulary_path: str | None
  prefix_lm: bool  # trained with bidirectional prefixes
  mesh: object
  rules: tuple


def abstract_params(config: ModelConfig, mesh, rules):
  model = Transformer(config)
  with sharding.activation_sharding(mesh, rules):
    boxed = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 8), jnp.int32))["params"], jax.random.key(0))
  return checkpoint.abstract_like(nn.unbox(boxed), sharding.tree_shardings(boxed, mesh, rules))


def load_run(model_dir: str, config: ModelConfig, step: int | None = None, prefix_lm: bool = False) -> LoadedRun:
  """Restores the parameters of MODEL_DIR (gin already parsed from MODEL_DIR/config.gin)."""
  model_dir = fs.resolve(model_dir)
  mesh, rules = sharding.make_mesh(), sharding.logical_axis_rules()
  params, step = checkpoint.restore_params(model_dir, abstract_params(config, mesh, rules), step)
  path = checkpoint.find_vocabulary(model_dir)
  if path is None:
    raise FileNotFoundError(f"{model_dir}/vocabulary/ holds no spm.model or tokenizer.json")
  return LoadedRun(config, Transformer(config), params, step, load_vocabulary(path), path, prefix_lm, mesh, rules)
