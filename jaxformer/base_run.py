"""The run a fine-tune starts from: any jaxformer checkpoint (a `jaxformer import`, a pretraining run, a full
fine-tune), read and never written. A fine-tune's checkpoints record a pointer to it (folder, step and the
sha256 of the step's checksums.json, so the digest covers every file of it); a LoRA run holds only its
adapters, so it restores the base through the pointer and refuses a base whose digest changed.

    train.train.base = @train.FinetuneBase()
    train.FinetuneBase.model_dir = %BASE_DIR      # the base run's MODEL_DIR
    train.FinetuneBase.step = None                # its newest step
"""

import dataclasses
import hashlib
import json
import logging
import os

import gin
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from jaxformer import checkpoint, checkpoint_checks, fs, sharding
from jaxformer.errors import UserError
from jaxformer.models.common import lora

POINTER = "base.json"  # MODEL_DIR/base.json: the pointer, for people and for `sample`, `eval`, `export`


@gin.configurable(module="train")
@dataclasses.dataclass(frozen=True)
class FinetuneBase:
  """model_dir: the base run's MODEL_DIR (%BASE_DIR); step: its step to start from (None: the newest)."""

  model_dir: str = gin.REQUIRED
  step: int | None = None


def _steps(model_dir: str) -> list[int]:
  directory = os.path.join(model_dir, "checkpoints")
  if not fs.exists(directory):
    return []
  return sorted(int(name) for name in fs.listdir(directory) if name.isdigit())


def pointer(base: FinetuneBase) -> dict:
  """{"model_dir", "step", "sha256"} of the base (UserError naming the folder when it has no such step)."""
  model_dir = fs.resolve(base.model_dir)
  steps = _steps(model_dir)
  if not steps:
    raise UserError(f"train.FinetuneBase.model_dir={base.model_dir}: {model_dir}/checkpoints holds no checkpoint")
  step = steps[-1] if base.step is None else base.step
  if step not in steps:
    raise UserError(f"train.FinetuneBase.step={base.step}: {model_dir}/checkpoints has steps {steps}")
  return {"model_dir": model_dir, "step": step, "sha256": digest(model_dir, step)}


def digest(model_dir: str, step: int) -> str:
  """sha256 of the step's checksums.json (which lists every file's sha256); UserError if it is unsealed."""
  path = os.path.join(model_dir, "checkpoints", str(step), checkpoint_checks.CHECKSUMS)
  if not fs.exists(path):
    raise UserError(f"{path} is missing: the base step is not sealed (was its run interrupted while saving?)")
  with fs.open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def check_unchanged(recorded: dict, where: str) -> None:
  """UserError when the base a run recorded is gone or differs now (a LoRA run's adapters fit only it)."""
  step_dir = os.path.join(recorded["model_dir"], "checkpoints", str(recorded["step"]))
  now = digest(recorded["model_dir"], recorded["step"]) if fs.exists(step_dir) else None
  if now != recorded["sha256"]:
    state = "is gone" if now is None else f"has sha256 {now[:12]} now"
    raise UserError(
      f"{where} holds adapters of the base {recorded['model_dir']} step {recorded['step']} (sha256 "
      f"{recorded['sha256'][:12]}), which {state}: restore that base, or fine-tune again into a new MODEL_DIR"
    )


def step_meta(model_dir: str, step: int) -> dict | None:
  """The settings a run's checkpoint step was saved with (its meta item), or None."""
  path = os.path.join(model_dir, "checkpoints", str(step), "meta", "metadata")
  if not fs.exists(path):
    return None
  with fs.open(path) as f:
    return json.load(f)


def _check_layout(config, recorded: dict, abstract_base: dict) -> None:
  """UserError naming the base and the run's model when the base holds another family or other shapes."""
  model_dir, step = recorded["model_dir"], recorded["step"]
  meta = step_meta(model_dir, step) or {}
  where = f"train.FinetuneBase.model_dir={model_dir} (step {step})"
  if meta.get("family") and meta["family"] != config.family:
    raise UserError(f"{where} is a {meta['family']} model; this run's {config.gin_name} is a {config.family} model")
  if (meta.get("model") or {}).get("lora"):
    raise UserError(f"{where} is itself a LoRA run (adapters only): `jaxformer export --merge` it and import that")
  absl = logging.getLogger("absl")
  level = absl.level
  absl.setLevel(logging.ERROR)  # orbax warns that a file of its newer layouts is absent, and reads on
  try:
    saved = ocp.PyTreeCheckpointer().metadata(os.path.join(model_dir, "checkpoints", str(step), "state"))
  finally:
    absl.setLevel(level)
  tree = getattr(getattr(saved, "item_metadata", None), "tree", None) or {}
  shapes = lambda t: {jax.tree_util.keystr(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(t)[0]}
  have, want = shapes(tree.get("params", {})), shapes(abstract_base)
  if have != want:
    missing = sorted(set(want) - set(have))[:3]
    differ = sorted(k for k in set(want) & set(have) if want[k] != have[k])[:3]
    detail = "; ".join(
      part
      for part in (
        f"it lacks {missing}" if missing else "",
        ", ".join(f"{k} is {have[k]}, the run's {want[k]}" for k in differ),
      )
      if part
    )
    raise UserError(f"{where} holds another model than this run's {config.gin_name} ({detail or 'other leaves'})")


def restore(config, base: FinetuneBase | dict, mesh, rules):
  """(base parameters sharded for the run, pointer). With LoRA the parameters are the frozen base (every leaf
  but the adapters) in the compute dtype; without, the whole tree in param_dtype. base: a FinetuneBase, or a
  recorded pointer (resume), which must still match its digest."""
  recorded = base if isinstance(base, dict) else pointer(base)
  abstract, _ = sharding.sharded_param_shapes(config, mesh, rules)
  if config.lora is not None:
    abstract = lora.split(abstract)[1]
  _check_layout(config, recorded, abstract)
  params, _ = checkpoint.restore_params(recorded["model_dir"], abstract, recorded["step"])
  if config.lora is not None:
    dtype = jnp.dtype(config.dtype)
    params = jax.jit(lambda p: jax.tree.map(lambda x: x.astype(dtype), p))(params)
  return params, recorded


def write_pointer(model_dir: str, recorded: dict, lora_config) -> None:
  record = dict(recorded, lora=dataclasses.asdict(lora_config) if lora_config is not None else None)
  fs.write(os.path.join(model_dir, POINTER), json.dumps(record, indent=1) + "\n")


def read_pointer(model_dir: str) -> dict | None:
  path = os.path.join(model_dir, POINTER)
  if not fs.exists(path):
    return None
  with fs.open(path) as f:
    return json.load(f)
