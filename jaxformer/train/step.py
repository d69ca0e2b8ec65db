"""The sharded train step (with gradient accumulation and a non-finite guard) and the eval step."""

import dataclasses

import gin
import jax
import jax.numpy as jnp
import optax

from jaxformer.models import head_logits
from jaxformer.models.common import lora
from jaxformer.train.loss import chunked_cross_entropy_sums, cross_entropy_sums
from jaxformer.train.state import TrainState, model_inputs


@gin.configurable(module="train")
@dataclasses.dataclass(frozen=True)
class StepConfig:
  """microbatches: gradient accumulation steps per batch (lax.scan; same update as one big batch).
  z_loss: weight of log(Z)^2. nan_policy: 'skip' (drop the update, go on) or 'stop' (drop it, stop).
  loss_chunk_length: the loss computes the logits this many positions at a time (train and eval step), so
  [batch, length, vocab] float32 logits and their gradient never exist at once; 0 computes them whole."""

  microbatches: int = 1
  z_loss: float = 0.0
  nan_policy: str = "skip"
  loss_chunk_length: int = 512

  def __post_init__(self):
    if self.nan_policy not in ("skip", "stop"):
      raise ValueError(f"train.StepConfig.nan_policy={self.nan_policy!r}: use 'skip' or 'stop'")
    if self.microbatches < 1:
      raise ValueError(f"train.StepConfig.microbatches={self.microbatches} must be >= 1")
    if self.loss_chunk_length < 0:
      raise ValueError(f"train.StepConfig.loss_chunk_length={self.loss_chunk_length} must be >= 0 (0: no chunks)")


def _sums(model, params, batch, z_loss, loss_chunk_length=0, rngs=None):
  targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
  if not loss_chunk_length:
    logits = model.apply({"params": params}, **model_inputs(batch), rngs=rngs)
    sums = cross_entropy_sums(logits, targets, weights, z_loss)
    return sums["loss"], sums
  hidden = model.apply({"params": params}, **model_inputs(batch), return_hidden=True, rngs=rngs)
  sums = chunked_cross_entropy_sums(
    lambda head, h: head_logits(model.config, head, h),
    model.config.head_params(params),
    hidden,
    targets,
    weights,
    z_loss,
    loss_chunk_length,
    unroll=not model.config.scan_layers,  # unrolled like the layers: plan's FLOP count sees every chunk
  )
  return sums["loss"], sums


def make_train_step(model, optimizer, schedule, config: StepConfig, batch_sharding=None):
  """train_step(state, batch) -> (state, metrics). A non-finite loss or gradient never reaches
  the parameters or the optimizer state; metrics['finite'] says whether the update was applied.

  With LoRA the gradient is taken of the adapters (state.params) only; the base (state.frozen) is read, never
  differentiated or updated. LoRA dropout draws its masks from the step number (and the microbatch)."""
  lora_config = model.config.lora
  dropout = lora_config is not None and lora_config.dropout > 0

  def loss_fn(params, batch, frozen, key):
    whole = params if frozen is None else lora.combine(frozen, params)
    rngs = {"dropout": key} if dropout else None
    return _sums(model, whole, batch, config.z_loss, config.loss_chunk_length, rngs)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def accumulate(params, batch, frozen, key):
    m = config.microbatches
    if m == 1:
      (_, sums), grads = grad_fn(params, batch, frozen, key)
      return grads, sums

    def split(x):  # microbatch j takes rows j, j+m, ...: each stays spread over the batch shards
      if x.shape[0] % m:
        raise ValueError(f"train.StepConfig.microbatches={m} does not divide the per-step batch {x.shape[0]}")
      return jnp.swapaxes(x.reshape((x.shape[0] // m, m) + x.shape[1:]), 0, 1)

    micro = jax.tree.map(split, batch)

    def body(carry, xs):
      mb, j = xs
      if batch_sharding is not None:
        mb = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, batch_sharding), mb)
      (_, sums), grads = grad_fn(params, mb, frozen, jax.random.fold_in(key, j))
      return jax.tree.map(jnp.add, carry, (grads, sums)), None

    zero_sums = {k: jnp.zeros((), jnp.float32) for k in ("loss", "cross_entropy", "z_loss", "correct", "weight")}
    (grads, sums), _ = jax.lax.scan(body, (jax.tree.map(jnp.zeros_like, params), zero_sums), (micro, jnp.arange(m)))
    return grads, sums

  def train_step(state: TrainState, batch):
    key = jax.random.fold_in(jax.random.key(0), state.step)
    grads, sums = accumulate(state.params, batch, state.frozen, key)
    denominator = jnp.maximum(sums["weight"], 1.0)
    grads = jax.tree.map(lambda g: g / denominator, grads)
    grad_norm = optax.global_norm(grads)
    loss = sums["loss"] / denominator
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = TrainState(
      step=state.step + 1,
      params=keep(params, state.params),
      opt_state=keep(opt_state, state.opt_state),
      frozen=state.frozen,
    )
    metrics = {
      "loss": loss,
      "cross_entropy": sums["cross_entropy"] / denominator,
      "z_loss": sums["z_loss"] / denominator,
      "accuracy": sums["correct"] / denominator,
      "grad_norm": grad_norm,
      "learning_rate": schedule(state.step),
      "loss_tokens": sums["weight"],
      "finite": finite,
    }
    return new_state, metrics

  return train_step


def jit_train_step(model, optimizer, schedule, config: StepConfig, state_shardings, batch_sharding):
  """The jitted, sharded train step that `train`, `bench` and `plan --topology` all compile: state in
  and out with its shardings (donated), batch sharded over (data, fsdp)."""
  return jax.jit(
    make_train_step(model, optimizer, schedule, config, batch_sharding),
    in_shardings=(state_shardings, batch_sharding),
    out_shardings=(state_shardings, None),
    donate_argnums=0,
  )


def make_eval_step(model, loss_chunk_length: int = 0):
  """eval_step(params, batch) -> sums of loss, correct and weight (add them over batches).
  loss_chunk_length: as train.StepConfig's (0: whole logits)."""

  def eval_step(params, batch):
    _, sums = _sums(model, params, batch, 0.0, loss_chunk_length)
    return {"loss": sums["cross_entropy"], "correct": sums["correct"], "weight": sums["weight"]}

  return eval_step
