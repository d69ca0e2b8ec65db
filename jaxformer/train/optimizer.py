"""AdamW with linear warmup and cosine decay to a floor, global-norm clipping, and weight decay
masked off biases and LayerNorm parameters. Everything is a gin binding (optimizer.*)."""

import gin
import jax
import optax

NO_DECAY_NAMES = ("bias", "scale")  # biases and LayerNorm scales/offsets


@gin.configurable(module="optimizer")
def learning_rate_schedule(
  peak: float = 3e-4,
  warmup_steps: int = 1000,
  decay_steps: int | None = None,
  floor_ratio: float = 0.1,
  total_steps: int | None = None,
) -> optax.Schedule:
  """0 -> peak linearly over warmup_steps, then cosine to floor_ratio * peak at decay_steps
  (default: total_steps, usually %TRAIN_STEPS), constant after."""
  decay_steps = decay_steps or total_steps
  if not decay_steps or decay_steps <= warmup_steps:
    raise ValueError(
      f"optimizer.learning_rate_schedule: decay_steps={decay_steps} must exceed "
      f"warmup_steps={warmup_steps}: lower --gin.optimizer.learning_rate_schedule.warmup_steps "
      "(runs/pretrain.gin warms up for 2000 steps) or train for more steps (TRAIN_STEPS)"
    )
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0, peak_value=peak, warmup_steps=warmup_steps, decay_steps=decay_steps, end_value=peak * floor_ratio
  )


def decay_mask(params):
  """True for the leaves weight decay applies to: kernels and embeddings, not biases or norms."""
  return jax.tree_util.tree_map_with_path(lambda path, _: getattr(path[-1], "key", None) not in NO_DECAY_NAMES, params)


@gin.configurable(module="optimizer")
def make_optimizer(
  schedule: optax.Schedule,
  b1: float = 0.9,
  b2: float = 0.95,
  eps: float = 1e-8,
  weight_decay: float = 0.1,
  clip_norm: float | None = 1.0,
) -> optax.GradientTransformation:
  parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm else []
  parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask))
  return optax.chain(*parts)
