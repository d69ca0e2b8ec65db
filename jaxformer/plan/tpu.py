"""Ahead-of-time compilation of the real train step for a TPU topology (libtpu on any machine):
memory per chip against HBM, XLA's FLOPs, a step time from the compiled program's own cost
(plan/roofline.py) and one predicted at an assumed MFU."""

import math
import os
import re
import time

import gin
import jax

from jaxformer import models, sharding
from jaxformer.data import pipeline
from jaxformer.models.common.attention import MASK_FROM_IDS
from jaxformer.plan import roofline
from jaxformer.plan.costs import count_params
from jaxformer.train import mfu as mfu_lib
from jaxformer.train import setup as setup_lib
from jaxformer.train.step import StepConfig

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
def tpu_plan(
  topology: str | None = None, num_slices: int = 1, assumed_mfu: float = 0.4, compiler_step_time: bool = True
) -> dict:
  """Compiles the run's real train step for a TPU topology ahead of time; reports per-device memory
  against HBM, XLA's FLOPs, the step time the compiled program implies, and the one predicted at
  assumed_mfu.

  compiler_step_seconds: XLA's per-device cost of one step, counted on loop-free programs (the step
  with 1 and 2 unrolled layers and one microbatch, and the state update alone, extrapolated to
  num_layers and multiplied out to the microbatches: plan/roofline.py), as XLA's optimal_seconds where
  it knows them, else max(FLOPs / peak FLOP/s, bytes accessed / HBM bandwidth);
  compiler_step_source names which. compiler_mfu is the MFU that step time means (6N + attention).

  Uses the gin-bound ModelConfig, DataConfig (batch, length), StepConfig (microbatches), optimizer
  and mesh (sharding.make_mesh, including dcn_mesh_shape for several slices): the same objects
  `jaxformer train` builds.
  Args (gin: plan.tpu_plan.*, which a run gin may bind):
    topology: an accelerator type (v4-256) or family:shape (v4:4x4x8).
    num_slices: slices joined over DCN (bind sharding.make_mesh.dcn_mesh_shape to match).
    assumed_mfu: the MFU the predicted step time assumes (6N + attention accounting).
    compiler_step_time: compile the cost programs for compiler_step_seconds (False skips them).
  """
  if not topology:
    raise ValueError("no TPU topology: pass --topology=v4-32 or bind plan.tpu_plan.topology in the run gin")
  devices, info = topology_devices(topology, num_slices)
  model_config, data_config, step_config = models.bound(), pipeline.DataConfig(), StepConfig()
  mesh = sharding.make_mesh(devices=devices)
  return compile_step(
    model_config,
    step_config,
    data_config.batch_size,
    data_config.length,
    mesh,
    topology,
    info,
    num_slices,
    assumed_mfu=assumed_mfu,
    compiler_step_time=compiler_step_time,
  )


def compile_step(
  model_config,
  step_config,
  batch_size: int,
  length: int,
  mesh,
  topology: str,
  info: dict,
  num_slices: int = 1,
  assumed_mfu: float = 0.4,
  compiler_step_time: bool = True,
  skip_cost_unless_fits: bool = False,
) -> dict:
  """tpu_plan's report for explicit configs and mesh (plan --fit calls it once per candidate, with
  skip_cost_unless_fits: a step over HBM gets no cost programs)."""
  devices = list(mesh.devices.flat)
  batch_ways = mesh.shape["data"] * mesh.shape["fsdp"]
  if batch_size % (batch_ways * step_config.microbatches):
    raise ValueError(
      f"BATCH_SIZE={batch_size} must divide by data x fsdp = {batch_ways} devices "
      f"times train.StepConfig.microbatches={step_config.microbatches}"
    )
  # The schedule's length changes no shape, memory or FLOP.
  setup = setup_lib.build(model_config, step_config, total_steps=10**9, mesh=mesh)
  abstract_state, batch = setup.abstract_state, setup.abstract_batch(batch_size, length)
  step, rules = setup.train_step, setup.rules
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
  started = time.perf_counter()
  fits = memory["total"] <= info["hbm_bytes"]
  if "compiler" in memory or not compiler_step_time or (skip_cost_unless_fits and not fits):
    why = (
      "the step did not compile"
      if "compiler" in memory
      else "the step does not fit"
      if compiler_step_time
      else "plan.tpu_plan.compiler_step_time = False"
    )
    timing = {"compiler_step_seconds": None, "compiler_step_source": f"none ({why})"}
  else:
    timing = roofline.step_time(roofline.step_cost(setup, batch_size, length)["step"], devices[0].device_kind)
  cost_compile_seconds = time.perf_counter() - started
  xla_flops = _unrolled_step_flops(model_config, step_config, batch_size, length)
  tokens = batch_size * length
  flops = model_config.flops_per_token(length)
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
    "batch_size": batch_size,
    "sequence_length": length,
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
    **timing,
    "compiler_mfu": model_flops / (chips * peak * timing["compiler_step_seconds"])
    if timing["compiler_step_seconds"]
    else None,
    **{
      f"mfu_{k}": model_flops / (chips * peak * timing[f"step_seconds_{k}"])
      if timing.get(f"step_seconds_{k}")
      else None
      for k in ("serial", "overlapped")
    },
    "compile_seconds": compile_seconds,
    "cost_compile_seconds": cost_compile_seconds,
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


def _unrolled_step_flops(model_config, step_config, batch_size: int, length: int) -> float:
  """XLA's FLOP count of one whole train step (the global program, remat recompute included).

  Counted on the lowered, unpartitioned step of the same model with its layers unrolled and one
  microbatch, on one CPU device: XLA's cost analysis counts a while loop's body once (the scanned
  program would show one layer), and compile-only TPU devices give no cost for a lowered program.
  A kernel that builds its mask per tile (flash) runs on CPU in Pallas interpret mode, a loop XLA
  would count once: it is counted as the dense `xla` attention, the FLOPs of every tile.
  """
  mesh = sharding.make_mesh((1, 1, 1), devices=jax.devices("cpu")[:1], dcn_mesh_shape=(1, 1, 1))
  attention = "xla" if model_config.attention in MASK_FROM_IDS else model_config.attention
  # One microbatch: the same FLOPs, without the accumulation loop whose body would count once.
  lowered = roofline.lower_loop_free_step(model_config, step_config, batch_size, length, mesh, attention=attention)
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])
