"""Model families: one folder each (codegen/, llama/), every piece they share in common/, and the interface
every caller goes through (base.py, FamilyConfig). The run's model is what gin binds (t5x style: the config
object, which knows its family):

    models.bound.config = @ModelConfig()     # the CodeGen family (gin/models/codegen2_*.gin, tiny.gin)
    models.bound.config = @LlamaConfig()     # the Llama family (gin/models/llama_tiny.gin, starcoder2_*.gin, ...)

A new family is one folder here with a FamilyConfig subclass (its block, final norm, matmul count and HF
layout) registered in FAMILIES, and one gin file (docs/DESIGN.md, "A model family").
"""

import gin

from jaxformer.models.base import FamilyConfig
from jaxformer.models.codegen import CodeGenConfig, ModelConfig
from jaxformer.models.common.decoder import Decoder, head_logits, unrolled
from jaxformer.models.common.shapes import param_shapes
from jaxformer.models.llama import LlamaConfig

# name -> config class (each has .family, its HF layout as .hf, its module as .module()).
FAMILIES = {config.family: config for config in (CodeGenConfig, LlamaConfig)}

__all__ = [
  "FAMILIES",
  "CodeGenConfig",
  "Decoder",
  "FamilyConfig",
  "LlamaConfig",
  "ModelConfig",
  "bound",
  "for_hf",
  "head_logits",
  "param_shapes",
  "unrolled",
]


@gin.configurable(module="models")
def bound(config: FamilyConfig | None = None) -> FamilyConfig:
  """The model config the run's gin binds (models.bound.config = @ModelConfig() or @LlamaConfig()).

  Unbound (gin from before families existed): the CodeGen family's ModelConfig() with its ModelConfig.*
  bindings, as those runs trained.
  """
  config = ModelConfig() if config is None else config
  if not isinstance(config, FamilyConfig):
    raise ValueError(f"models.bound.config={config!r} is not a model family's config ({sorted(FAMILIES)})")
  return config


def for_hf(model_type: str, source: str = "config.json"):
  """The config class whose HF layout reads config.json's model_type; ValueError naming what is supported."""
  for config in FAMILIES.values():
    if model_type in config.hf_model_types():
      return config
  supported = sorted(t for config in FAMILIES.values() for t in config.hf_model_types())
  raise ValueError(f"{source} has model_type {model_type!r}; jaxformer imports {supported}")
