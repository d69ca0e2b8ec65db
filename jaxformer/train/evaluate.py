"""Held-out loss per task: the trainer's periodic eval, and what `jaxformer eval loss` runs."""

import dataclasses

import gin
import jax
import numpy as np
import seqio

from jaxformer import sharding
from jaxformer.data import pipeline
from jaxformer.data.pipeline.features import MODEL_FEATURE_NAMES
from jaxformer.train.step import StepConfig, make_eval_step


def eval_task_names(name: str) -> list[str]:
  """A mixture's tasks (those with a validation split), or the task itself."""
  provider = seqio.get_mixture_or_task(name)
  if isinstance(provider, seqio.Mixture):
    return sorted(t.name for t in provider.tasks if "validation" in t.splits)
  return [name]


@gin.configurable(module="train")
def evaluate(
  params,
  model,
  data_config: pipeline.DataConfig,
  batch_sharding,
  rules,
  mesh,
  eval_batches: int = 20,
  loss_chunk_length: int | None = None,
):
  """Held-out loss per task (validation split). loss_chunk_length: None takes the gin-bound
  train.StepConfig's (for `eval loss`, the run's config.gin: what it trained with).

  Every host runs exactly eval_batches steps (hosts that run out feed zero-weight batches), so
  multi-host runs never wait on each other.
  Returns {task: {"loss", "accuracy", "tokens"}}.
  """
  if loss_chunk_length is None:
    loss_chunk_length = StepConfig().loss_chunk_length
  eval_step = jax.jit(make_eval_step(model, loss_chunk_length), in_shardings=(None, batch_sharding))
  shard_info = pipeline.default_shard_info()
  results = {}
  for task in eval_task_names(data_config.mixture_or_task_name):
    config = dataclasses.replace(data_config, mixture_or_task_name=task)
    dataset = pipeline.get_dataset(
      config, split="validation", shuffle=False, num_epochs=1, shard_info=shard_info, drop_remainder=False
    )
    iterator = dataset.as_numpy_iterator()
    per_host = config.batch_size // shard_info.num_shards
    totals = {"loss": 0.0, "correct": 0.0, "weight": 0.0}
    for _ in range(eval_batches):
      local = next(iterator, None)
      if local is None:
        local = {k: np.zeros((per_host, config.length), np.int32) for k in MODEL_FEATURE_NAMES}
      elif local["decoder_target_tokens"].shape[0] < per_host:  # a short last batch: pad with no weight
        pad = per_host - local["decoder_target_tokens"].shape[0]
        local = {k: np.pad(v, ((0, pad), (0, 0))) for k, v in local.items()}
      batch = {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in local.items()}
      with sharding.activation_sharding(mesh, rules):
        sums = jax.device_get(eval_step(params, batch))
      for k in totals:
        totals[k] += float(sums[k])
    weight = max(totals["weight"], 1.0)
    results[task] = {
      "loss": totals["loss"] / weight,
      "accuracy": totals["correct"] / weight,
      "tokens": totals["weight"],
    }
  return results
