"""`jaxformer train`: the loop. Resumes from MODEL_DIR's latest checkpoint, trains, evaluates,
checkpoints (state and every host's data position together), logs, and stops cleanly on SIGTERM."""

import dataclasses
import logging
import os
import signal
import time

import gin
import jax
import jax.numpy as jnp
import numpy as np
import seqio

import tasks
from jaxformer import checkpoint, fs, sharding
from jaxformer import config as config_lib
from jaxformer.data import pipeline
from jaxformer.data.features import MODEL_FEATURE_NAMES
from jaxformer.model import ModelConfig, Transformer
from jaxformer.plan import flops_per_token
from jaxformer.train import metrics as metrics_lib
from jaxformer.train import mfu as mfu_lib
from jaxformer.train.optimizer import learning_rate_schedule, make_optimizer
from jaxformer.train.state import create_state, state_shardings
from jaxformer.train.step import StepConfig, jit_train_step, make_eval_step

log = logging.getLogger("jaxformer")


class NonFiniteError(RuntimeError):
  """The loss or gradient was NaN/Inf and train.StepConfig.nan_policy = 'stop'."""


class _Preemption:
  """SIGTERM sets a flag the loop checks each step (a single process; with jax.distributed,
  JAX's own preemption service and manager.reached_preemption are used instead)."""

  def __init__(self, install: bool):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle) if install else None

  def _handle(self, *_):
    self.requested = True

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _global_batch(local: dict, batch_sharding):
  return {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in local.items()}


def _eval_task_names(name: str) -> list[str]:
  provider = seqio.get_mixture_or_task(name)
  if isinstance(provider, seqio.Mixture):
    return sorted(t.name for t in provider.tasks)
  return [name]


@gin.configurable(module="train")
def evaluate(params, model, data_config: pipeline.DataConfig, batch_sharding, rules, mesh, eval_batches: int = 20):
  """Held-out loss per task (validation split), the same code `jaxformer eval loss` runs.

  Every host runs exactly eval_batches steps (hosts that run out feed zero-weight batches), so
  multi-host runs never wait on each other.
  Returns {task: {"loss", "accuracy", "tokens"}}.
  """
  eval_step = jax.jit(make_eval_step(model), in_shardings=(None, batch_sharding))
  shard_info = pipeline.default_shard_info()
  results = {}
  for task in _eval_task_names(data_config.mixture_or_task_name):
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
      with sharding.activation_sharding(mesh, rules):
        sums = jax.device_get(eval_step(params, _global_batch(local, batch_sharding)))
      for k in totals:
        totals[k] += float(sums[k])
    weight = max(totals["weight"], 1.0)
    results[task] = {
      "loss": totals["loss"] / weight,
      "accuracy": totals["correct"] / weight,
      "tokens": totals["weight"],
    }
  return results


def _keep_vocabulary(vocabulary, model_dir: str):
  """Copies the vocabulary file into MODEL_DIR/vocabulary/, so sample and export need no corpus."""
  source = getattr(vocabulary, "model_path", None) or getattr(vocabulary, "path", None)
  if not source:
    return
  target = os.path.join(model_dir, "vocabulary", os.path.basename(source))
  if fs.resolve(source) != fs.resolve(target):
    fs.makedirs(os.path.dirname(target))
    fs.copy(source, target)


def _check_vocabulary(model_config: ModelConfig, vocabulary):
  if vocabulary.vocab_size > model_config.vocab_size:
    raise config_lib.GinConfigError(
      f"ModelConfig.vocab_size={model_config.vocab_size} is smaller than the task's vocabulary "
      f"({vocabulary.vocab_size} ids); bind ModelConfig.vocab_size (or MODEL_VOCAB_SIZE) to at least that"
    )


@gin.configurable(module="train")
def train(
  model_dir: str = gin.REQUIRED,
  train_steps: int = gin.REQUIRED,
  eval_period: int = 0,
  log_period: int = 10,
  seed: int = 0,
  sample_prompt: str | None = None,
  sample_tokens: int = 48,
  sample_temperature: float = 0.0,
  progress: bool = True,
  stop_after_steps: int | None = None,
) -> dict:
  """Trains the gin-bound ModelConfig on the gin-bound DataConfig.

  Args (gin: train.train.*; runs bind them to the t5x macros):
    model_dir: %MODEL_DIR: checkpoints, metrics.jsonl, tensorboard/, config.gin, loss.png.
    train_steps: %TRAIN_STEPS, the step the run ends at (a restart continues towards it).
    eval_period: %EVAL_PERIOD; 0 evaluates only at the end.
    log_period: train metrics are logged every this many steps.
    sample_prompt: if set, a short sample is printed at the end (greedy, or at sample_temperature).
    stop_after_steps: stop (with a checkpoint) after this many steps of this process, even
      before train_steps, e.g. to split a run across jobs.
  Returns:
    {"step", "train_loss", "eval": {task: {...}}, "preempted", "skipped_steps"}.
  """
  model_dir = fs.resolve(model_dir)  # local or gs://
  model_config = ModelConfig()
  data_config = pipeline.DataConfig()
  step_config = StepConfig()
  vocabulary = tasks.ensure_registered(data_config.mixture_or_task_name)
  _check_vocabulary(model_config, vocabulary)

  mesh = sharding.make_mesh()
  rules = sharding.logical_axis_rules()
  log.info("mesh %s over %d devices of %d process(es)", dict(mesh.shape), mesh.size, jax.process_count())
  model = Transformer(model_config)
  schedule = learning_rate_schedule(total_steps=train_steps)
  optimizer = make_optimizer(schedule)
  abstract_state, state_shards = state_shardings(model, optimizer, mesh, rules)
  batch_sharding = sharding.logical_to_sharding(("batch", "length"), mesh, rules)
  manager = checkpoint.make_manager(model_dir)

  train_iterator = pipeline.BatchIterator(pipeline.get_dataset(data_config, split="train"))
  start = manager.latest_step()
  if start is None:
    state = create_state(model, optimizer, mesh, rules, jax.random.key(seed), state_shards)
    start = 0
  elif checkpoint.holds_only_params(manager, start):  # written by `jaxformer import`: fine-tune it
    state = create_state(model, optimizer, mesh, rules, jax.random.key(seed), state_shards)
    params, _ = checkpoint.restore_params(model_dir, abstract_state.params, start)
    state = state.replace(params=params, step=jnp.asarray(start, jnp.int32))
    log.info("initialised parameters from the imported checkpoint at step %d in %s", start, model_dir)
  else:
    state = checkpoint.restore(manager, start, abstract_state, train_iterator)
    log.info("restored step %d from %s", start, model_dir)
  if jax.process_index() == 0:
    config_lib.write_operative_config(model_dir)
    _keep_vocabulary(vocabulary, model_dir)

  train_step = jit_train_step(model, optimizer, schedule, step_config, state_shards, batch_sharding)
  flops = flops_per_token(model_config, data_config.length)
  device_kind = jax.devices()[0].device_kind
  metrics_log = metrics_lib.MetricsLog(model_dir)
  preemption = _Preemption(install=jax.process_count() == 1)
  tokens_per_step = data_config.batch_size * data_config.length

  bar = None
  if progress and jax.process_index() == 0:
    from tqdm import tqdm

    bar = tqdm(total=train_steps, initial=start, unit="step", dynamic_ncols=True)

  result = {"step": start, "train_loss": None, "eval": {}, "preempted": False, "skipped_steps": 0}
  step = start
  window_start, window_steps = time.perf_counter(), 0
  last_eval_step = None
  end = train_steps if stop_after_steps is None else min(train_steps, start + stop_after_steps)
  try:
    while step < end:
      try:
        local = next(train_iterator)
      except StopIteration:
        raise ValueError(
          f"step {step + 1}: the train split of {data_config.mixture_or_task_name} ran out after {step - start} "
          f"steps of this process (DataConfig.num_epochs={data_config.num_epochs}); the last checkpoint is "
          f"step {manager.latest_step()}. Allow more epochs (None repeats) or lower TRAIN_STEPS"
        ) from None
      with sharding.activation_sharding(mesh, rules):
        state, step_metrics = train_step(state, _global_batch(local, batch_sharding))
      step += 1
      window_steps += 1
      step_metrics = jax.device_get(step_metrics)
      if not bool(step_metrics["finite"]):
        result["skipped_steps"] += 1
        message = (
          f"step {step}: loss {float(step_metrics['loss'])} or gradient norm "
          f"{float(step_metrics['grad_norm'])} is not finite; the update was not applied"
        )
        if step_config.nan_policy == "stop":
          raise NonFiniteError(message + " (train.StepConfig.nan_policy = 'stop')")
        log.warning("%s (skipped; train.StepConfig.nan_policy = 'skip')", message)
      result["train_loss"] = float(step_metrics["loss"])

      if step % log_period == 0 or step == end:
        elapsed = time.perf_counter() - window_start
        tokens_per_second = window_steps * tokens_per_step / elapsed
        mfu_6n = mfu_lib.mfu(tokens_per_second, flops["flops_per_token_6n"], jax.device_count(), device_kind)
        mfu_attn = mfu_lib.mfu(
          tokens_per_second, flops["flops_per_token_with_attention"], jax.device_count(), device_kind
        )
        record = {k: float(v) for k, v in step_metrics.items() if k != "finite"}
        record.update(
          {
            "tokens_per_second": tokens_per_second,
            "step_seconds": elapsed / window_steps,
            "mfu_6n": mfu_6n,
            "mfu_6n_attention": mfu_attn,
            "skipped_steps": result["skipped_steps"],
          }
        )
        metrics_log.write(step, record, prefix="train/", split="train")
        if bar is not None:
          bar.set_postfix_str(
            f"loss {record['loss']:.3f} | {tokens_per_second:,.0f} tok/s | "
            f"MFU 6N {mfu_lib.format_mfu(mfu_6n)}, 6N+attn {mfu_lib.format_mfu(mfu_attn)}"
          )
        window_start, window_steps = time.perf_counter(), 0
      if bar is not None:
        bar.update(1)

      if eval_period and step % eval_period == 0 and step != end:
        result["eval"] = _evaluate_and_log(
          state.params, model, data_config, batch_sharding, rules, mesh, metrics_log, step
        )
        last_eval_step = step
        window_start = time.perf_counter()

      preempted = preemption.requested or manager.reached_preemption(step)
      checkpoint.save(manager, step, state, train_iterator, force=preempted or step == end)
      if preempted:
        manager.wait_until_finished()
        log.warning("preempted at step %d: checkpoint saved, exiting", step)
        result["preempted"] = True
        break
    manager.wait_until_finished()
    result["step"] = step
    if not result["preempted"] and step == train_steps and last_eval_step != step:
      result["eval"] = _evaluate_and_log(
        state.params, model, data_config, batch_sharding, rules, mesh, metrics_log, step
      )
    if jax.process_index() == 0:
      config_lib.write_operative_config(model_dir)  # now with everything the run called
    if not result["preempted"] and sample_prompt is not None:
      result["sample"] = _sample(
        model, state.params, vocabulary, sample_prompt, sample_tokens, sample_temperature, seed
      )
  finally:
    if bar is not None:
      bar.close()
    preemption.restore()
    manager.wait_until_finished()
    manager.close()
    metrics_log.close()
    metrics_lib.plot_losses(model_dir)
  return result


def _evaluate_and_log(params, model, data_config, batch_sharding, rules, mesh, metrics_log, step):
  results = evaluate(params, model, data_config, batch_sharding, rules, mesh)
  for task, values in results.items():
    metrics_log.write(step, values, prefix=f"eval/{task}/", split="eval", task=task)
  return results


def _sample(model, params, vocabulary, prompt: str, max_new_tokens: int, temperature: float, seed: int) -> str:
  from jaxformer.infer.sample import generate

  params = jax.device_get(params)
  ids = vocabulary.encode(prompt)
  completion = generate(
    model, params, [ids], max_new_tokens, stop_ids=(vocabulary.eos_id,), temperature=temperature, seed=seed
  )[0]
  return vocabulary.decode(completion)
