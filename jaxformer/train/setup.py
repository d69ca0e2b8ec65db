"""One setup for every path that runs the train step: `train`, `bench`, `plan --topology` and the tests
build the model, optimizer, mesh, abstract state, shardings and jitted step here, so `plan` compiles
exactly what `train` runs."""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from jaxformer import sharding
from jaxformer.data.feature_names import MODEL_FEATURE_NAMES
from jaxformer.models import Decoder, FamilyConfig, param_shapes
from jaxformer.models.common import lora
from jaxformer.train.optimizer import learning_rate_schedule, make_optimizer
from jaxformer.train.state import TrainState, create_state, state_shardings
from jaxformer.train.step import StepConfig, jit_train_step


@dataclasses.dataclass(frozen=True)
class TrainSetup:
  """Everything a train step needs, built once.

  abstract_state: the TrainState as ShapeDtypeStructs carrying their shardings (restore targets).
  state_shardings / batch_sharding: NamedShardings of the state and of a [batch, length] batch.
  train_step: jitted (state, batch) -> (state, metrics), state donated.
  """

  model_config: FamilyConfig
  step_config: StepConfig
  model: Decoder
  schedule: optax.Schedule
  optimizer: optax.GradientTransformation
  mesh: jax.sharding.Mesh
  rules: tuple
  abstract_state: TrainState
  state_shardings: TrainState
  batch_sharding: jax.sharding.NamedSharding
  train_step: object

  def init_state(self, rng, with_frozen: bool = True) -> TrainState:
    """A fresh, directly sharded state (with_frozen=False: a LoRA state without its base, to restore)."""
    return create_state(self.model, self.optimizer, self.mesh, self.rules, rng, self.state_shardings, with_frozen)

  def abstract_batch(self, batch_size: int, length: int) -> dict:
    """A batch of model features as sharded ShapeDtypeStructs (for lowering without data)."""
    shape = (batch_size, length)
    return {k: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=self.batch_sharding) for k in MODEL_FEATURE_NAMES}

  def global_batch(self, local: dict) -> dict:
    """This host's numpy rows -> global arrays sharded over (data, fsdp)."""
    return {k: jax.make_array_from_process_local_data(self.batch_sharding, v) for k, v in local.items()}


def build(
  model_config: FamilyConfig,
  step_config: StepConfig,
  total_steps: int,
  mesh: jax.sharding.Mesh | None = None,
  optimizer: optax.GradientTransformation | None = None,
  **schedule_overrides,
) -> TrainSetup:
  """Builds the train step for `total_steps` (the schedule's length) on `mesh` (default: the gin-bound
  sharding.make_mesh over every device). `optimizer` replaces the gin-bound AdamW (tests use SGD);
  `schedule_overrides` replace gin bindings of optimizer.learning_rate_schedule (bench warms up in 1 step)."""
  mesh = mesh if mesh is not None else sharding.make_mesh()
  rules = sharding.logical_axis_rules()
  if model_config.lora is not None:
    lora.check(model_config, param_shapes(model_config))
  model = model_config.module()
  schedule = learning_rate_schedule(total_steps=total_steps, **schedule_overrides)
  optimizer = optimizer if optimizer is not None else make_optimizer(schedule)
  abstract_state, state_shards = state_shardings(model, optimizer, mesh, rules)
  batch_sharding = sharding.logical_to_sharding(("batch", "length"), mesh, rules)
  step = jit_train_step(model, optimizer, schedule, step_config, state_shards, batch_sharding)
  return TrainSetup(
    model_config,
    step_config,
    model,
    schedule,
    optimizer,
    mesh,
    rules,
    abstract_state,
    state_shards,
    batch_sharding,
    step,
  )
