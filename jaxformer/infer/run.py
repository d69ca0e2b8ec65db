"""A trained (or imported) run, loaded for inference: model, parameters, vocabulary."""

import dataclasses

from jaxformer import base_run, checkpoint, fs, sharding
from jaxformer.data.pipeline.vocabulary import load_vocabulary
from jaxformer.models import Decoder, FamilyConfig
from jaxformer.models.common import lora


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
  params, step = restore_run_params(model_dir, config, mesh, rules, step)
  path = checkpoint.find_vocabulary(model_dir)
  if path is None:
    raise FileNotFoundError(f"{model_dir}/vocabulary/ holds no spm.model or tokenizer.json")
  return LoadedRun(config, config.module(), params, step, load_vocabulary(path), path, prefix_lm, mesh, rules)


def restore_run_params(model_dir: str, config: FamilyConfig, mesh, rules, step: int | None = None, as_numpy=False):
  """(the model's whole parameter tree, step). A LoRA run's checkpoints hold only its adapters: the base comes
  from the pointer it recorded (MODEL_DIR/base.json), checked against its digest first."""
  abstract = sharding.sharded_param_shapes(config, mesh, rules)[0]
  if config.lora is None:
    return checkpoint.restore_params(model_dir, abstract, step, as_numpy=as_numpy)
  adapters, base_abstract = lora.split(abstract)
  adapters, step = checkpoint.restore_params(model_dir, adapters, step, as_numpy=as_numpy)
  # The base this step trained on: its own settings say, else MODEL_DIR/base.json.
  recorded = (base_run.step_meta(model_dir, step) or {}).get("base") or base_run.read_pointer(model_dir)
  if recorded is None:
    raise FileNotFoundError(f"{model_dir}/{base_run.POINTER} is missing: this LoRA run does not say its base run")
  base_run.check_unchanged(recorded, f"{model_dir} (step {step})")
  base, _ = checkpoint.restore_params(recorded["model_dir"], base_abstract, recorded["step"], as_numpy=as_numpy)
  return lora.combine(base, adapters), step
