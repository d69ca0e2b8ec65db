"""`jaxformer bench`: train-step speed on synthetic batches (no data pipeline), with MFU under
both accountings and peak memory. The only source of speed claims in docs/PERFORMANCE.md."""

import resource
import time

import jax
import numpy as np

from jaxformer import models, sharding
from jaxformer.train import mfu as mfu_lib
from jaxformer.train import setup as setup_lib
from jaxformer.train.profile import StepProfiler
from jaxformer.train.step import StepConfig


def _peak_memory() -> tuple[float | None, str]:
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return float(stats["peak_bytes_in_use"]), "device peak_bytes_in_use (device 0)"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0, "host peak RSS (CPU backend)"


def _as_the_loop_runs(step, state, global_batch, local: dict, steps: int, mesh, rules) -> tuple:
  """(the state after, seconds) for `steps` steps with the host work `train` does around each one: the batch goes
  from host memory to the devices, and the previous step's metrics come back (one step late)."""
  start = time.perf_counter()
  pending = None
  for _ in range(steps):
    with sharding.activation_sharding(mesh, rules):
      state, metrics = step(state, global_batch(local))
    if pending is not None:
      jax.device_get(pending)
    pending = metrics
  jax.device_get(pending)
  return state, time.perf_counter() - start


def bench(
  steps: int, batch_size: int, length: int, warmup: int = 2, seed: int = 0, profile_dir: str | None = None
) -> dict:
  """Times `steps` train steps after `warmup` (compilation) steps for the gin-bound model and step config.
  With profile_dir, `steps` more steps then run under a jax.profiler trace written there (the timed
  steps are not traced, so tracing costs no reported speed)."""
  config = models.bound()
  if length > config.max_length:
    raise ValueError(f"--length={length} is longer than the model's context ModelConfig.max_length={config.max_length}")
  setup = setup_lib.build(config, StepConfig(), total_steps=steps + warmup + 2, warmup_steps=1)
  state = setup.init_state(jax.random.key(seed))
  nbytes = lambda tree: int(sum(x.nbytes for x in jax.tree.leaves(tree)))
  state_bytes = {"params": nbytes(state.params), "optimizer": nbytes(state.opt_state), "frozen": nbytes(state.frozen)}
  step, batch_sharding, mesh, rules = setup.train_step, setup.batch_sharding, setup.mesh, setup.rules
  rng = np.random.default_rng(seed)
  targets = rng.integers(1, config.vocab_size, (batch_size, length)).astype(np.int32)
  local = {
    "decoder_target_tokens": targets,
    "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),
    "decoder_loss_weights": np.ones_like(targets),
    "decoder_segment_ids": np.ones_like(targets),
    "decoder_positions": np.broadcast_to(np.arange(length, dtype=np.int32), targets.shape).copy(),
    "decoder_causal_attention": np.zeros_like(targets),
  }
  batch = {k: jax.device_put(v, batch_sharding) for k, v in local.items()}
  with sharding.activation_sharding(mesh, rules):
    compile_start = time.perf_counter()
    for _ in range(warmup):
      state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - compile_start
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - start
    final_loss = float(metrics["loss"])
    state, loop_seconds = _as_the_loop_runs(step, state, setup.global_batch, local, steps, mesh, rules)
    if profile_dir:
      profiler = StepProfiler(profile_dir, (1, steps + 1), name="bench --steps")
      try:
        for i in range(1, steps + 1):
          profiler.before(i)
          state, metrics = step(state, batch)
          profiler.after(i, state, metrics)
      finally:
        profiler.close()
  tokens_per_second = steps * batch_size * length / seconds
  flops = config.flops_per_token(length)
  kind = jax.devices()[0].device_kind
  peak, peak_source = _peak_memory()
  return {
    "device_kind": kind,
    "devices": jax.device_count(),
    "batch_size": batch_size,
    "length": length,
    "steps": steps,
    "step_seconds": seconds / steps,
    "warmup_seconds": compile_seconds,
    "tokens_per_second": tokens_per_second,
    "mfu_6n": mfu_lib.mfu(tokens_per_second, flops["flops_per_token_6n"], jax.device_count(), kind),
    "mfu_6n_attention": mfu_lib.mfu(
      tokens_per_second, flops["flops_per_token_with_attention"], jax.device_count(), kind
    ),
    "model_tflops_per_second_6n": tokens_per_second * flops["flops_per_token_6n"] / 1e12,
    "peak_memory_bytes": peak,
    "peak_memory_source": peak_source,
    # The train state's arrays (all devices): trained parameters, optimizer state, a LoRA run's frozen base.
    "state_bytes": state_bytes,
    "loop_step_seconds": loop_seconds / steps,
    "host_overhead_share": max(0.0, 1.0 - seconds / loop_seconds),
    "final_loss": final_loss,
    "profile_dir": profile_dir,
  }
