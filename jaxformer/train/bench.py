"""`jaxformer bench`: train-step speed on synthetic batches (no data pipeline), with MFU under
both accountings and peak memory. The only source of speed claims in docs/PERFORMANCE.md."""

import resource
import time

import jax
import numpy as np

from jaxformer import sharding
from jaxformer.model import ModelConfig, Transformer
from jaxformer.plan import flops_per_token
from jaxformer.train import mfu as mfu_lib
from jaxformer.train.optimizer import learning_rate_schedule, make_optimizer
from jaxformer.train.state import create_state, state_shardings
from jaxformer.train.step import StepConfig, jit_train_step


def _peak_memory() -> tuple[float | None, str]:
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return float(stats["peak_bytes_in_use"]), "device peak_bytes_in_use (device 0)"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0, "host peak RSS (CPU backend)"


def bench(steps: int, batch_size: int, length: int, warmup: int = 2, seed: int = 0) -> dict:
  """Times `steps` train steps after `warmup` (compilation) steps for the gin-bound model."""
  config = ModelConfig()
  model = Transformer(config)
  schedule = learning_rate_schedule(warmup_steps=1, total_steps=steps + warmup + 2)
  optimizer = make_optimizer(schedule)
  mesh, rules = sharding.make_mesh(), sharding.logical_axis_rules()
  _, shards = state_shardings(model, optimizer, mesh, rules)
  state = create_state(model, optimizer, mesh, rules, jax.random.key(seed), shards)
  batch_sharding = sharding.logical_to_sharding(("batch", "length"), mesh, rules)
  step = jit_train_step(model, optimizer, schedule, StepConfig(), shards, batch_sharding)
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
  tokens_per_second = steps * batch_size * length / seconds
  flops = flops_per_token(config, length)
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
    "final_loss": float(metrics["loss"]),
  }
