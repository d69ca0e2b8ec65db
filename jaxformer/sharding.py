"""The only place that maps logical axis names to mesh axes.

The mesh has axes (data, fsdp, tensor); its shape and the logical-axis-rules table come
from gin, e.g.

    sharding.make_mesh.mesh_shape = (1, -1, 1)   # -1: the rest of the devices
    sharding.logical_axis_rules.rules = [("batch", ("data", "fsdp")), ...]
"""

import contextlib
import math
from collections.abc import Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxformer.models import param_shapes

MESH_AXES = ("data", "fsdp", "tensor")

# Order matters: an axis used by an earlier rule is not reused in the same array
# (activations are [batch, length, embed]: batch takes fsdp, so embed stays whole).
DEFAULT_RULES = (
  ("batch", ("data", "fsdp")),
  ("vocab", "tensor"),
  ("heads", "tensor"),
  ("kv_heads", "tensor"),  # grouped-query key/value heads: split where the tensor axis divides them
  ("mlp", "tensor"),
  ("embed", "fsdp"),
  ("length", None),
  ("kv", None),
  ("qkv", None),
  ("layers", None),
)


@gin.configurable(module="sharding")
def logical_axis_rules(rules=DEFAULT_RULES):
  """The logical-to-mesh table (gin: sharding.logical_axis_rules.rules)."""
  checked = []
  for rule in rules:
    if len(rule) != 2:
      raise ValueError(f"sharding.logical_axis_rules.rules: {rule!r} is not a (logical, mesh) pair")
    logical, mesh_axes = rule
    for axis in mesh_axes if isinstance(mesh_axes, (tuple, list)) else [mesh_axes]:
      if axis is not None and axis not in MESH_AXES:
        raise ValueError(
          f"sharding.logical_axis_rules.rules: {rule!r} names mesh axis {axis!r}; mesh axes are {MESH_AXES}"
        )
    checked.append((logical, tuple(mesh_axes) if isinstance(mesh_axes, list) else mesh_axes))
  return tuple(checked)


def resolve_mesh_shape(mesh_shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Replaces one -1 by what is left of num_devices; checks the product."""
  shape = list(mesh_shape)
  if len(shape) != len(MESH_AXES):
    raise ValueError(
      f"sharding.make_mesh.mesh_shape={tuple(mesh_shape)} needs {len(MESH_AXES)} entries, one per axis {MESH_AXES}"
    )
  if shape.count(-1) > 1:
    raise ValueError(f"sharding.make_mesh.mesh_shape={tuple(mesh_shape)} has more than one -1")
  known = math.prod(d for d in shape if d != -1)
  if -1 in shape:
    if num_devices % known:
      raise ValueError(
        f"sharding.make_mesh.mesh_shape={tuple(mesh_shape)}: {num_devices} devices are not divisible by {known}"
      )
    shape[shape.index(-1)] = num_devices // known
  if math.prod(shape) != num_devices:
    raise ValueError(
      f"sharding.make_mesh.mesh_shape={tuple(mesh_shape)} covers {math.prod(shape)} devices but there are {num_devices}"
    )
  return tuple(shape)


@gin.configurable(module="sharding")
def make_mesh(
  mesh_shape: Sequence[int] = (1, -1, 1), devices=None, dcn_mesh_shape: Sequence[int] | None = None
) -> Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (default: all devices of all processes).

  Multi-slice (gin: sharding.make_mesh.dcn_mesh_shape = (2, 1, 1)): dcn_mesh_shape says how many
  slices each axis spans over the data-centre network, and mesh_shape is then the shape inside one
  slice (ICI). Slices are the devices' slice_index on TPU and processes elsewhere (so two hosts on
  127.0.0.1 stand in for two slices).
  """
  devices = jax.devices() if devices is None else list(devices)
  auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  dcn = tuple(dcn_mesh_shape) if dcn_mesh_shape is not None else (1,) * len(MESH_AXES)
  if len(dcn) != len(MESH_AXES) or any(d < 1 for d in dcn):
    raise ValueError(
      f"sharding.make_mesh.dcn_mesh_shape={dcn} needs {len(MESH_AXES)} positive entries, "
      f"one per axis {MESH_AXES} (no -1)"
    )
  num_slices = math.prod(dcn)
  if len(devices) % num_slices:
    raise ValueError(
      f"sharding.make_mesh.dcn_mesh_shape={dcn}: {len(devices)} devices do not split into {num_slices} slices"
    )
  ici = resolve_mesh_shape(mesh_shape, len(devices) // num_slices)
  if num_slices == 1:
    try:  # topology-aware order on TPU; a plain reshape elsewhere
      array = mesh_utils.create_device_mesh(ici, devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError):
      array = np.asarray(devices).reshape(ici)
    return Mesh(array, MESH_AXES, axis_types=auto)
  # CPU (and single-slice) devices all report slice 0 or none: processes stand in for slices there.
  by_process = len({getattr(d, "slice_index", None) for d in devices}) <= 1
  granules = {d.process_index if by_process else d.slice_index for d in devices}
  if len(granules) != num_slices:
    raise ValueError(
      f"sharding.make_mesh.dcn_mesh_shape={dcn} asks for {num_slices} slices but the devices "
      f"come from {len(granules)} {'processes' if by_process else 'slices'}"
    )
  array = mesh_utils.create_hybrid_device_mesh(
    ici, dcn, devices, process_is_granule=by_process, allow_split_physical_axes=True
  )
  return Mesh(array, MESH_AXES, axis_types=auto)


def logical_to_spec(logical_axes, rules) -> PartitionSpec:
  """('batch', 'length', 'embed') -> PartitionSpec(('data', 'fsdp'), None, None)."""
  return nn.logical_to_mesh_axes(logical_axes, rules)


def logical_to_sharding(logical_axes, mesh: Mesh, rules) -> NamedSharding:
  return NamedSharding(mesh, logical_to_spec(logical_axes, rules))


def fit_spec(spec: PartitionSpec, shape, mesh: Mesh) -> PartitionSpec:
  """Drops mesh axes from dimensions they do not divide (e.g. an odd vocabulary): replicate instead."""
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
    ways = math.prod(mesh.shape[a] for a in names)
    fitted.append(axes if dim % ways == 0 else None)
  return PartitionSpec(*fitted)


def tree_shardings(boxed_tree, mesh: Mesh, rules):
  """NamedShardings for a tree of nn.Partitioned (or plain) leaves; plain leaves replicate."""
  specs = nn.get_partition_spec(boxed_tree)
  shapes = jax.tree.map(
    lambda x: x.value.shape if hasattr(x, "value") else x.shape, boxed_tree, is_leaf=lambda x: hasattr(x, "value")
  )
  return jax.tree.map(
    lambda spec, shape: NamedSharding(mesh, fit_spec(nn.logical_to_mesh_axes(spec, rules), shape, mesh)),
    specs,
    shapes,
    is_leaf=lambda x: isinstance(x, PartitionSpec),
  )


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules):
  """Within this context the model's with_logical_constraint calls take effect."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def sharded_param_shapes(config, mesh: Mesh, rules):
  """(abstract params whose ShapeDtypeStructs carry their NamedShardings, the tree of shardings)."""
  boxed = param_shapes(config, boxed=True)
  shardings = tree_shardings(boxed, mesh, rules)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.unbox(boxed), shardings)
  return abstract, shardings
