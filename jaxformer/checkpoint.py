"""Checkpoints: orbax CheckpointManager holding the train state and every host's data-iterator
position, committed together. Low in the house so infer/ and export/ read checkpoints without
importing train/.

Layout (orbax):  MODEL_DIR/checkpoints/<step>/state/...            sharded arrays (OCDBT)
                 MODEL_DIR/checkpoints/<step>/data/process_<i>.*   tf.data iterator of host i
                 MODEL_DIR/checkpoints/<step>/meta/                the run's settings (JSON)
                 MODEL_DIR/checkpoints/<step>/checksums.json       every file's sha256 (checkpoint_checks.py)
An interrupted save leaves only `<step>.orbax-checkpoint-tmp*`, which restore ignores. Restore walks back from
the newest step to the newest one that verifies, reads and holds only finite numbers.
"""

import dataclasses
import logging
import os
import time
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from jaxformer import checkpoint_checks, errors, fs

log = logging.getLogger("jaxformer")


class DataIteratorHandler(ocp.CheckpointHandler):
  """Saves each process's data iterator (an object with save(prefix)/restore(prefix)) into the
  item directory, one file set per process, so hosts keep their own positions."""

  def save(self, directory: epath.Path, args: "DataIteratorSave"):
    directory.mkdir(parents=True, exist_ok=True)
    args.iterator.save(os.fspath(directory / f"process_{jax.process_index()}"))

  def restore(self, directory: epath.Path, args: "DataIteratorRestore"):
    prefix = directory / f"process_{jax.process_index()}"
    if not list(directory.glob(f"process_{jax.process_index()}*")):
      raise FileNotFoundError(
        f"{directory} holds no data-iterator position for process {jax.process_index()}; "
        "was the checkpoint written by a run with fewer hosts?"
      )
    args.iterator.restore(os.fspath(prefix))
    return args.iterator

  def close(self):
    pass


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
@dataclasses.dataclass
class DataIteratorSave(ocp.args.CheckpointArgs):
  iterator: Any


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DataIteratorRestore(ocp.args.CheckpointArgs):
  iterator: Any


@gin.configurable(module="checkpoint")
def make_manager(
  model_dir: str, checkpoint_period: int = 1000, keep: int = 3, keep_period: int | None = None, async_save: bool = True
) -> ocp.CheckpointManager:
  """The run's CheckpointManager.

  Args (gin: checkpoint.make_manager.*):
    checkpoint_period: save every this many steps (%CHECKPOINT_PERIOD); the final step and a
      preemption step are saved too.
    keep: how many recent checkpoints stay; keep_period: also keep every step divisible by it.
  """
  errors.require_int("checkpoint.make_manager.checkpoint_period (CHECKPOINT_PERIOD)", checkpoint_period, 1)
  errors.require_int("checkpoint.make_manager.keep", keep, 1)
  errors.require_int("checkpoint.make_manager.keep_period", keep_period, 1, allow_none=True)
  policies = ocp.checkpoint_managers
  options = ocp.CheckpointManagerOptions(
    # Exactly every period (orbax's default also saves the first step it sees) and at preemption.
    save_decision_policy=policies.AnySavePolicy(
      [policies.FixedIntervalPolicy(checkpoint_period), policies.PreemptionCheckpointingPolicy()]
    ),
    max_to_keep=keep,
    keep_period=keep_period,
    enable_async_checkpointing=async_save,
    create=True,
  )
  return ocp.CheckpointManager(os.path.join(model_dir, "checkpoints"), options=options, item_names=ITEMS)


ITEMS = ("state", "data", "meta")


def save(manager: ocp.CheckpointManager, step: int, state, iterator=None, force: bool = False, meta=None) -> bool:
  """Saves when the policy says so (period, preemption) or when forced; returns whether it did.

  meta: the run's settings (JSON-able), which a resuming run is checked against. The steps committed
  before this one get their checksums first (an async save is committed when the next one starts).
  """
  if not (force or manager.should_save(step)):
    return False
  seal(manager)
  if getattr(state, "frozen", None) is not None:  # a LoRA base is the base run's: never saved here
    state = state.replace(frozen=None)
  items = {"state": ocp.args.StandardSave(state)}
  if iterator is not None:
    items["data"] = DataIteratorSave(iterator)
  if meta is not None:
    items["meta"] = ocp.args.JsonSave(meta)
  return manager.save(step, args=ocp.args.Composite(**items), force=force)


def seal(manager: ocp.CheckpointManager) -> None:
  """Waits for a save in flight, then writes the checksums of every committed step that lacks them
  (process 0; the others wait for it, so no host resumes from a step not yet sealed)."""
  manager.wait_until_finished()
  if jax.process_index() == 0:
    checkpoint_checks.seal(manager.directory, manager.all_steps())


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict | None:
  """The settings a step was saved with, or None (an import, or a checkpoint older than them)."""
  if not (epath.Path(manager.directory) / str(step) / "meta").exists():
    return None
  return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta


def restore(manager: ocp.CheckpointManager, step: int, abstract_state, iterator=None):
  """Restores the state at `step` onto the shardings in abstract_state (and the iterator, if given)."""
  items = {"state": ocp.args.StandardRestore(abstract_state)}
  if iterator is not None:
    items["data"] = DataIteratorRestore(iterator)
  return manager.restore(step, args=ocp.args.Composite(**items)).state


def restore_newest_readable(manager: ocp.CheckpointManager, abstract_state, iterator=None, check_meta=None):
  """Restores the newest step that verifies, reads and is finite; returns (state, step).

  A newer step that fails (a file whose checksum differs, a truncated or missing file, a lost item, NaN or
  Inf in the state) is logged with the reason and moved aside to MODEL_DIR/checkpoints_unreadable/<step>-
  <time> (renamed, never deleted), so the run resumes from the step before it and never saves over the
  good ones with a bad state. When no step restores, nothing is moved and UserError names each step's
  reason. check_meta(step, saved settings or None) may raise UserError for a setting that changed (a
  changed model or batch fails every step alike: that is not damage).
  """
  failures = []
  for step in sorted(manager.all_steps(), reverse=True):
    problem = _verified(manager, step)
    if problem is None:
      if check_meta is not None:
        check_meta(step, _quiet_read_meta(manager, step))  # a changed setting is the user's to fix: raised
      try:
        state = restore(manager, step, abstract_state, iterator)
      except Exception as e:  # orbax and TensorStore raise many types for damaged files
        problem = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
      else:
        if not _all_finite(state):
          problem = "it holds NaN or Inf (a damaged file, or a state the run never had)"
    if problem is not None:
      failures.append((step, problem))
      continue
    for bad, reason in failures:
      _move_aside(manager, bad, reason)
    if failures:
      manager.reload()
    return state, step
  raise errors.UserError(
    f"no checkpoint step in {manager.directory} can be restored: "
    + "; ".join(f"step {step}: {reason}" for step, reason in failures)
    + ". Nothing was moved; remove them (or the whole MODEL_DIR) to start over"
  )


def _verified(manager, step: int) -> str | None:
  """checkpoint_checks.verify on process 0, its answer shared with every process."""
  problem = checkpoint_checks.verify(manager.directory, step) if jax.process_index() == 0 else None
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    bad = multihost_utils.broadcast_one_to_all(np.int32(problem is not None))
    if bad and problem is None:
      problem = "its checksums do not match (seen by process 0)"
  return problem


def _quiet_read_meta(manager, step: int) -> dict | None:
  try:
    return read_meta(manager, step)
  except Exception:  # a damaged meta item: restore then fails on it and names it
    return None


def _all_finite(state) -> bool:
  leaves = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.inexact)]
  finite = jax.jit(lambda xs: jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in xs])))(leaves)
  return bool(jax.device_get(finite))


def _move_aside(manager: ocp.CheckpointManager, step: int, reason: str) -> None:
  checkpoints = str(manager.directory)
  aside = os.path.join(os.path.dirname(checkpoints.rstrip("/")), "checkpoints_unreadable")
  target = os.path.join(aside, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
  if jax.process_index() == 0:
    fs.makedirs(aside)
    fs.rename(os.path.join(checkpoints, str(step)), target)
  log.warning("checkpoint step %d does not read (%s); moved aside to %s", step, reason, target)


def holds_only_params(manager: ocp.CheckpointManager, step: int) -> bool:
  """True for a checkpoint written by `jaxformer import`: parameters only, no optimizer state and
  no data position (a `jaxformer train` checkpoint always has its `data` item)."""
  return not (epath.Path(manager.directory) / str(step) / "data").exists()


def find_vocabulary(model_dir: str) -> str | None:
  """MODEL_DIR/vocabulary/spm.model or tokenizer.json, as `train` and `import` leave it."""
  for name in ("spm.model", "tokenizer.json"):
    path = os.path.join(model_dir, "vocabulary", name)
    if fs.exists(path):
      return path
  return None


def restore_params(
  model_dir: str, abstract_params, step: int | None = None, as_numpy: bool = False, verify: bool = True
):
  """Only the parameters of a run's checkpoint (for sampling, eval and export); as_numpy gives
  host numpy arrays without an intermediate device copy. verify: check the step's checksums first.

  Raises FileNotFoundError naming the directory, or ValueError naming a missing or damaged step.
  """
  directory = os.path.join(model_dir, "checkpoints")
  manager = ocp.CheckpointManager(directory, item_names=ITEMS)
  steps = manager.all_steps()
  if not steps:
    raise FileNotFoundError(f"no checkpoint in {directory}; train with `jaxformer train` first")
  step = steps[-1] if step is None else step
  if step not in steps:
    raise ValueError(f"--step={step}: {directory} has steps {sorted(steps)}")
  problem = checkpoint_checks.verify(directory, step) if verify else None
  if problem:
    others = sorted(s for s in steps if s != step)
    raise ValueError(f"checkpoint step {step} of {directory} is damaged: {problem}; choose another --step ({others})")
  restored = manager.restore(
    step,
    args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(
        item={"params": abstract_params},
        restore_args=jax.tree.map(
          lambda x: (
            ocp.RestoreArgs(restore_type=np.ndarray, dtype=x.dtype)
            if as_numpy
            else ocp.ArrayRestoreArgs(sharding=x.sharding, dtype=x.dtype)
          ),
          {"params": abstract_params},
        ),
        partial_restore=True,
      )
    ),
  )
  manager.close()
  return restored.state["params"], step
