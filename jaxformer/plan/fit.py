"""`jaxformer plan --fit`: the fastest configuration of a run that fits a TPU slice, chosen by the compiler.

The candidates are every mesh split (data, fsdp, tensor; tensor dividing the heads), microbatch count,
remat policy and attention kernel for the run's global batch (or, with several batches, each of
them). An analytic estimate (estimate(): the state sharded over fsdp x tensor, the activations a
policy keeps, attention scores for the dense kernel, the loss's logits chunk) prunes what cannot fit
by a wide margin (over PRUNE_FACTOR x HBM) and orders the rest by an analytic step time (the run's own
configuration first); after each compile the estimate is scaled by the largest compiled/estimated
memory ratio seen, and a candidate whose scaled estimate is over CALIBRATED_LIMIT x HBM is skipped
uncompiled. The survivors are compiled ahead of time (tpu.compile_step: memory, then, for a step
that fits, the cost programs with their collectives) until --max_compiles or the time budget runs
out, and those that fit are ranked by the compiled
step time with communication overlapped (the serial figure beside it). The winner is written as a run
gin that includes the run's own gin files and binds the chosen mesh, batch and knobs.
"""

import dataclasses
import math
import time

from jaxformer.plan import collectives
from jaxformer.plan.costs import count_params
from jaxformer.train import mfu as mfu_lib

REMAT_POLICIES = ("save_dots", "save_qkv_attn", "full", "none")
ATTENTIONS = ("flash", "xla")
MICROBATCHES = (1, 2, 4, 8, 16)
PRUNE_FACTOR = 1.5  # the estimate is rough: before any compile, prune only what is far over HBM
CALIBRATED_LIMIT = 1.1  # after compiles: estimate x (largest compiled / estimated ratio) over 1.1 x HBM
# Activation bytes kept per token per layer, in units of d_model compute-dtype values, by remat policy
# (what the block saves for its backward pass: the layer input always; matmul outputs for save_dots...).
KEPT_PER_TOKEN = {"full": 1, "save_qkv_attn": 5, "save_attn_mlp": 9, "save_dots": 11, "none": 34}
RECOMPUTE = {"full": 4 / 3, "save_qkv_attn": 1.2, "save_attn_mlp": 1.1, "save_dots": 1.05, "none": 1.0}


@dataclasses.dataclass(frozen=True)
class Candidate:
  batch_size: int
  mesh: tuple[int, int, int]  # data, fsdp, tensor inside one slice
  microbatches: int
  remat_policy: str
  attention: str

  @property
  def name(self) -> str:
    d, f, t = self.mesh
    return f"b{self.batch_size} mesh {d}x{f}x{t} mb{self.microbatches} {self.remat_policy} {self.attention}"


def _divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def candidates(model_config, batch_sizes, devices_per_slice: int, num_slices: int) -> list[Candidate]:
  """Every combination the search considers; the data axis also spans the slices (DCN)."""
  found = []
  heads = math.gcd(model_config.num_heads, model_config.kv_heads)
  for batch in batch_sizes:
    for tensor in [t for t in _divisors(devices_per_slice) if t <= 8 and heads % t == 0]:
      for data in _divisors(devices_per_slice // tensor):
        fsdp = devices_per_slice // tensor // data
        ways = data * fsdp * num_slices
        for m in MICROBATCHES:
          if batch % (ways * m):
            continue
          for policy in REMAT_POLICIES:
            for attention in ATTENTIONS:
              found.append(Candidate(batch, (data, fsdp, tensor), m, policy, attention))
  return found


def estimate(
  model_config, candidate: Candidate, length: int, loss_chunk: int, device_kind: str, num_slices: int, params: int
):
  """(bytes per device, seconds per step) by arithmetic alone: the pruning and the compile order. params:
  count_params(model_config), counted once by the caller (it traces the model's init: 0.1 s a call)."""
  data, fsdp, tensor = candidate.mesh
  state = params * (4 + 8 + 4) / (fsdp * tensor)  # f32 params, Adam's two moments, the gradients
  rows = candidate.batch_size / (data * fsdp * num_slices) / candidate.microbatches
  tokens = rows * length
  width = 2 if model_config.dtype == "bfloat16" else 4
  kept = KEPT_PER_TOKEN.get(candidate.remat_policy, 11) * tokens * model_config.d_model * width / tensor
  activations = kept * model_config.num_layers
  scores = 0 if candidate.attention == "flash" else 2 * rows * model_config.num_heads / tensor * length * length * 4
  chunk = loss_chunk or length
  logits = 3 * rows * chunk * model_config.vocab_size * 4 / tensor
  memory = state + activations + scores + logits
  flops = model_config.flops_per_token(length)["flops_per_token_with_attention"] * candidate.batch_size * length
  chips = data * fsdp * tensor * num_slices
  compute = flops * RECOMPUTE.get(candidate.remat_policy, 1.1) / (chips * (mfu_lib.peak_flops(device_kind) or 1))
  ici = collectives.ICI_BYTES_PER_SECOND.get(device_kind, 1e11)
  gather = 2 * params * width * (fsdp - 1) / fsdp / tensor * candidate.microbatches  # forward and backward
  scatter = params * 4 * (fsdp - 1) / fsdp / tensor * candidate.microbatches
  reduce = 2 * params * 4 * (data - 1) / max(data, 1) / (fsdp * tensor)
  activations_ar = 8 * model_config.num_layers * tokens * model_config.d_model * width * (tensor - 1) / tensor
  communication = (gather + scatter + reduce + activations_ar * candidate.microbatches) / ici
  return memory, max(compute, communication)


def search(
  model_config,
  step_config,
  batch_sizes,
  length,
  devices,
  info,
  topology,
  num_slices=1,
  *,
  max_compiles,
  time_budget,
  baseline: Candidate | None = None,
  progress=print,
):
  """Ranks the compiled candidates that fit; returns {'rows': [...], 'winner': row or None, ...}.

  baseline: the run's own configuration, compiled first (marked in the table), so the winner is never
  slower than what the run gin ships, by the same prediction."""
  from jaxformer import sharding
  from jaxformer.plan import tpu

  device_kind = devices[0].device_kind
  per_slice = len(devices) // num_slices
  options = candidates(model_config, batch_sizes, per_slice, num_slices)
  if not options:
    raise ValueError(
      f"no mesh divides BATCH_SIZE={list(batch_sizes)} over {len(devices)} devices with microbatches in "
      f"{MICROBATCHES}: use a batch that is a multiple of {len(devices)}"
    )
  estimated, params = [], count_params(model_config)
  for c in options:
    memory, seconds = estimate(model_config, c, length, step_config.loss_chunk_length, device_kind, num_slices, params)
    estimated.append((c, memory, seconds))
  survivors = [e for e in estimated if e[1] <= PRUNE_FACTOR * info["hbm_bytes"]]
  # the largest batch first, then the fastest by estimate (for several batches, more tokens per step)
  survivors.sort(key=lambda e: (e[0] != baseline, -e[0].batch_size, e[2] / e[0].batch_size, e[0].name))
  progress(
    f"plan --fit: {len(options)} candidates, {len(options) - len(survivors)} pruned by the memory estimate "
    f"(over {PRUNE_FACTOR} x {info['hbm_bytes'] / 2**30:.0f} GiB), compiling up to {max_compiles} of "
    f"{len(survivors)} within {time_budget:.0f} s"
  )
  rows, started, compiled, ratio, skipped = [], time.perf_counter(), 0, 1.0, 0
  for candidate, memory, seconds in survivors:
    elapsed = time.perf_counter() - started
    mean = elapsed / compiled if compiled else 0.0
    if compiled >= max_compiles or (compiled and elapsed + mean > time_budget):
      break
    # calibrated by what the compiler said so far: the largest compiled/estimated memory ratio
    if candidate != baseline and memory * ratio > CALIBRATED_LIMIT * info["hbm_bytes"]:
      skipped += 1
      continue
    mesh = sharding.make_mesh(
      candidate.mesh,
      devices=devices,
      dcn_mesh_shape=(num_slices, 1, 1) if num_slices > 1 else None,
    )
    config = dataclasses.replace(model_config, remat_policy=candidate.remat_policy, attention=candidate.attention)
    step = dataclasses.replace(step_config, microbatches=candidate.microbatches)
    report = tpu.compile_step(
      config, step, candidate.batch_size, length, mesh, topology, info, num_slices, skip_cost_unless_fits=True
    )
    compiled += 1
    ratio = max(ratio, report["memory_per_device"]["total"] / memory)
    row = {
      "candidate": candidate.name + (" (the run's)" if candidate == baseline else ""),
      "settings": dataclasses.asdict(candidate),
      "estimated_bytes": memory,
      "estimated_seconds": seconds,
      "memory_per_device": report["memory_per_device"]["total"],
      "fits": report["fits"],
      "step_seconds_overlapped": report.get("step_seconds_overlapped"),
      "step_seconds_serial": report.get("step_seconds_serial"),
      "mfu_overlapped": report.get("mfu_overlapped"),
      "mfu_serial": report.get("mfu_serial"),
      "bound": report.get("bound"),
      "tokens_per_second": candidate.batch_size * length / report["step_seconds_overlapped"]
      if report.get("step_seconds_overlapped")
      else None,
      "compile_seconds": report["compile_seconds"] + report["cost_compile_seconds"],
    }
    rows.append(row)
    progress(
      f"[{compiled}/{min(max_compiles, len(survivors))}] {candidate.name}: "
      f"{row['memory_per_device'] / 2**30:.2f} GiB/chip{'' if row['fits'] else ' (does not fit)'}"
      + (f", {row['step_seconds_overlapped'] * 1000:.1f} ms overlapped" if row["step_seconds_overlapped"] else "")
      + f" ({row['compile_seconds']:.0f} s)"
    )
  if not rows:
    raise ValueError(
      f"--time_budget={time_budget:.0f} s compiled no candidate: raise it (one compile takes minutes at 1B)"
    )
  fitting = [r for r in rows if r["fits"] and r["step_seconds_overlapped"]]
  # the most tokens per second among those that fit (for one batch size: the shortest step)
  fitting.sort(key=lambda r: (-r["tokens_per_second"], r["candidate"]))
  return {
    "rows": rows,
    "ranked": fitting,
    "winner": fitting[0] if fitting else None,
    "pruned": len(options) - len(survivors),
  }


def run_gin(winner: dict, gin_files, bindings, topology: str, num_slices: int, family: str) -> str:
  """The winner as a run gin: the run's gin files included, its --gin bindings, then the chosen settings
  (a later binding wins). family: the model config's gin name (ModelConfig, LlamaConfig)."""
  s = winner["settings"]
  lines = [f"# written by jaxformer plan --fit for {num_slices} x {topology}: {winner['candidate']}"]
  overlapped, serial = winner["step_seconds_overlapped"] * 1000, winner["step_seconds_serial"] * 1000
  lines.append(
    f"# compiled: {winner['memory_per_device'] / 2**30:.2f} GiB/chip, step {overlapped:.1f} ms overlapped "
    f"({serial:.1f} ms serial), MFU {winner['mfu_overlapped']:.1%} (6N + causal attn)"
  )
  lines += [f"include '{f}'" for f in gin_files]
  d, f, t = s["mesh"]
  chosen = [
    f"BATCH_SIZE = {s['batch_size']}",
    f"sharding.make_mesh.mesh_shape = ({d}, {f}, {t})",
    f"train.StepConfig.microbatches = {s['microbatches']}",
    f"{family}.remat_policy = '{s['remat_policy']}'",
    f"{family}.attention = '{s['attention']}'",
    f"plan.tpu_plan.topology = '{topology}'",
  ]
  if num_slices > 1:
    chosen += [f"plan.tpu_plan.num_slices = {num_slices}", f"sharding.make_mesh.dcn_mesh_shape = ({num_slices}, 1, 1)"]
  names = {line.split("=")[0].strip() for line in chosen}
  lines += [b for b in bindings if b.split("=")[0].strip() not in names]  # the run's own, unless chosen here
  return "\n".join(lines + chosen) + "\n"


def table(rows: list[dict]) -> str:
  """The compiled candidates, fastest first among those that fit (MFU: 6N + causal attention)."""
  head = (
    f"{'candidate':44} {'GiB/chip':>8} {'fits':>4} {'overlapped ms':>13} {'serial ms':>9} "
    f"{'MFU ovl':>7} {'MFU ser':>7} {'bound':>13} {'tokens/s':>12}"
  )
  order = sorted(rows, key=lambda r: (not r["fits"], -(r["tokens_per_second"] or 0), r["candidate"]))
  lines = [head]
  ms = lambda r, k: f"{r[k] * 1000:.1f}" if r[k] else "-"
  pct = lambda r, k: f"{r[k]:.1%}" if r[k] else "-"
  for r in order:
    lines.append(
      f"{r['candidate']:44} {r['memory_per_device'] / 2**30:8.2f} {'yes' if r['fits'] else 'no':>4} "
      f"{ms(r, 'step_seconds_overlapped'):>13} {ms(r, 'step_seconds_serial'):>9} {pct(r, 'mfu_overlapped'):>7} "
      f"{pct(r, 'mfu_serial'):>7} {r['bound'] or '-':>13} {r['tokens_per_second'] or 0:12,.0f}"
    )
  return "\n".join(lines)
