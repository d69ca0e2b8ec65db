"""`jaxformer train`: the gin entry point. Takes the run's gin bindings (train.train.*), holds the run
folder's lock, and runs a Trainer (train/trainer.py) with the standard hooks (train/hooks.py) plus any
the caller adds (the CLI's code eval). Resumes from MODEL_DIR's latest checkpoint and stops cleanly on
SIGTERM or Ctrl-C."""

import contextlib
from collections.abc import Sequence

import gin
import jax

from jaxformer import fs, models, runlock
from jaxformer.base_run import FinetuneBase
from jaxformer.data import pipeline
from jaxformer.models import FamilyConfig
from jaxformer.train.hooks import PeriodicEval, add_standard_hooks
from jaxformer.train.step import StepConfig
from jaxformer.train.tracking import WandbConfig
from jaxformer.train.trainer import Hook, RunArgs, Trainer

__all__ = ["PeriodicEval", "train"]


@gin.configurable(module="train")
def train(
  model_dir: str = gin.REQUIRED,
  train_steps: int = gin.REQUIRED,
  model_config: FamilyConfig | None = None,
  data_config: pipeline.DataConfig = gin.REQUIRED,
  step_config: StepConfig = gin.REQUIRED,
  wandb: WandbConfig | None = None,
  periodic_evals: Sequence[PeriodicEval] = (),
  hooks: Sequence[Hook] = (),
  eval_period: int = 0,
  log_period: int = 10,
  seed: int = 0,
  sample_prompt: str | None = None,
  sample_tokens: int = 48,
  sample_temperature: float = 0.0,
  progress: bool = True,
  stop_after_steps: int | None = None,
  profile_steps: tuple[int, int] | None = None,
  switch_vocabulary: bool = False,
  final_eval: bool = True,
  base: FinetuneBase | None = None,
) -> dict:
  """Trains model_config on data_config with step_config (the fields are RunArgs', train/trainer.py).

  periodic_evals: extra evals (the CLI's code eval), each every its own period and after the last step.
  hooks: more Hook objects, run after the standard ones.
  Returns:
    {"step", "train_loss", "eval": {task: {...}}, "preempted", "skipped_steps"} (and "sample", "signal").
  """
  args = RunArgs(
    fs.resolve(model_dir),
    train_steps,
    model_config if model_config is not None else models.bound(),
    data_config,
    step_config,
    wandb,
    eval_period,
    log_period,
    seed,
    sample_prompt,
    sample_tokens,
    sample_temperature,
    progress,
    stop_after_steps,
    profile_steps,
    switch_vocabulary,
    final_eval,
    base,
  )
  # One writer per run folder (process 0 holds it for every host of the run).
  lock = runlock.RunLock(args.model_dir, "train") if jax.process_index() == 0 else contextlib.nullcontext()
  with lock:
    trainer = Trainer(args)
    add_standard_hooks(trainer, periodic_evals)
    for hook in hooks:
      trainer.add_hook(hook)
    return trainer.run()
