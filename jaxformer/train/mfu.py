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


# HBM bandwidth per chip in bytes/s, as Google Cloud's TPU pages publish it ("HBM bandwidth per chip"
# or "HBM2 capacity and bandwidth"): cloud.google.com/tpu/docs/v4 (1200 GBps), /v5e (819 GBps),
# /v5p (2765 GBps), /v6e (1638 GBps). plan's compiler roofline divides XLA's bytes accessed by it.
HBM_BANDWIDTH = {
  "tpu v4": 1200e9,
  "tpu v5 lite": 819e9,  # v5e
  "tpu v5e": 819e9,
  "tpu v5p": 2765e9,
  "tpu v5": 2765e9,
  "tpu v6 lite": 1638e9,  # v6e (Trillium)
  "tpu v6e": 1638e9,
}


def _by_kind(table: dict, device_kind: str) -> float | None:
  kind = device_kind.lower()
  for name in sorted(table, key=len, reverse=True):
    if name in kind:
      return table[name]
  return None


def peak_flops(device_kind: str) -> float | None:
  """Peak FLOP/s of one device by its jax device_kind; None where unknown (CPU)."""
  return _by_kind(PEAK_FLOPS, device_kind)


def hbm_bandwidth(device_kind: str) -> float | None:
  """HBM bytes/s of one TPU chip by its jax device_kind; None where unknown (CPU, GPUs)."""
  return _by_kind(HBM_BANDWIDTH, device_kind)


def mfu(tokens_per_second: float, flops_per_token: float, num_devices: int, device_kind: str) -> float | None:
  peak = peak_flops(device_kind)
  if peak is None:
    return None
  return tokens_per_second * flops_per_token / (num_devices * peak)


def format_mfu(value: float | None) -> str:
  return "n/a" if value is None else f"{100 * value:.1f}%"
