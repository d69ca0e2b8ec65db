"""The text `jaxformer plan` prints, from the report dicts of costs.plan_report and tpu.tpu_plan."""

GIB = 2**30


def _size(n: float) -> str:
  return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2**20:.1f} MiB"


def format_report(report: dict) -> str:
  """Lines of the model's costs, then (when report['tpu'] is present) the compiled TPU step."""
  lines = [
    f"parameters                      {report['params']:,}",
    f"matmul parameters (N)           {report['matmul_params']:,}",
    f"FLOPs/token, 6N                 {report['flops_per_token_6n']:.4g}",
    f"FLOPs/token, 6N + causal attn   {report['flops_per_token_with_attention']:.4g}"
    f"  (length {report['sequence_length']})",
    f"parameter bytes                 {report['param_bytes'] / GIB:.2f} GiB",
    f"Adam state bytes                {report['adam_state_bytes'] / GIB:.2f} GiB",
  ]
  if "trainable_params" in report:
    lines[-2] = f"adapter bytes (LoRA)            {report['param_bytes'] / GIB:.2f} GiB"
    lines.insert(1, f"trainable (LoRA adapters)       {report['trainable_params']:,}")
    lines.append(f"frozen base bytes               {report['frozen_bytes'] / GIB:.2f} GiB")
  tpu = report.get("tpu")
  if tpu:
    m = tpu["memory_per_device"]
    lines.append(
      f"--- train step compiled for {tpu['num_slices']} x {tpu['topology']} ({tpu['libtpu_topology']}, "
      f"{tpu['devices']} x {tpu['device_kind']}) in {tpu['compile_seconds']:.1f} s ---"
    )
    lines.append(
      f"mesh {tpu['mesh']}, batch {tpu['batch_size']} x {tpu['sequence_length']}, microbatches "
      f"{tpu['microbatches']}, remat {tpu['remat_policy']}"
    )
    memory = f"memory per device: arguments {_size(m['arguments'])}, temporaries {_size(m['temporaries'])}"
    if "compiler" in m:  # the compiler refused the step: it names the temporaries it needed
      lines.append(f"{memory} (the TPU compiler refused: {m['compiler']})")
    else:
      lines.append(f"{memory}, outputs {_size(m['outputs'])} (aliased {_size(m['aliased'])})")
    lines.append(
      f"total {_size(m['total'])} of {_size(tpu['hbm_per_device'])} HBM per device "
      f"({tpu['memory_fraction']:.1%}): {'fits' if tpu['fits'] else 'DOES NOT FIT'}"
    )
    lines.append(
      f"FLOPs per step: XLA cost analysis {tpu['xla_flops_per_step']:.4g}; model 6N "
      f"{tpu['model_flops_per_step_6n']:.4g}, 6N + causal attn {tpu['model_flops_per_step_6n_attention']:.4g}"
    )
    if tpu.get("compiler_step_seconds"):
      lines.append(
        f"compiler step time {tpu['compiler_step_seconds'] * 1000:.1f} ms ({tpu['compiler_step_source']}; "
        f"per device {tpu['compiler_flops_per_device']:.4g} FLOPs, {_size(tpu['compiler_bytes_per_device'])} "
        f"accessed), MFU {tpu['compiler_mfu']:.1%} (6N + causal attn)"
      )
      lines.append(
        f"communication {tpu['communication_seconds'] * 1000:.1f} ms per step "
        f"({_size(tpu['collective_bytes_per_device'])} of collectives per device"
        + (f", {tpu['dcn_seconds'] * 1000:.1f} ms of it over DCN" if tpu["dcn_seconds"] else "")
        + f"); compute {tpu['compute_seconds'] * 1000:.1f} ms, memory {tpu['memory_seconds'] * 1000:.1f} ms"
      )
      lines.append(
        f"step with communication: serial {tpu['step_seconds_serial'] * 1000:.1f} ms (MFU {tpu['mfu_serial']:.1%}), "
        f"overlapped {tpu['step_seconds_overlapped'] * 1000:.1f} ms (MFU {tpu['mfu_overlapped']:.1%}); "
        f"bound by {tpu['bound']} (MFU: 6N + causal attn)"
      )
    elif "compiler_step_source" in tpu:
      lines.append(f"compiler step time: {tpu['compiler_step_source']}")
    lines.append(
      f"predicted step time at {tpu['assumed_mfu']:.0%} MFU (6N + causal attn): "
      f"{tpu['predicted_step_seconds'] * 1000:.1f} ms, {tpu['predicted_tokens_per_second']:,.0f} tokens/s"
    )
  return "\n".join(lines)
