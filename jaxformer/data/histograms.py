"""Histograms and their text rows, for what `data stats` reports of every objective."""

import math

import numpy as np


def length_edges(length: int) -> list[int]:
  """Bin starts for token counts up to length: 0, then powers of two (the same bins for every objective)."""
  return [0] + [2**i for i in range(max(1, math.ceil(math.log2(length))) + 1)]


def histogram(values, edges) -> dict:
  """Counts of values in [edges[i], edges[i+1]) (the last bin open-ended), with a summary.

  Args: values: numbers; edges: increasing bin starts.
  Returns: {edges, counts, n, mean, p10, p50, p90, max} (the statistics None when values is empty).
  """
  values = np.asarray(list(values), dtype=np.float64)
  counts = np.histogram(values, bins=list(edges) + [np.inf])[0] if values.size else np.zeros(len(edges), int)
  summary = {"edges": list(edges), "counts": [int(c) for c in counts], "n": int(values.size)}
  statistics = {"mean": np.mean, "p10": lambda v: np.percentile(v, 10), "p50": np.median}
  statistics.update({"p90": lambda v: np.percentile(v, 90), "max": np.max})
  return {**summary, **{name: float(fn(values)) if values.size else None for name, fn in statistics.items()}}


def percent_row(counts: dict, keys) -> list[str]:
  """Each key's share of all counts ({str(key): count}), as 5-wide percentages."""
  total = max(sum(counts.values()), 1)
  return [f"{100 * counts.get(str(k), 0) / total:5.1f}" for k in keys]


def bin_label(edges, i: int) -> str:
  """Integer bin i of a histogram as 'a', 'a-b' or '>=a'."""
  if i + 1 == len(edges):
    return f">={edges[i]}"
  return str(edges[i]) if edges[i + 1] - edges[i] == 1 else f"{edges[i]}-{edges[i + 1] - 1}"


def length_rows(h: dict, indent: str = "  ") -> list[str]:
  """Two text rows of a token-length histogram from its first non-empty bin: the bins, their shares."""
  if not h["n"]:
    return []
  edges, first = h["edges"], next(i for i, c in enumerate(h["counts"]) if c)
  labels = [bin_label(edges, i) for i in range(first, len(edges))]
  return [
    f"{indent}length " + " ".join(f"{label:>7s}" for label in labels),
    f"{indent}%      " + " ".join(f"{100 * c / h['n']:7.1f}" for c in h["counts"][first:]),
  ]
