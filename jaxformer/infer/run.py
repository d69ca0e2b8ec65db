"""A trained (or imported) run, loaded for inference: model, parameters, vocabulary."""

import dataclasses

from jaxformer import checkpoint, fs, sharding
from jaxformer.data.pipeline.vocabulary import load_vocabulary
from jaxformer.models import Decoder, FamilyConfig


@dataclasses.dataclass
class LoadedRun:
  config: FamilyConfig
  model: Decoder
  params: dict
  step: int
  vocabulary: object
  vocabulary_path: str | None
  prefix_lm: bool  # trained with bidirectional prefixes
  mesh: object
  rules: tuple


def load_run(model_dir: str, config: FamilyConfig, step: int | None = None, prefix_lm: bool = False) -> LoadedRun:
  """Restores the parameters of MODEL_DIR (gin already parsed from MODEL_DIR/config.gin)."""
  model_dir = fs.resolve(model_dir)
  mesh, rules = sharding.make_mesh(), sharding.logical_axis_rules()
  params, step = checkpoint.restore_params(model_dir, sharding.sharded_param_shapes(config, mesh, rules)[0], step)
  path = checkpoint.find_vocabulary(model_dir)
  if path is None:
    raise FileNotFoundError(f"{model_dir}/vocabulary/ holds no spm.model or tokenizer.json")
  return LoadedRun(config, config.module(), params, step, load_vocabulary(path), path, prefix_lm, mesh, rules)
