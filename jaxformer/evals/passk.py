"""The unbiased pass@k estimator (Chen et al., 2021)."""

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
  """1 - C(n - c, k) / C(n, k): the chance that k of n samples (c correct) include a correct one."""
  if k > n:
    raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
  if n - c < k:
    return 1.0
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(counts: list[tuple[int, int]], ks) -> dict:
  """{'pass@k': mean over problems} for (n, c) per problem, for each k not above the smallest n."""
  smallest = min(n for n, _ in counts)
  return {f"pass@{k}": float(np.mean([pass_at_k(n, c, k) for n, c in counts])) for k in ks if k <= smallest}
