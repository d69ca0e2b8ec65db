"""How a family's HF layout is written down: one Leaf per parameter of ours, naming the HF tensor(s) it
becomes and the two conversions (numpy only). Scanned layers are stacked on a leading axis: one of our
leaves is `num_layers` HF tensors ('{i}' in the name stands for the layer)."""

import dataclasses
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Leaf:
  """One of our parameter leaves and the HF tensor(s) it becomes."""

  path: tuple[str, ...]
  hf_name: str  # '{i}' stands for the layer index in stacked leaves
  to_hf: Callable  # (our array of one layer, config, options) -> HF array
  from_hf: Callable  # (HF array, config, options) -> our array of one layer

  @property
  def per_layer(self) -> bool:
    return self.path[0] == "layers"


same = lambda x, c, o: x
transpose = lambda x, c, o: x.T


def hf_tensors(leaf: Leaf, value: np.ndarray, config, options: dict):
  """Yields (HF name, HF array) for one of our leaves (stacked: one per layer)."""
  if leaf.per_layer:
    for i in range(value.shape[0]):
      yield leaf.hf_name.format(i=i), np.ascontiguousarray(leaf.to_hf(value[i], config, options))
  else:
    yield leaf.hf_name, np.ascontiguousarray(leaf.to_hf(value, config, options))


def our_leaf(leaf: Leaf, get, config, options: dict) -> np.ndarray:
  """One of our leaves from HF tensors; get(name) returns a numpy array."""
  if leaf.per_layer:
    return np.stack([leaf.from_hf(get(leaf.hf_name.format(i=i)), config, options) for i in range(config.num_layers)])
  return leaf.from_hf(get(leaf.hf_name), config, options)


def set_path(tree: dict, path: tuple[str, ...], value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def get_path(tree, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


def required_ints(hf: dict, keys, source: str, family: str) -> None:
  missing = [k for k in keys if isinstance(hf.get(k), bool) or not isinstance(hf.get(k), int)]
  if missing:
    raise ValueError(f"{source}: no integer {', '.join(missing)}; is this a {family} config.json?")
