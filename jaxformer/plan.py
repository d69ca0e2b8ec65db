"""Sizes and costs of a model config, computed without allocating it.

FLOPs per trained token, two labelled accountings (DESIGN.md, Measures):
  6N:                 6 x matmul parameters (QKV, out, MLP, LM head; no embeddings, biases, norms).
  6N + attention:     plus attention scores and values, 12 * layers * length * d_model per token
                      for forward+backward, halved for the causal mask.
"""

import dataclasses
import math
import os
import re
import time

import gin
import jax
import jax.numpy as jnp

from jaxformer.model import ModelConfig, Transformer

ADAM_STATE_PER_PARAM = 2  # mu and nu, float32 like the parameters.


def param_shapes(config: ModelConfig, length: int = 8):
  """The parameter tree as ShapeDtypeStructs (jax.eval_shape: no memory used)."""
  model = Transformer(config)
  tokens = jnp.zeros((1, length), jnp.int32)
  variables = jax.eval_shape(lambda key: model.init(key, tokens), jax.random.key(0))
  return jax.tree.map(
    lambda x: x.value if hasattr(x, "value") else x, variables["params"], is_leaf=lambda x: hasattr(x, "value")
  )


def count_params(config: ModelConfig) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(param_shapes(config)))


def matmul_params(config: ModelConfig) -> int:
  d, layers = config.d_model, config.num_layers
  per_layer = 3 * d * d + d * d + 2 * d * config.mlp_dim
  return layers * per_layer + d * config.vocab_size


def flops_per_token(config: ModelConfig, length: int) -> dict:
  six_n = 6 * matmul_params(config)
  # QK^T and AV: 2 matmuls x 2 FLOPs x length x d_model per layer forward, x3 for backward,
  # halved because a causal mask skips the upper triangle.
  attention = 12 * config.num_layers * length * config.d_model // 2
  return {"flops_per_token_6n": six_n, "flops_per_token_with_attention": six_n + attention}


@gin.configurable(module="plan")
def plan_report(length: int | None = None) -> dict:
  """Everything `jaxformer plan` prints, for the gin-bound ModelConfig.

  Args:
    length: training sequence length for the attention FLOPs (default ModelConfig.max_length).
  """
  config = ModelConfig()
  length = length or config.max_length
  params = count_params(config)
  param_bytes = params * jnp.dtype(config.param_dtype).itemsize
  return {
    "model": dataclasses.asdict(config),
    "params": params,
    "matmul_params": matmul_params(config),
    "sequence_length": length,
    **flops_per_token(config, length),
    "param_bytes": param_bytes,
    "adam_state_bytes": ADAM_STATE_PER_PARAM * param_bytes,
    "train_state_bytes": (1 + ADAM_STATE_PER_PARAM) * param_bytes,
  }


# --- ahead-of-time compilation for a TPU topology (libtpu on any machine) -------------------

GIB = 2**30
# family: (topology prefix, cores per chip in the accelerator name, HBM bytes per JAX device, megacore)
TPU_FAMILIES = {
  "v4": ("v4", 2, 32 * GIB, True),
  "v5p": ("v5p", 2, 95 * GIB, True),
  "v5litepod": ("v5e", 1, 16 * GIB, False),
  "v5e": ("v5e", 1, 16 * GIB, False),
  "v6e": ("v6e", 1, 32 * GIB, False),
}
# chips -> physical shape of one slice
SHAPES_3D = {
  4: "2x2x1",
  8: "2x2x2",
  16: "2x2x4",
  32: "2x4x4",
  64: "4x4x4",
  128: "4x4x8",
  256: "4x8x8",
  512: "8x8x8",
  1024: "8x8x16",
  2048: "8x16x16",
  4096: "16x16x16",
}
SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}


def parse_topology(topology: str) -> dict:
  """'v4-256' (the accelerator type gcloud takes) or 'v4:4x4x8' -> {name, chips, hbm_bytes, megacore, family}.

  Raises ValueError naming the known forms.
  """
  family, sep, size = topology.replace(":", "-", 1).partition("-")
  if family not in TPU_FAMILIES or not sep:
    raise ValueError(
      f"topology {topology!r}: use an accelerator type such as v4-32, v5p-64, v5litepod-16, "
      f"v6e-16, or family:shape such as v4:2x2x4 (families: {sorted(TPU_FAMILIES)})"
    )
  prefix, cores_per_chip, hbm, megacore = TPU_FAMILIES[family]
  if "x" in size:
    shape = size
    chips = math.prod(int(d) for d in shape.split("x"))
  else:
    chips = int(size) // cores_per_chip
    shapes = SHAPES_3D if prefix in ("v4", "v5p") else SHAPES_2D
    if chips not in shapes:
      raise ValueError(
        f"topology {topology!r}: {chips} chips is not a slice size; known: "
        + ", ".join(f"{family}-{c * cores_per_chip}" for c in shapes)
      )
    shape = shapes[chips]
  return {"name": f"{prefix}:{shape}", "chips": chips, "hbm_bytes": hbm, "megacore": megacore, "family": prefix}


def topology_devices(topology: str, num_slices: int = 1):
  """Compile-only TPU devices of `num_slices` slices of `topology` (needs libtpu: the tpu extra)."""
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v4-8")  # quiets libtpu's probing on machines without TPUs
  # Compiling touches no TPU, so several planning processes may load libtpu at once (otherwise the
  # second fails on /tmp/libtpu_lockfile).
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")  # else libtpu logs an error line about it
  from jax.experimental import topologies

  info = parse_topology(topology)
  kwargs = {"chip_config_name": "megacore"} if info["megacore"] else {}
  if num_slices > 1:
    kwargs["num_slices"] = num_slices
  try:
    return topologies.get_topology_desc(info["name"], "tpu", **kwargs).devices, info
  except Exception as e:  # libtpu missing or the shape refused
    raise ValueError(
      f"topology {topology!r} ({info['name']}): libtpu could not describe it ({e}); "
      "is the tpu extra installed (pip install -e '.[tpu]')?"
    ) from e


@gin.configurable(module="plan")
def tpu_plan(topology: str | None = None, num_slices: int = 1, assumed_mfu: float = 0.4) -> dict:
  """Compiles the run's real train step for a TPU topology ahead of time; reports per-device memory
  against HBM, XLA's FLOPs, and the step time predicted at assumed_mfu.

  Uses the gin-bound ModelConfig, DataConfig (batch, length), StepConfig (microbatches), optimizer
  and mesh (sharding.make_mesh, including dcn_mesh_shape for several slices): the same objects
  `jaxformer train` builds.
  Args (gin: plan.tpu_plan.*, which a run gin may bind):
    topology: an accelerator type (v4-256) or family:shape (v4:4x4x8).
    num_slices: slices joined over DCN (bind sharding.make_mesh.dcn_mesh_shape to match).
    assumed_mfu: the MFU the predicted step time assumes (6N + attention accounting).
  """
  from jaxformer import sharding
  from jaxformer.data import pipeline
  from jaxformer.data.features import MODEL_FEATURE_NAMES
  from jaxformer.train import mfu as mfu_lib
  from jaxformer.train.optimizer import learning_rate_schedule, make_optimizer
  from jaxformer.train.state import state_shardings
  from jaxformer.train.step import StepConfig, jit_train_step

  if not topology:
    raise ValueError("no TPU topology: pass --topology=v4-32 or bind plan.tpu_plan.topology in the run gin")
  devices, info = topology_devices(topology, num_slices)
  model_config, data_config, step_config = ModelConfig(), pipeline.DataConfig(), StepConfig()
  mesh = sharding.make_mesh(devices=devices)
  rules = sharding.logical_axis_rules()
  batch_ways = mesh.shape["data"] * mesh.shape["fsdp"]
  if data_config.batch_size % (batch_ways * step_config.microbatches):
    raise ValueError(
      f"BATCH_SIZE={data_config.batch_size} must divide by data x fsdp = {batch_ways} devices "
      f"times train.StepConfig.microbatches={step_config.microbatches}"
    )
  model = Transformer(model_config)
  schedule = learning_rate_schedule(total_steps=10**9)  # its length changes no shape, memory or FLOP
  optimizer = make_optimizer(schedule)
  abstract_state, state_shards = state_shardings(model, optimizer, mesh, rules)
  batch_sharding = sharding.logical_to_sharding(("batch", "length"), mesh, rules)
  shape = (data_config.batch_size, data_config.length)
  batch = {k: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=batch_sharding) for k in MODEL_FEATURE_NAMES}
  step = jit_train_step(model, optimizer, schedule, step_config, state_shards, batch_sharding)
  started = time.perf_counter()
  with sharding.activation_sharding(mesh, rules):
    lowered = step.lower(abstract_state, batch)
    try:
      m = lowered.compile().memory_analysis()
      memory = {
        "arguments": m.argument_size_in_bytes,
        "outputs": m.output_size_in_bytes,
        "aliased": m.alias_size_in_bytes,
        "temporaries": m.temp_size_in_bytes,
        "generated_code": m.generated_code_size_in_bytes,
      }
      memory["total"] = (
        memory["arguments"] + memory["outputs"] - memory["aliased"] + memory["temporaries"] + memory["generated_code"]
      )
    except jax.errors.JaxRuntimeError as e:
      memory = _out_of_memory(e, (abstract_state, batch))
  compile_seconds = time.perf_counter() - started
  xla_flops = _unrolled_step_flops(model_config, optimizer, schedule, step_config, rules, shape)
  tokens = data_config.batch_size * data_config.length
  flops = flops_per_token(model_config, data_config.length)
  peak = mfu_lib.peak_flops(devices[0].device_kind) or float("nan")
  chips = info["chips"] * num_slices
  model_flops = flops["flops_per_token_with_attention"] * tokens
  return {
    "topology": topology,
    "libtpu_topology": info["name"],
    "num_slices": num_slices,
    "devices": len(devices),
    "device_kind": devices[0].device_kind,
    "mesh": dict(mesh.shape),
    "batch_size": data_config.batch_size,
    "sequence_length": data_config.length,
    "microbatches": step_config.microbatches,
    "remat_policy": model_config.remat_policy,
    "params": count_params(model_config),
    "memory_per_device": memory,
    "hbm_per_device": info["hbm_bytes"],
    "fits": memory["total"] <= info["hbm_bytes"],
    "memory_fraction": memory["total"] / info["hbm_bytes"],
    "xla_flops_per_step": xla_flops,
    "model_flops_per_step_6n": flops["flops_per_token_6n"] * tokens,
    "model_flops_per_step_6n_attention": model_flops,
    "assumed_mfu": assumed_mfu,
    "predicted_step_seconds": model_flops / (chips * peak * assumed_mfu),
    "predicted_tokens_per_second": tokens / (model_flops / (chips * peak * assumed_mfu)),
    "compile_seconds": compile_seconds,
  }


def _out_of_memory(error, arguments) -> dict:
  """The memory report of a step the TPU compiler refused for want of HBM: its figure for the
  temporaries, plus each device's shard of the arguments (state and batch)."""
  found = re.search(r"HLO temporaries \(([\d.]+)([KMGT])\)", str(error))
  if "RESOURCE_EXHAUSTED" not in str(error) or not found:
    raise error
  temporaries = float(found.group(1)) * 1024 ** ("KMGT".index(found.group(2)) + 1)
  argument_bytes = sum(
    math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(arguments)
  )
  return {
    "arguments": argument_bytes,
    "outputs": None,
    "aliased": None,
    "temporaries": int(temporaries),
    "generated_code": None,
    "total": int(argument_bytes + temporaries),
    "compiler": str(error).splitlines()[0][:300],
  }


def _unrolled_step_flops(model_config, optimizer, schedule, step_config, rules, batch_shape) -> float:
  """XLA's FLOP count of one whole train step (the global program, remat recompute included).

  Counted on the lowered, unpartitioned step of the same model with its layers unrolled and one
  microbatch, on one CPU device: XLA's cost analysis counts a while loop's body once (the scanned
  program would show one layer), and compile-only TPU devices give no cost for a lowered program.
  """
  from jaxformer import sharding
  from jaxformer.data.features import MODEL_FEATURE_NAMES
  from jaxformer.train.state import state_shardings
  from jaxformer.train.step import make_train_step

  model = Transformer(dataclasses.replace(model_config, scan_layers=False))
  mesh = sharding.make_mesh((1, 1, 1), devices=jax.devices("cpu")[:1], dcn_mesh_shape=(1, 1, 1))
  abstract_state, _ = state_shardings(model, optimizer, mesh, rules)
  abstract_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract_state)
  batch = {k: jax.ShapeDtypeStruct(batch_shape, jnp.int32) for k in MODEL_FEATURE_NAMES}
  # One microbatch: the same FLOPs, without the accumulation loop whose body would count once.
  step = jax.jit(make_train_step(model, optimizer, schedule, dataclasses.replace(step_config, microbatches=1)))
  with sharding.activation_sharding(mesh, rules):
    cost = step.lower(abstract_state, batch).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])
