"""The step time the compiled TPU program implies: XLA's per-device cost analysis (FLOPs, bytes accessed,
optimal_seconds) of the train step, counted without the loop undercount, against the chip's peaks.

XLA's cost analysis counts a while loop's body once, and the real step has two loops: the layer scan
(ModelConfig.scan_layers) and the microbatch scan (StepConfig.microbatches). Compiled as it runs, a
16-layer model with 4 microbatches would show one layer of one microbatch. So the cost is taken from
loop-free programs compiled for the same TPU devices, mesh and rules (docs/TPU.md, "Compiler step time"):

1. the step with 1 and with 2 layers unrolled (scan_layers=False) and one microbatch of batch / M rows
   (StepConfig.microbatches = M): no loops, so every op counts. The per-layer cost is the difference,
   and C(L) = C(1) + (L - 1) * (C(2) - C(1)) is a whole step of the L-layer model on one microbatch;
2. the state update alone (gradient norm, AdamW, apply, the finite guard) on the run's own state
   shardings: U, the part of a step that runs once however many microbatches there are;
3. one step = U + M * (C(L) - U): the forward and backward pass (with its weight all-gathers and
   gradient reduce-scatters) runs once per microbatch, the update once.

The TPU compiler adds loops of its own: a large FSDP matmul becomes a ring of partial matmuls
("windowed einsum"), so these programs are compiled with it off (COST_COMPILER_OPTIONS), and
compiler_loops_left reports any while loop still in them (0 when every op is counted).

Each of FLOPs, bytes and optimal_seconds is combined this way. The step time is XLA's optimal_seconds
where all three programs give a positive one (TPU leaves it negative, "unknown", for large sharded
programs), else the roofline max(FLOPs / peak FLOP/s, bytes / HBM bandwidth) per device. Neither counts
time the chips wait on each other for collectives; the programs' collectives (plan/collectives.py,
combined the same way) give that term, reported beside it serial (added) and overlapped (the larger).
"""

import dataclasses
import math
import re

import jax
import jax.numpy as jnp
import optax

from jaxformer import sharding
from jaxformer.plan import collectives
from jaxformer.train import mfu as mfu_lib
from jaxformer.train import setup as setup_lib

QUANTITIES = ("flops", "bytes accessed", "optimal_seconds", "communication_seconds", "dcn_seconds", "collective_bytes")
# The TPU compiler splits a large FSDP matmul into a ring loop of partial matmuls and collective
# permutes ("windowed einsum", while loops named windowed_dot_general): counted once, they would hide
# most of the matmul FLOPs (1B on v4-32: 5.1e12 FLOPs per device for one layer's step, 8.2e12 without
# them, as the CPU count of the same program). The cost programs are compiled without it: the same
# arithmetic, gathered whole instead of in a loop.
COST_COMPILER_OPTIONS = {
  "xla_tpu_enable_windowed_einsum_for_all_gather": False,
  "xla_tpu_enable_windowed_einsum_for_reduce_scatter": False,
}


def program_cost(lowered, mesh) -> dict:
  """Per-device flops, bytes accessed and optimal_seconds (negative = unknown) of a lowered program,
  compiled without windowed einsum, and the time of its collectives (plan/collectives.py:
  communication_seconds, the part of it over DCN, collective_bytes); `loops` counts the while loops
  left in it (0: every op counted)."""
  compiled = lowered.compile(compiler_options=COST_COMPILER_OPTIONS)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  text = compiled.as_text()
  devices = list(mesh.devices.flat)
  slices = len({getattr(d, "slice_index", 0) for d in devices})
  comm = collectives.communication(
    text, len(devices), devices[0].device_kind, len(devices) // slices if slices > 1 else None
  )
  return {
    **{k: float(cost.get(k, -1.0)) for k in ("flops", "bytes accessed", "optimal_seconds")},
    "communication_seconds": comm["seconds"],
    "dcn_seconds": comm["dcn_seconds"],
    "collective_bytes": float(sum(e["bytes"] for e in comm["by_kind"].values())),
    "loops": len(re.findall(r"\bwhile\(", text)),
  }


def lower_loop_free_step(model_config, step_config, rows: int, length: int, mesh, **model_overrides):
  """The train step lowered for `mesh` with its layers unrolled and one microbatch of `rows` rows
  (ModelConfig fields in model_overrides replace the run's): the layer and microbatch loops gone."""
  setup = setup_lib.build(
    dataclasses.replace(model_config, scan_layers=False, **model_overrides),
    dataclasses.replace(step_config, microbatches=1),
    total_steps=10**9,
    mesh=mesh,
  )
  with sharding.activation_sharding(mesh, setup.rules):
    return setup.train_step.lower(setup.abstract_state, setup.abstract_batch(rows, length))


def _loop_free_step_cost(model_config, step_config, rows: int, length: int, num_layers: int, mesh) -> dict:
  """The step with num_layers unrolled layers and one microbatch of `rows` rows, compiled for `mesh`."""
  return program_cost(lower_loop_free_step(model_config, step_config, rows, length, mesh, num_layers=num_layers), mesh)


def _update_cost(setup) -> dict:
  """The state update after the gradients (train/step.py's tail) on the run's state shardings."""

  def update(state, grads):
    finite = jnp.isfinite(optax.global_norm(grads))
    updates, opt_state = setup.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    return state.replace(
      step=state.step + 1, params=keep(params, state.params), opt_state=keep(opt_state, state.opt_state)
    )

  shards = setup.state_shardings
  step = jax.jit(update, in_shardings=(shards, shards.params), out_shardings=shards, donate_argnums=0)
  with sharding.activation_sharding(setup.mesh, setup.rules):
    return program_cost(step.lower(setup.abstract_state, setup.abstract_state.params), setup.mesh)


def step_cost(setup, batch_size: int, length: int) -> dict:
  """Per-device flops, bytes accessed and optimal_seconds of one whole train step of `setup` (the run's
  TrainSetup on TPU devices), by the method in this module's docstring."""
  model_config, step_config, mesh = setup.model_config, setup.step_config, setup.mesh
  m, layers = step_config.microbatches, model_config.num_layers
  rows = batch_size // m
  one = _loop_free_step_cost(model_config, step_config, rows, length, 1, mesh)
  two = _loop_free_step_cost(model_config, step_config, rows, length, 2, mesh) if layers > 1 else one
  update = _update_cost(setup)
  step = {}
  for k in QUANTITIES:
    whole_model = one[k] + (layers - 1) * (two[k] - one[k])
    step[k] = update[k] + m * (whole_model - update[k])
  known = all(c["optimal_seconds"] > 0 for c in (one, two, update))
  step["optimal_seconds"] = step["optimal_seconds"] if known else None
  step["loops"] = one["loops"] + two["loops"] + update["loops"]
  return {"step": step, "one_layer": one, "two_layers": two, "update": update}


def step_time(cost: dict, device_kind: str) -> dict:
  """compiler_step_seconds and its source from step_cost's per-device step cost and the chip's peaks,
  and the step with its communication: serial (compute, then the collectives) and overlapped (the
  larger of the two, what XLA's async collectives aim for), with the term that bounds it."""
  peak, bandwidth = mfu_lib.peak_flops(device_kind), mfu_lib.hbm_bandwidth(device_kind)
  compute = cost["flops"] / peak if peak else math.nan
  memory = cost["bytes accessed"] / bandwidth if bandwidth else math.nan
  roofline = max(compute, memory)
  bound = "compute-bound" if compute >= memory else "memory-bound"
  if cost["optimal_seconds"] is not None:
    seconds, source = cost["optimal_seconds"], "optimal_seconds"
  else:
    seconds, source = roofline, f"roofline ({bound})"
  communication = cost["communication_seconds"]
  terms = {"compute": compute, "memory": memory, "communication": communication}
  return {
    "compiler_step_seconds": seconds,
    "compiler_step_source": source,
    "compiler_roofline_seconds": roofline,
    "compiler_roofline_bound": bound,
    "compiler_optimal_seconds": cost["optimal_seconds"],
    "compiler_flops_per_device": cost["flops"],
    "compiler_bytes_per_device": cost["bytes accessed"],
    "compiler_loops_left": cost["loops"],
    "compute_seconds": compute,
    "memory_seconds": memory,
    "communication_seconds": communication,
    "dcn_seconds": cost["dcn_seconds"],
    "collective_bytes_per_device": cost["collective_bytes"],
    "step_seconds_serial": seconds + communication,
    "step_seconds_overlapped": max(seconds, communication),
    "bound": max(terms, key=lambda k: terms[k] if terms[k] == terms[k] else -1.0),
    "peak_flops_per_device": peak,
    "hbm_bandwidth_per_device": bandwidth,
  }
