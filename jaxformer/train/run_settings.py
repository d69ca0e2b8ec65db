"""The settings a run's checkpoints are saved with (meta), and the check that a resuming run shares
those its state and data position depend on."""

import dataclasses

import gin
import jax

import jaxformer
from jaxformer import checkpoint_checks
from jaxformer.errors import UserError


def run_meta(args, vocabulary) -> dict:
  """The settings a checkpoint is saved with, which a resuming run must share (check_resumable)."""
  from jaxformer.data.pipeline.cache import vocabulary_digest

  data = args.data_config
  return {
    "family": args.model_config.family,
    "model": dataclasses.asdict(args.model_config),
    "batch_size": data.batch_size,
    "task_feature_lengths": dict(data.task_feature_lengths),
    "mixture_or_task_name": data.mixture_or_task_name,
    "vocabulary_sha256": vocabulary_digest(vocabulary),
    "objectives": objectives_record(),
    "jaxformer": jaxformer.__version__,
  }


def objectives_record() -> dict:
  """What the run trains, by each objective's stable id (a later build reads ids, not registry order):
  {rates: {name: {id, rate}}, infill_formats: [names, the default first]}; empty without OBJECTIVE_RATES."""
  from jaxformer import objectives

  try:
    rates = gin.query_parameter("%OBJECTIVE_RATES")
  except ValueError:
    return {}
  return {
    "rates": {name: {"id": objectives.OBJECTIVES[name].id, "rate": rate} for name, rate in dict(rates).items()},
    "infill_formats": [f.name for f in objectives.trained_infill_formats(dict(rates))],
  }


def check_resumable(meta: dict, saved: dict | None, model_dir: str, step: int) -> None:
  """Raises UserError, one line, when the checkpoint at `step` was saved with a model whose parameters have
  other shapes, or with a batch the data position cannot continue."""
  if not saved:
    return
  where = f"{model_dir} (step {step})"
  data = checkpoint_checks.describe_changes(
    saved,
    meta,
    {
      "batch_size": "BATCH_SIZE",
      "task_feature_lengths": "TASK_FEATURE_LENGTHS",
      "mixture_or_task_name": "MIXTURE_OR_TASK_NAME",
    },
  )
  if data:
    raise UserError(
      f"{where} was trained with {', '.join(data)}: its data position cannot continue with another batch; "
      "bind the run's values, or train into a new MODEL_DIR"
    )
  family = saved.get("family", "codegen")  # checkpoints from before families are CodeGen's
  if family != meta["family"]:
    raise UserError(f"{where} was trained as a {family} model; this run's model is a {meta['family']} model")
  if "model" in saved and saved["model"] != meta["model"]:
    from jaxformer import models

    shapes = lambda fields: jax.tree.map(lambda x: (x.shape, str(x.dtype)), models.param_shapes(fields))
    saved_config = models.FAMILIES[family]
    try:
      before = shapes(saved_config(**saved["model"]))
    except (TypeError, ValueError):
      before = None
    now = shapes(saved_config(**meta["model"]))
    if before != now:
      fields = {k: f"{saved_config(**meta['model']).gin_name}.{k}" for k in saved["model"]}
      changed = checkpoint_checks.describe_changes(saved["model"], meta["model"], fields)
      raise UserError(
        f"{where} was trained with {', '.join(changed)}, which gives parameters of other shapes; bind the "
        "run's model (its config.gin), or train into a new MODEL_DIR"
      )
