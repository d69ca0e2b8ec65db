"""Low-rank adapters (LoRA, Hu et al. 2021) on a family's projections, and the parameter-tree operations on them.

A target projection (a Dense named in LoraConfig.targets: 'q', 'k', 'v', 'o', 'gate', 'up', 'down' in the
Llama family; 'qkv', 'out', 'fc_in', 'fc_out' in CodeGen) gains two parameters beside its kernel:

    lora_a  [*in, rank]   uniform in +-1/sqrt(fan_in) (PEFT's kaiming_uniform(a=sqrt(5)))
    lora_b  [rank, *out]  zeros, so the first forward equals the base model's exactly

and computes y = x @ kernel + (alpha / rank) * (dropout(x) @ lora_a) @ lora_b. lora_a keeps the kernel's input
axes and lora_b its output axes, so the adapters are sharded by the same logical rules; the rank axis is whole.
`merge` folds them into the kernels (kernel + alpha / rank * lora_a @ lora_b), which is what export writes.
"""

import dataclasses
import math

import gin
import jax
import jax.numpy as jnp
import numpy as np

ADAPTER_NAMES = ("lora_a", "lora_b")


@gin.configurable(module="models")
@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """targets: projection names of the family ('q', 'qkv', ...), or 'attention' / 'mlp' for every projection
  of that part of the layer (the default: all of them, as QLoRA found best); rank, alpha: the update is
  (alpha / rank) * A @ B, as PEFT scales it; dropout: on the adapters' input, while training only."""

  targets: tuple = ("attention", "mlp")
  rank: int = 8
  alpha: float = 16.0
  dropout: float = 0.0

  def __post_init__(self):
    object.__setattr__(self, "targets", tuple(self.targets))
    if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
      raise ValueError(f"models.LoraConfig.rank={self.rank!r} must be a positive integer")
    if not 0 <= self.dropout < 1:
      raise ValueError(f"models.LoraConfig.dropout={self.dropout!r} must be in [0, 1)")
    if not self.targets:
      raise ValueError("models.LoraConfig.targets is empty: name the projections to adapt")

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


def as_lora_config(value) -> LoraConfig | None:
  """A LoraConfig from itself or from its dataclasses.asdict (a checkpoint's saved settings)."""
  return LoraConfig(**value) if isinstance(value, dict) else value


GROUPS = ("attention", "mlp")  # the sub-modules every family's layer has


def targeted(config, name: str | None, parent: str | None) -> bool:
  """Whether the projection `name` inside the sub-module `parent` gets adapters."""
  return config is not None and (name in config.targets or (parent in GROUPS and parent in config.targets))


def adapter_init(fan_in: int):
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def is_adapter_path(path) -> bool:
  return bool(path) and str(getattr(path[-1], "key", path[-1])) in ADAPTER_NAMES


def _filter(tree: dict, keep) -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      sub = _filter(value, keep)
      if sub:
        out[key] = sub
    elif keep(key):
      out[key] = value
  return out


def split(params: dict) -> tuple[dict, dict]:
  """(adapters, base): the lora_a / lora_b leaves, and every other leaf (nested dicts as in params)."""
  params = _plain(params)
  return _filter(params, lambda k: k in ADAPTER_NAMES), _filter(params, lambda k: k not in ADAPTER_NAMES)


def combine(base: dict, adapters: dict) -> dict:
  """The model's whole tree from its base and its adapters (split's inverse)."""
  out = dict(base)
  for key, value in adapters.items():
    out[key] = combine(out.get(key, {}), value) if isinstance(value, dict) else value
  return out


def _plain(tree):
  """Flax FrozenDicts and other mappings as plain nested dicts."""
  if hasattr(tree, "items"):
    return {k: _plain(v) for k, v in tree.items()}
  return tree


def delta(lora_a, lora_b, kernel_ndim: int, scale: float, xp=jnp):
  """scale * lora_a @ lora_b shaped as the kernel ([*in, *out], with a leading layer axis when stacked)."""
  stacked = lora_a.ndim + lora_b.ndim - 2 - kernel_ndim  # 1 with a leading layer axis
  lead = lora_a.shape[:stacked]
  a = lora_a.reshape(lead + (-1, lora_a.shape[-1]))
  b = lora_b.reshape(lead + (lora_b.shape[stacked], -1))
  product = xp.matmul(a.astype(xp.float32), b.astype(xp.float32)) * scale
  return product.reshape(lead + lora_a.shape[stacked:-1] + lora_b.shape[stacked + 1 :])


def merge(params: dict, config: LoraConfig, xp=jnp) -> dict:
  """The plain model's parameters: every adapted kernel becomes kernel + scale * lora_a @ lora_b (float32
  sum, cast back to the kernel's dtype) and the adapters go. xp: jnp, or numpy for host arrays (export)."""
  params = _plain(params)
  out = {}
  for key, value in params.items():
    if isinstance(value, dict) and "lora_a" in value:
      merged = {k: v for k, v in value.items() if k not in ADAPTER_NAMES}
      kernel = value["kernel"]
      update = delta(value["lora_a"], value["lora_b"], kernel.ndim, config.scale, xp)
      merged["kernel"] = (kernel.astype(xp.float32) + update).astype(kernel.dtype)
      out[key] = merged
    elif isinstance(value, dict):
      out[key] = merge(value, config, xp)
    else:
      out[key] = value
  return out


def target_names(base_shapes: dict) -> set:
  """The projections a family's layers have (every module with a kernel under layers/ or layers_0/)."""
  names = set()

  def walk(tree, name):
    for key, value in tree.items():
      if isinstance(value, dict):
        walk(value, key)
      elif key == "kernel":
        names.add(name)

  layers = base_shapes.get("layers") or base_shapes.get("layers_0") or {}
  walk(_plain(layers), "")
  return names


def check(config, shapes: dict) -> None:
  """Raises ValueError naming the binding when a target names no projection of the family, or the rank is
  above a target's smaller dimension. shapes: param_shapes(config)."""
  lora = config.lora
  known = target_names(split(shapes)[1]) | set(GROUPS)
  unknown = [t for t in lora.targets if t not in known]
  if unknown:
    raise ValueError(
      f"models.LoraConfig.targets={list(lora.targets)}: {unknown} name no projection of the {config.family} "
      f"family; its projections are {sorted(known)}"
    )
  stacked = 1 if config.scan_layers else 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    key = str(getattr(path[-1], "key", ""))
    if key == "lora_a":
      fan_in = int(np.prod(leaf.shape[stacked:-1]))
      name = str(getattr(path[-2], "key", ""))
      b = _get(shapes, [str(getattr(p, "key", p)) for p in path[:-1]] + ["lora_b"])
      fan_out = int(np.prod(b.shape[stacked + 1 :]))
      if lora.rank > min(fan_in, fan_out):
        raise ValueError(
          f"models.LoraConfig.rank={lora.rank} is above the {name} projection's dimensions "
          f"({fan_in} in, {fan_out} out); lower the rank to at most {min(fan_in, fan_out)}"
        )


def _get(tree, keys):
  for key in keys:
    tree = tree[key]
  return tree
