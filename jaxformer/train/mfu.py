"""Model FLOPs utilisation, always labelled with its accounting (DESIGN.md, Measures)."""

# Peak dense bf16 FLOP/s per chip (vendor figures).
PEAK_FLOPS = {
  "tpu v4": 275e12,
  "tpu v5 lite": 197e12,  # v5e
  "tpu v5e": 197e12,
  "tpu v5p": 459e12,
  "tpu v5": 459e12,
  "tpu v6 lite": 918e12,  # v6e (Trillium)
  "tpu v6e": 918e12,
  "a100": 312e12,
  "h100": 989e12,
  "h200": 989e12,
}


def peak_flops(device_kind: str) -> float | None:
  """Peak FLOP/s of one device by its jax device_kind; None where unknown (CPU)."""
  kind = device_kind.lower()
  for name in sorted(PEAK_FLOPS, key=len, reverse=True):
    if name in kind:
      return PEAK_FLOPS[name]
  return None


def mfu(tokens_per_second: float, flops_per_token: float, num_devices: int, device_kind: str) -> float | None:
  peak = peak_flops(device_kind)
  if peak is None:
    return None
  return tokens_per_second * flops_per_token / (num_devices * peak)


def format_mfu(value: float | None) -> str:
  return "n/a" if value is None else f"{100 * value:.1f}%"
