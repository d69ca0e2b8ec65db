"""The hooks every run has (train.train adds them, in this order): checkpoints, the train metrics (metrics.jsonl,
TensorBoard, W&B, the progress bar, loss.png), the held-out loss eval, extra periodic evals (the CLI's code
eval), the profiler and the end-of-run sample. A user adds their own with Trainer.add_hook."""

import dataclasses
import os
import time
from collections.abc import Callable

import jax

from jaxformer import checkpoint
from jaxformer.train import metrics as metrics_lib
from jaxformer.train import mfu as mfu_lib
from jaxformer.train.evaluate import evaluate
from jaxformer.train.profile import StepProfiler
from jaxformer.train.progress import Progress
from jaxformer.train.trainer import Hook, StepInfo, Trainer


class CheckpointHook(Hook):
  """Saves the state and every host's data position when the manager's policy says (CHECKPOINT_PERIOD,
  JAX's preemption step), after the last step, and at once when a stop is requested."""

  at_stop = True
  on_preemption = True

  def __init__(self, trainer: Trainer):
    self.trainer = trainer

  def due(self, step: int) -> bool:
    return self.trainer.manager.should_save(step)

  def __call__(self, info: StepInfo) -> None:
    trainer = self.trainer
    force = info.stop or info.preempted
    checkpoint.save(trainer.manager, info.step, info.state, trainer.iterator, force=force, meta=trainer.meta)
    if info.preempted:
      checkpoint.seal(trainer.manager)


class TrainMetricsHook(Hook):
  """Every log_period steps (and after the last): loss, accuracy, gradient norm, learning rate, tokens/s and
  MFU under both accountings, to metrics.jsonl, TensorBoard and W&B (process 0) and the progress bar.
  Throughput counts train steps only: time spent in other hooks (evals) is left out. Closing plots loss.png."""

  def __init__(self, trainer: Trainer):
    args = trainer.args
    self.trainer, self.log_period = trainer, args.log_period
    run_config = {"model": dataclasses.asdict(args.model_config), "step": dataclasses.asdict(args.step_config)}
    self.log = metrics_lib.MetricsLog(trainer.model_dir, wandb=args.wandb, run_config=run_config)
    self.bar = Progress(args.progress and jax.process_index() == 0, total=args.train_steps, initial=trainer.start)
    self.flops = args.model_config.flops_per_token(args.data_config.length)
    self.device_kind, self.devices = jax.devices()[0].device_kind, jax.device_count()
    self._window(time.perf_counter())

  def _window(self, now: float) -> None:
    self.window_start, self.window_hooks, self.window_steps = now, self.trainer.hook_seconds, 0
    self.window_loss_tokens = 0.0  # tokens under the loss since the last record: exact at any log_period

  def on_metrics(self, step: int, metrics: dict) -> None:
    self.window_steps += 1
    self.window_loss_tokens += float(metrics["loss_tokens"])
    if step % self.log_period == 0 or step == self.trainer.end:
      now = time.perf_counter()
      elapsed = max(now - self.window_start - (self.trainer.hook_seconds - self.window_hooks), 1e-9)
      tokens_per_second = self.window_steps * self.trainer.tokens_per_step / elapsed
      mfu = lambda accounting: mfu_lib.mfu(tokens_per_second, self.flops[accounting], self.devices, self.device_kind)
      record = {k: float(v) for k, v in metrics.items() if k != "finite"}
      record.update(
        tokens_per_second=tokens_per_second,
        step_seconds=elapsed / self.window_steps,
        mfu_6n=mfu("flops_per_token_6n"),
        mfu_6n_attention=mfu("flops_per_token_with_attention"),
        skipped_steps=self.trainer.result["skipped_steps"],
        loss_tokens_window=self.window_loss_tokens,
        window_steps=self.window_steps,
      )
      self.log.write(step, record, prefix="train/", split="train")
      self.bar.log(step, record)
      self._window(now)
    self.bar.update(1)

  def write_eval(self, step: int, name: str, values: dict, task: str | None = None) -> None:
    self.log.write(step, values, prefix=f"eval/{name}/", split="eval", task=task or name)

  def close(self) -> None:
    self.bar.close()
    self.log.close()
    metrics_lib.plot_losses(self.trainer.model_dir)


class LossEvalHook(Hook):
  """Held-out loss per task every EVAL_PERIOD steps and after the run's last step (train/evaluate.py)."""

  at_final = True

  def __init__(self, trainer: Trainer, writer: TrainMetricsHook):
    self.trainer, self.writer, self.every = trainer, writer, trainer.args.eval_period
    self.at_final = trainer.args.final_eval

  def __call__(self, info: StepInfo) -> None:
    setup = self.trainer.setup
    results = evaluate(
      self.trainer.full_params(info.state),
      setup.model,
      self.trainer.args.data_config,
      setup.batch_sharding,
      setup.rules,
      setup.mesh,
      loss_chunk_length=setup.step_config.loss_chunk_length,
    )
    for task, values in results.items():
      self.writer.write_eval(info.step, task, values)
    self.trainer.result["eval"].update(results)


@dataclasses.dataclass(frozen=True)
class PeriodicEval:
  """An extra evaluation every `period` steps and after the run's last step, logged under eval/<name>/.

  run(model, params, vocabulary, mesh, rules) -> {metric: float}. The CLI adds the code eval this way,
  so train/ needs nothing from evals/.
  """

  name: str
  period: int
  run: Callable[..., dict]


class PeriodicEvalHook(Hook):
  at_final = True

  def __init__(self, trainer: Trainer, writer: TrainMetricsHook, periodic: PeriodicEval):
    self.trainer, self.writer, self.periodic, self.every = trainer, writer, periodic, periodic.period

  def wants(self, step: int, final: bool, stop: bool, preempted: bool) -> bool:
    return self.every > 0 and super().wants(step, final, stop, preempted)  # period 0: never, not even at the end

  def __call__(self, info: StepInfo) -> None:
    trainer = self.trainer
    values = self.periodic.run(
      trainer.model, trainer.full_params(info.state), trainer.vocabulary, trainer.mesh, trainer.rules
    )
    self.writer.write_eval(info.step, self.periodic.name, values)
    trainer.result["eval"][self.periodic.name] = values


class ProfilerHook(Hook):
  """A jax.profiler trace of train.train.profile_steps into MODEL_DIR/profile (train/profile.py)."""

  def __init__(self, trainer: Trainer):
    self.profiler = StepProfiler(os.path.join(trainer.model_dir, "profile"), trainer.args.profile_steps)

  def before_step(self, step: int) -> None:
    self.profiler.before(step)

  def after_dispatch(self, step: int, state, device_metrics) -> None:
    self.profiler.after(step, state, device_metrics)

  def close(self) -> None:
    self.profiler.close()


class SampleHook(Hook):
  """After this process's last step: a short sample of train.train.sample_prompt, into result['sample']."""

  at_stop = True

  def __init__(self, trainer: Trainer):
    self.trainer = trainer

  def __call__(self, info: StepInfo) -> None:
    from jaxformer.infer.sample import bos_of, generate, prompt_ids

    args, vocabulary = self.trainer.args, self.trainer.vocabulary
    params = jax.device_get(self.trainer.full_params(info.state))
    ids, stops = prompt_ids(vocabulary, args.sample_prompt)
    completion = generate(
      self.trainer.model,
      params,
      [ids],
      args.sample_tokens,
      stop_ids=stops,
      temperature=args.sample_temperature,
      seed=args.seed,
      bos_id=bos_of(vocabulary),
    )[0]
    self.trainer.result["sample"] = vocabulary.decode(completion)


def add_standard_hooks(trainer: Trainer, periodic_evals=()) -> None:
  """The hooks of every run, in the order they run after a step: the checkpoint first (an eval that fails
  then loses nothing), the metrics, the evals, the profiler, the sample."""
  trainer.add_hook(CheckpointHook(trainer))
  writer = trainer.add_hook(TrainMetricsHook(trainer))
  trainer.add_hook(LossEvalHook(trainer, writer))
  for periodic in periodic_evals:
    trainer.add_hook(PeriodicEvalHook(trainer, writer, periodic))
  trainer.add_hook(ProfilerHook(trainer))
  if trainer.args.sample_prompt is not None:
    trainer.add_hook(SampleHook(trainer))
