"""The train loop: a small Trainer over a RunArgs dataclass, with hooks (levanter's shape).

The loop itself only fetches a batch, dispatches the step, reads each step's metrics back (one step
late, so the accelerators never wait for the host; at once before a hook runs, a preemption or the last
step) and guards against non-finite steps. Everything else is a hook added with `add_hook(fn, every=N)`:
checkpoints, the held-out loss eval, the code eval, TensorBoard / W&B / metrics.jsonl, the progress bar,
the profiler and the end-of-run sample (train/hooks.py).
"""

import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable

import gin
import jax
import jax.numpy as jnp

from jaxformer import base_run, checkpoint, errors, fs, sharding, tasks
from jaxformer.base_run import FinetuneBase
from jaxformer.data import pipeline
from jaxformer.errors import UserError
from jaxformer.models import FamilyConfig
from jaxformer.models.common import lora
from jaxformer.train import setup as setup_lib
from jaxformer.train.run_settings import check_resumable, run_meta
from jaxformer.train.step import StepConfig
from jaxformer.train.tracking import WandbConfig
from jaxformer.train.vocabulary_copy import check_run_vocabulary, keep_vocabulary

log = logging.getLogger("jaxformer")


class NonFiniteError(UserError):
  """The loss or gradient was NaN/Inf and train.StepConfig.nan_policy = 'stop'."""


@dataclasses.dataclass(frozen=True)
class RunArgs:
  """What a run is (gin: train.train.*, which runs/pretrain.gin binds to the t5x macros).

  model_dir: %MODEL_DIR: checkpoints, metrics.jsonl, tensorboard/, config.gin, loss.png.
  train_steps: %TRAIN_STEPS, the step the run ends at (a restart continues towards it).
  eval_period: %EVAL_PERIOD; 0 evaluates only at the end. log_period: train metrics every this many steps.
  sample_prompt: if set, a short sample is printed at the end (greedy, or at sample_temperature).
  progress: a bar on a terminal, else one line per log period; False shows neither.
  stop_after_steps: stop (with a checkpoint) after this many steps of this process, even before train_steps.
  profile_steps: (start, stop): a jax.profiler trace of steps start..stop-1 into MODEL_DIR/profile.
  switch_vocabulary: train on with a VOCABULARY other than the run's own copy (MODEL_DIR/vocabulary/),
    which it then replaces; by default another tokenizer is refused, naming both digests.
  base: fine-tune from this run (base_run.FinetuneBase): the parameters start as its (with LoRA, it is the
    frozen base the adapters train on) and the optimizer state fresh; the base run is only read.
  final_eval: the held-out loss eval after the last step (with eval_period 0 and final_eval False the
    run evaluates nothing; `jaxformer eval loss` still can).
  """

  model_dir: str
  train_steps: int
  model_config: FamilyConfig
  data_config: pipeline.DataConfig
  step_config: StepConfig
  wandb: WandbConfig | None = None
  eval_period: int = 0
  log_period: int = 10
  seed: int = 0
  sample_prompt: str | None = None
  sample_tokens: int = 48
  sample_temperature: float = 0.0
  progress: bool = True
  stop_after_steps: int | None = None
  profile_steps: tuple[int, int] | None = None
  switch_vocabulary: bool = False
  final_eval: bool = True
  base: FinetuneBase | None = None

  def __post_init__(self):
    for name, minimum in (("train_steps", 1), ("eval_period", 0), ("log_period", 1), ("seed", 0)):
      errors.require_int(f"train.train.{name}", getattr(self, name), minimum)
    errors.require_int("train.train.stop_after_steps", self.stop_after_steps, 1, allow_none=True)


@dataclasses.dataclass
class StepInfo:
  """What a hook sees after a step.

  step: the step just completed; state: the TrainState after it; metrics: its metrics on the host;
  final: train_steps reached; stop: this process's last step (final, or stop_after_steps);
  preempted: a stop was requested (SIGTERM, Ctrl-C, JAX's preemption notice).
  """

  step: int
  state: object
  metrics: dict
  trainer: "Trainer"
  final: bool
  stop: bool
  preempted: bool


class Hook:
  """Work the trainer runs after steps. Subclasses set `every` (0: never periodic) and override what
  they need: `wants` (when __call__ runs), `__call__(info)`, `on_metrics` (every step's metrics as they
  reach the host), `before_step` / `after_dispatch` (around the step's dispatch), `close` (always, at the
  end of the run, in reverse order of adding)."""

  every: int = 0
  at_final: bool = False  # also after the run's last step (train_steps reached)
  at_stop: bool = False  # also after this process's last step (train_steps or stop_after_steps)
  on_preemption: bool = False  # also when a stop is requested

  def due(self, step: int) -> bool:
    return self.every > 0 and step % self.every == 0

  def wants(self, step: int, final: bool, stop: bool, preempted: bool) -> bool:
    if preempted:
      return self.on_preemption
    return (self.due(step) and not stop) or (final and self.at_final) or (stop and self.at_stop)

  def __call__(self, info: StepInfo) -> None:
    pass

  def on_metrics(self, step: int, metrics: dict) -> None:
    pass

  def before_step(self, step: int) -> None:
    pass

  def after_dispatch(self, step: int, state, device_metrics) -> None:
    pass

  def close(self) -> None:
    pass


class FunctionHook(Hook):
  """fn(info) every `every` steps, and after the run's last step unless at_final=False."""

  def __init__(self, fn: Callable[[StepInfo], None], every: int, at_final: bool = True):
    self.fn, self.every, self.at_final = fn, every, at_final

  def __call__(self, info: StepInfo) -> None:
    self.fn(info)


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


class Trainer:
  """One run: its setup (model, optimizer, mesh, step), data, checkpoints and hooks.

  trainer = Trainer(args); trainer.add_hook(fn, every=N); result = trainer.run()
  """

  def __init__(self, args: RunArgs):
    self.args = args
    self.model_dir = fs.resolve(args.model_dir)
    self.vocabulary = tasks.ensure_registered(args.data_config.mixture_or_task_name)
    _check_vocabulary(args.model_config, self.vocabulary)
    check_run_vocabulary(self.model_dir, self.vocabulary, args.switch_vocabulary)
    _check_lengths(args)
    from jaxformer.tasks.instructions import check_lengths

    errors.call_configurable(check_lengths, args.data_config.mixture_or_task_name, args.data_config.length)
    self.setup = setup_lib.build(args.model_config, args.step_config, total_steps=args.train_steps)
    self.mesh, self.rules = self.setup.mesh, self.setup.rules
    log.info("mesh %s over %d devices of %d process(es)", dict(self.mesh.shape), self.mesh.size, jax.process_count())
    self.manager = checkpoint.make_manager(self.model_dir)
    self.base = _check_base(args, self.model_dir, self.manager)
    self.iterator = pipeline.BatchIterator(pipeline.get_dataset(args.data_config, split="train"))
    self.meta = run_meta(args, self.vocabulary)
    if self.base is not None:
      self.meta["base"] = self.base
    self.state, self.start = _initial_state(self, args.seed)
    self.step = self.start
    self.end = (
      args.train_steps if args.stop_after_steps is None else min(args.train_steps, self.start + args.stop_after_steps)
    )
    self.tokens_per_step = args.data_config.batch_size * args.data_config.length
    self.result = {"step": self.start, "train_loss": None, "eval": {}, "preempted": False, "skipped_steps": 0}
    self.hooks: list[Hook] = []
    self.hook_seconds = 0.0  # wall time spent in hooks' __call__ (throughput leaves it out)
    if jax.process_index() == 0:
      write_operative_config(self.model_dir)
      keep_vocabulary(self.vocabulary, self.model_dir)
      if self.base is not None:
        base_run.write_pointer(self.model_dir, self.base, args.model_config.lora)

  @property
  def model(self):
    return self.setup.model

  def full_params(self, state) -> dict:
    """The model's whole parameter tree (with LoRA: the frozen base and the adapters), for evals and samples."""
    return state.params if state.frozen is None else lora.combine(state.frozen, state.params)

  def add_hook(self, hook: Hook | Callable[[StepInfo], None], every: int = 0, at_final: bool = True) -> Hook:
    """Adds a Hook, or a function fn(info) run every `every` steps and after the last one; returns the hook."""
    if not isinstance(hook, Hook):
      errors.require_int("add_hook every", every, 1)
      hook = FunctionHook(hook, every, at_final)
    self.hooks.append(hook)
    return hook

  def _read(self, step: int, device_metrics) -> dict:
    """One step's metrics on the host: the non-finite check, then every hook's on_metrics."""
    metrics = jax.device_get(device_metrics)
    if not bool(metrics["finite"]):
      self.result["skipped_steps"] += 1
      message = (
        f"step {step}: loss {float(metrics['loss'])} or gradient norm "
        f"{float(metrics['grad_norm'])} is not finite; the update was not applied"
      )
      if self.args.step_config.nan_policy == "stop":
        raise NonFiniteError(message + " (train.StepConfig.nan_policy = 'stop')")
      log.warning("%s (skipped; train.StepConfig.nan_policy = 'skip')", message)
    self.result["train_loss"] = float(metrics["loss"])
    for hook in self.hooks:
      hook.on_metrics(step, metrics)
    return metrics

  def _next_batch(self) -> dict:
    try:
      return next(self.iterator)
    except StopIteration:
      data = self.args.data_config
      raise UserError(
        f"step {self.step + 1}: the train split of {data.mixture_or_task_name} ran out after "
        f"{self.step - self.start} steps of this process (DataConfig.num_epochs={data.num_epochs}); the last "
        f"checkpoint is step {self.manager.latest_step()}. Allow more epochs (None repeats) or lower TRAIN_STEPS"
      ) from None

  def run(self) -> dict:
    """Trains to self.end; returns {"step", "train_loss", "eval": {task: {...}}, "preempted", "skipped_steps"}."""
    preemption = _Preemption(install=jax.process_count() == 1)
    pending, metrics = None, {}
    try:
      while self.step < self.end:
        local = self._next_batch()
        for hook in self.hooks:
          hook.before_step(self.step + 1)
        with sharding.activation_sharding(self.mesh, self.rules):
          self.state, device_metrics = self.setup.train_step(self.state, self.setup.global_batch(local))
        self.step += 1
        for hook in self.hooks:
          hook.after_dispatch(self.step, self.state, device_metrics)
        if pending is not None:
          metrics = self._read(*pending)
        pending = (self.step, device_metrics)
        preempted = bool(preemption.requested) or self.manager.reached_preemption(self.step)
        final, stop = self.step == self.args.train_steps, self.step == self.end
        due = [h for h in self.hooks if h.wants(self.step, final, stop, preempted)]
        if due or stop or preempted:
          metrics, pending = self._read(*pending), None
        info = StepInfo(self.step, self.state, metrics, self, final, stop, preempted)
        for hook in due:
          started = time.perf_counter()
          hook(info)
          self.hook_seconds += time.perf_counter() - started
        if preempted:
          log.warning("preempted at step %d: checkpoint saved, exiting", self.step)
          self.result.update(preempted=True, signal=preemption.requested or "SIGTERM")
          break
      checkpoint.seal(self.manager)
      self.result["step"] = self.step
      if jax.process_index() == 0:
        write_operative_config(self.model_dir)  # now with everything the run called
    finally:
      preemption.restore()
      for hook in reversed(self.hooks):
        hook.close()
      checkpoint.seal(self.manager)  # a save still in flight gets its checksums too
      self.manager.close()
    return self.result


def write_operative_config(model_dir: str, name: str = "config.gin") -> str:
  """Writes gin's operative config (the values the run actually used) to MODEL_DIR/config.gin."""
  path = os.path.join(model_dir, name)
  fs.write(path, gin.operative_config_str())
  return path


def _check_lengths(args: RunArgs) -> None:
  if args.data_config.length > args.model_config.max_length:
    raise errors.GinConfigError(
      f"TASK_FEATURE_LENGTHS['targets']={args.data_config.length} is longer than the model's context "
      f"{args.model_config.gin_name}.max_length={args.model_config.max_length}; shorten the sequences or lengthen "
      "the model"
    )


def _check_vocabulary(model_config: FamilyConfig, vocabulary):
  if vocabulary.vocab_size > model_config.vocab_size:
    name = model_config.gin_name
    raise errors.GinConfigError(
      f"{name}.vocab_size={model_config.vocab_size} is smaller than the task's vocabulary "
      f"({vocabulary.vocab_size} ids); bind {name}.vocab_size (or MODEL_VOCAB_SIZE) to at least that"
    )


def _check_base(args: RunArgs, model_dir: str, manager) -> dict | None:
  """The base's pointer: the one MODEL_DIR's newest checkpoint recorded when it resumes (a LoRA run's adapters
  fit that base only, so another BASE_DIR or step is refused, and that base must be unchanged), else
  base_run.pointer of train.train.base."""
  latest = manager.latest_step()
  recorded = (base_run.step_meta(model_dir, latest) or {}).get("base") if latest is not None else None
  if recorded:
    named = args.base
    if (
      named is None
      or fs.resolve(named.model_dir) != recorded["model_dir"]
      or named.step not in (None, recorded["step"])
    ):
      given = "no train.train.base" if named is None else f"train.FinetuneBase {named.model_dir} step {named.step}"
      raise UserError(
        f"{model_dir} (step {latest}) was fine-tuned from {recorded['model_dir']} step {recorded['step']}, and the "
        f"run now names {given}: bind BASE_DIR to that base, or fine-tune into a new MODEL_DIR"
      )
    if args.model_config.lora is not None:
      base_run.check_unchanged(recorded, f"{model_dir} (step {latest})")
    return recorded
  if args.base is None:
    if args.model_config.lora is not None:
      raise UserError(
        "models.LoraConfig is bound but train.train.base is not: adapters train on a base run; bind "
        "train.train.base = @train.FinetuneBase() and BASE_DIR (runs/finetune_lora.gin)"
      )
    return None
  if fs.resolve(args.base.model_dir) == model_dir:
    raise UserError(f"MODEL_DIR={model_dir} is the base run itself: a fine-tune writes into a MODEL_DIR of its own")
  return base_run.pointer(args.base)


def _initial_state(trainer: "Trainer", seed: int):
  """(state, start step): restored, fine-tuned from a base run or an import, or fresh."""
  setup, manager, model_dir, iterator = trainer.setup, trainer.manager, trainer.model_dir, trainer.iterator
  config = setup.model_config
  start = manager.latest_step()
  if start is None and trainer.base is not None:
    state = setup.init_state(jax.random.key(seed), with_frozen=False)
    params, _ = base_run.restore(config, trainer.base, setup.mesh, setup.rules)
    base = trainer.base
    log.info("fine-tuning from %s step %d (sha256 %s)", base["model_dir"], base["step"], base["sha256"][:12])
    if config.lora is not None:
      return state.replace(frozen=params), 0
    return state.replace(params=params), 0
  if start is None:
    return setup.init_state(jax.random.key(seed)), 0
  if start == 0 and checkpoint.holds_only_params(manager, start):  # `jaxformer import` wrote it: fine-tune
    state = setup.init_state(jax.random.key(seed))
    params, _ = checkpoint.restore_params(model_dir, setup.abstract_state.params, start)
    log.info("initialised parameters from the imported checkpoint at step %d in %s", start, model_dir)
    return state.replace(params=params, step=jnp.asarray(start, jnp.int32)), start
  recorded = {}

  def check(step, saved):
    check_resumable(trainer.meta, saved, model_dir, step)
    recorded.update((saved or {}).get("base") or {})

  abstract = setup.abstract_state.replace(frozen=None)
  state, start = checkpoint.restore_newest_readable(manager, abstract, iterator, check_meta=check)
  log.info("restored step %d from %s", start, model_dir)
  if config.lora is not None:  # the adapters fit the base they trained on, and only it
    base_run.check_unchanged(recorded or trainer.base, f"{model_dir} (step {start})")
    frozen, _ = base_run.restore(config, recorded or trainer.base, setup.mesh, setup.rules)
    state = state.replace(frozen=frozen)
  return state, start
