"""`jaxformer train`: the loop. Resumes from MODEL_DIR's latest checkpoint, trains, evaluates,
checkpoints (state and every host's data position together), logs, and stops cleanly on SIGTERM."""

import contextlib
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence

import gin
import jax
import jax.numpy as jnp

from jaxformer import checkpoint, errors, fs, runlock, sharding, tasks
from jaxformer.data import pipeline
from jaxformer.errors import UserError
from jaxformer.model import ModelConfig
from jaxformer.train import metrics as metrics_lib
from jaxformer.train import mfu as mfu_lib
from jaxformer.train import setup as setup_lib
from jaxformer.train.evaluate import evaluate
from jaxformer.train.profile import StepProfiler
from jaxformer.train.progress import Progress
from jaxformer.train.step import StepConfig
from jaxformer.train.tracking import WandbConfig

log = logging.getLogger("jaxformer")


class NonFiniteError(UserError):
  """The loss or gradient was NaN/Inf and train.StepConfig.nan_policy = 'stop'."""


@dataclasses.dataclass(frozen=True)
class PeriodicEval:
  """An extra evaluation every `period` steps (and at the end), logged under eval/<name>/.

  run(model, params, vocabulary, mesh, rules) -> {metric: float}. The CLI adds the code eval this way,
  so train/ needs nothing from evals/.
  """

  name: str
  period: int
  run: Callable[..., dict]


class _Preemption:
  """SIGTERM or SIGINT (Ctrl-C) sets a flag the loop checks each step: it saves and stops. In a single
  process; with jax.distributed, JAX's own preemption service and manager.reached_preemption are used."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self, install: bool):
    self.requested = None  # the signal's name once one arrives
    self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS} if install else {}

  def _handle(self, signum, _frame):
    self.requested = signal.Signals(signum).name

  def restore(self):
    for s, previous in self._previous.items():
      signal.signal(s, previous)


def _keep_vocabulary(vocabulary, model_dir: str):
  """Copies the vocabulary file into MODEL_DIR/vocabulary/ (as spm.model or tokenizer.json), so
  sample, eval and export need no corpus; HF tokenizer files beside a tokenizer.json go with it."""
  from jaxformer.data.pipeline.vocabulary import HF_TOKENIZER_FILES, vocabulary_file_name

  source = getattr(vocabulary, "model_path", None) or getattr(vocabulary, "path", None)
  if not source:
    return
  target = os.path.join(model_dir, "vocabulary", vocabulary_file_name(source))
  if source.endswith(".json") and fs.resolve(source) != fs.resolve(target):
    for name in HF_TOKENIZER_FILES[1:]:
      beside = os.path.join(os.path.dirname(source), name)
      if fs.exists(beside):
        fs.makedirs(os.path.dirname(target))
        fs.copy(beside, os.path.join(os.path.dirname(target), name))
  if fs.resolve(source) != fs.resolve(target):
    fs.makedirs(os.path.dirname(target))
    fs.copy(source, target)


def _check_vocabulary(model_config: ModelConfig, vocabulary):
  if vocabulary.vocab_size > model_config.vocab_size:
    raise errors.GinConfigError(
      f"ModelConfig.vocab_size={model_config.vocab_size} is smaller than the task's vocabulary "
      f"({vocabulary.vocab_size} ids); bind ModelConfig.vocab_size (or MODEL_VOCAB_SIZE) to at least that"
    )


def _initial_state(setup, manager, model_dir: str, iterator, seed: int):
  """(state, start step): restored, fine-tuned from an import, or fresh."""
  start = manager.latest_step()
  if start is None:
    return setup.init_state(jax.random.key(seed)), 0
  if start == 0 and checkpoint.holds_only_params(manager, start):  # `jaxformer import` wrote it: fine-tune
    state = setup.init_state(jax.random.key(seed))
    params, _ = checkpoint.restore_params(model_dir, setup.abstract_state.params, start)
    log.info("initialised parameters from the imported checkpoint at step %d in %s", start, model_dir)
    return state.replace(params=params, step=jnp.asarray(start, jnp.int32)), start
  state, start = checkpoint.restore_newest_readable(manager, setup.abstract_state, iterator)
  log.info("restored step %d from %s", start, model_dir)
  return state, start


@gin.configurable(module="train")
def train(
  model_dir: str = gin.REQUIRED,
  train_steps: int = gin.REQUIRED,
  model_config: ModelConfig = gin.REQUIRED,
  data_config: pipeline.DataConfig = gin.REQUIRED,
  step_config: StepConfig = gin.REQUIRED,
  wandb: WandbConfig | None = None,
  periodic_evals: Sequence[PeriodicEval] = (),
  eval_period: int = 0,
  log_period: int = 10,
  seed: int = 0,
  sample_prompt: str | None = None,
  sample_tokens: int = 48,
  sample_temperature: float = 0.0,
  progress: bool = True,
  stop_after_steps: int | None = None,
  profile_steps: tuple[int, int] | None = None,
) -> dict:
  """Trains model_config on data_config with step_config.

  Args (gin: train.train.*; runs/pretrain.gin binds them to the t5x macros and config objects):
    model_dir: %MODEL_DIR: checkpoints, metrics.jsonl, tensorboard/, config.gin, loss.png.
    train_steps: %TRAIN_STEPS, the step the run ends at (a restart continues towards it).
    model_config, data_config, step_config: @ModelConfig(), @data.DataConfig(), @train.StepConfig().
    wandb: @train.WandbConfig() to mirror metrics to Weights & Biases (off unless enabled).
    periodic_evals: extra evals (the CLI's code eval), each run every its own period and at the end.
    eval_period: %EVAL_PERIOD; 0 evaluates only at the end.
    log_period: train metrics are logged every this many steps.
    sample_prompt: if set, a short sample is printed at the end (greedy, or at sample_temperature).
    progress: a bar on a terminal, else one line per log period; False shows neither.
    stop_after_steps: stop (with a checkpoint) after this many steps of this process, even
      before train_steps, e.g. to split a run across jobs.
    profile_steps: (start, stop): a jax.profiler trace of steps start..stop-1 into MODEL_DIR/profile
      (TensorBoard's profile plugin); flag --profile_steps=start,stop.
  Returns:
    {"step", "train_loss", "eval": {task: {...}}, "preempted", "skipped_steps"}.
  """
  for name, value, minimum in (
    ("train_steps", train_steps, 1),
    ("eval_period", eval_period, 0),
    ("log_period", log_period, 1),
    ("seed", seed, 0),
  ):
    errors.require_int(f"train.train.{name}", value, minimum)
  errors.require_int("train.train.stop_after_steps", stop_after_steps, 1, allow_none=True)
  model_dir = fs.resolve(model_dir)  # local or gs://
  # One writer per run folder (process 0 holds it for every host of the run).
  lock = runlock.RunLock(model_dir, "train") if jax.process_index() == 0 else contextlib.nullcontext()
  with lock:
    return _train(
      model_dir,
      train_steps,
      model_config,
      data_config,
      step_config,
      wandb,
      periodic_evals,
      eval_period,
      log_period,
      seed,
      sample_prompt,
      sample_tokens,
      sample_temperature,
      progress,
      stop_after_steps,
      StepProfiler(os.path.join(model_dir, "profile"), profile_steps),
    )


def _train(
  model_dir,
  train_steps,
  model_config,
  data_config,
  step_config,
  wandb,
  periodic_evals,
  eval_period,
  log_period,
  seed,
  sample_prompt,
  sample_tokens,
  sample_temperature,
  progress,
  stop_after_steps,
  profiler,
) -> dict:
  vocabulary = tasks.ensure_registered(data_config.mixture_or_task_name)
  _check_vocabulary(model_config, vocabulary)
  setup = setup_lib.build(model_config, step_config, total_steps=train_steps)
  mesh, rules = setup.mesh, setup.rules
  log.info("mesh %s over %d devices of %d process(es)", dict(mesh.shape), mesh.size, jax.process_count())
  manager = checkpoint.make_manager(model_dir)
  train_iterator = pipeline.BatchIterator(pipeline.get_dataset(data_config, split="train"))
  state, start = _initial_state(setup, manager, model_dir, train_iterator, seed)
  if jax.process_index() == 0:
    write_operative_config(model_dir)
    _keep_vocabulary(vocabulary, model_dir)

  flops = model_config.flops_per_token(data_config.length)
  device_kind = jax.devices()[0].device_kind
  run_config = {"model": dataclasses.asdict(model_config), "step": dataclasses.asdict(step_config)}
  metrics_log = metrics_lib.MetricsLog(model_dir, wandb=wandb, run_config=run_config)
  preemption = _Preemption(install=jax.process_count() == 1)
  tokens_per_step = data_config.batch_size * data_config.length
  end = train_steps if stop_after_steps is None else min(train_steps, start + stop_after_steps)
  bar = Progress(progress and jax.process_index() == 0, total=train_steps, initial=start)

  def run_evals(step: int, final: bool = False) -> dict:
    due = lambda period: period > 0 and (final or step % period == 0)
    results = {}
    if final or due(eval_period):
      chunk = setup.step_config.loss_chunk_length
      results = evaluate(
        state.params, setup.model, data_config, setup.batch_sharding, rules, mesh, loss_chunk_length=chunk
      )
      for task, values in results.items():
        metrics_log.write(step, values, prefix=f"eval/{task}/", split="eval", task=task)
    for extra in periodic_evals:
      if due(extra.period):
        values = extra.run(setup.model, state.params, vocabulary, mesh, rules)
        metrics_log.write(step, values, prefix=f"eval/{extra.name}/", split="eval", task=extra.name)
        results[extra.name] = values
    return results

  result = {"step": start, "train_loss": None, "eval": {}, "preempted": False, "skipped_steps": 0}
  step = start
  window_start, window_steps = time.perf_counter(), 0
  last_eval_step = None

  def record_step(at: int, device_metrics) -> None:
    """Reads one step's metrics back to the host: the non-finite check, the log line, the bar."""
    nonlocal window_start, window_steps
    step_metrics = jax.device_get(device_metrics)
    window_steps += 1
    if not bool(step_metrics["finite"]):
      result["skipped_steps"] += 1
      message = (
        f"step {at}: loss {float(step_metrics['loss'])} or gradient norm "
        f"{float(step_metrics['grad_norm'])} is not finite; the update was not applied"
      )
      if step_config.nan_policy == "stop":
        raise NonFiniteError(message + " (train.StepConfig.nan_policy = 'stop')")
      log.warning("%s (skipped; train.StepConfig.nan_policy = 'skip')", message)
    result["train_loss"] = float(step_metrics["loss"])
    if at % log_period == 0 or at == end:
      elapsed = time.perf_counter() - window_start
      tokens_per_second = window_steps * tokens_per_step / elapsed
      record = {k: float(v) for k, v in step_metrics.items() if k != "finite"}
      record.update(
        {
          "tokens_per_second": tokens_per_second,
          "step_seconds": elapsed / window_steps,
          "mfu_6n": mfu_lib.mfu(tokens_per_second, flops["flops_per_token_6n"], jax.device_count(), device_kind),
          "mfu_6n_attention": mfu_lib.mfu(
            tokens_per_second, flops["flops_per_token_with_attention"], jax.device_count(), device_kind
          ),
          "skipped_steps": result["skipped_steps"],
        }
      )
      metrics_log.write(at, record, prefix="train/", split="train")
      bar.log(at, record)
      window_start, window_steps = time.perf_counter(), 0
    bar.update(1)

  def evals_due(at: int) -> bool:
    return any(p > 0 and at % p == 0 for p in [eval_period, *(e.period for e in periodic_evals)])

  # A step's metrics are read one step late: after the next step is dispatched, so the accelerators
  # never wait for the host. A non-finite update is still never applied (the guard is in the step),
  # and nan_policy='stop' stops one step after the first non-finite one at most, naming it. Before an
  # eval, a checkpoint, preemption or the last step, the current step's metrics are read at once.
  pending = None
  try:
    while step < end:
      try:
        local = next(train_iterator)
      except StopIteration:
        raise UserError(
          f"step {step + 1}: the train split of {data_config.mixture_or_task_name} ran out after {step - start} "
          f"steps of this process (DataConfig.num_epochs={data_config.num_epochs}); the last checkpoint is "
          f"step {manager.latest_step()}. Allow more epochs (None repeats) or lower TRAIN_STEPS"
        ) from None
      profiler.before(step + 1)
      with sharding.activation_sharding(mesh, rules):
        state, step_metrics = setup.train_step(state, setup.global_batch(local))
      step += 1
      profiler.after(step, state, step_metrics)
      if pending is not None:
        record_step(*pending)
      pending = (step, step_metrics)

      preempted = bool(preemption.requested) or manager.reached_preemption(step)
      if step == end or preempted or evals_due(step) or manager.should_save(step):
        record_step(*pending)
        pending = None

      if step != end:
        evaluated = run_evals(step)
        if evaluated:
          result["eval"] = evaluated
          last_eval_step = step
          window_start = time.perf_counter()

      checkpoint.save(manager, step, state, train_iterator, force=preempted or step == end)
      if preempted:
        manager.wait_until_finished()
        log.warning("preempted at step %d: checkpoint saved, exiting", step)
        result["preempted"] = True
        result["signal"] = preemption.requested or "SIGTERM"
        break
    manager.wait_until_finished()
    result["step"] = step
    if not result["preempted"] and step == train_steps and last_eval_step != step:
      result["eval"] = run_evals(step, final=True)
    if jax.process_index() == 0:
      write_operative_config(model_dir)  # now with everything the run called
    if not result["preempted"] and sample_prompt is not None:
      result["sample"] = _sample(
        setup.model, state.params, vocabulary, sample_prompt, sample_tokens, sample_temperature, seed
      )
  finally:
    profiler.close()
    bar.close()
    preemption.restore()
    manager.wait_until_finished()
    manager.close()
    metrics_log.close()
    metrics_lib.plot_losses(model_dir)
  return result


def write_operative_config(model_dir: str, name: str = "config.gin") -> str:
  """Writes gin's operative config (the values the run actually used) to MODEL_DIR/config.gin."""
  path = os.path.join(model_dir, name)
  fs.write(path, gin.operative_config_str())
  return path


def _sample(model, params, vocabulary, prompt: str, max_new_tokens: int, temperature: float, seed: int) -> str:
  from jaxformer.infer.sample import bos_of, generate, prompt_ids

  params = jax.device_get(params)
  ids, stops = prompt_ids(vocabulary, prompt)
  completion = generate(
    model, params, [ids], max_new_tokens, stop_ids=stops, temperature=temperature, seed=seed, bos_id=bos_of(vocabulary)
  )[0]
  return vocabulary.decode(completion)
