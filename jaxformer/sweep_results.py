"""The results of a finished sweep (`jaxformer sweep`, sweep.py): results.csv, results.md with the sweep's
comparisons checked, and results.png (losses on one panel, pass@1 and exact match on another)."""

import csv
import io

from jaxformer import fs
from jaxformer.sweep import RESULT_FILE, Sweep, expand, flatten_metrics, join_path, read_json


def collect(sweep: Sweep, output_dir: str) -> dict:
  """Reads every finished run; writes results.csv, results.md and results.png into OUTPUT_DIR.

  Returns {"rows": [{name, metric: loss, ...}], "metrics": [...], "comparisons": [...], "files": [...]}.
  """
  runs = expand(sweep)
  records = [r for r in (read_json(join_path(output_dir, run.name, RESULT_FILE)) for run in runs) if r]
  rows = [{"run": r["name"], **flatten_metrics(r)} for r in records]
  metrics = sorted({m for row in rows for m in row if m != "run"})
  by_run = {row["run"]: row for row in rows}
  comparisons = [_compare(c, by_run) for c in sweep.comparisons]

  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=["run", *metrics])
  writer.writeheader()
  for row in rows:
    writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
  files = [join_path(output_dir, "results.csv"), join_path(output_dir, "results.md")]
  fs.write(files[0], buffer.getvalue())
  fs.write(files[1], results_markdown(rows, metrics, comparisons, len(runs)))
  if rows:
    files.append(join_path(output_dir, "results.png"))
    # The sweep's own evals score every run alike; the trainer's final/* ones only when there are none.
    plotted = [m for m in metrics if not m.startswith("final/")] or metrics
    _plot(rows, plotted, files[2])
  return {"rows": rows, "metrics": metrics, "comparisons": comparisons, "files": files}


def _compare(spec: dict, by_run: dict) -> dict:
  """A claim 'metric of run `lower` is below that of run `than` (+ margin)', checked on the results."""
  for key in ("lesson", "metric", "lower", "than"):
    if key not in spec:
      raise ValueError(f"sweep.define.comparisons: {spec!r} lacks {key!r}")
  out = dict(spec)
  margin = float(spec.get("margin", 0.0))
  a = by_run.get(spec["lower"], {}).get(spec["metric"])
  b = by_run.get(spec["than"], {}).get(spec["metric"])
  out.update(
    {
      "lower_value": a,
      "than_value": b,
      "margin": margin,
      "agrees": None if a is None or b is None else bool(a < b + margin),
    }
  )
  return out


def results_markdown(rows, metrics, comparisons, planned: int) -> str:
  lines = [
    f"{len(rows)} of {planned} runs finished. Loss in nats per token, on held-out data "
    "(`final/*`: the trainer's last eval, with the run's own objective; others: `jaxformer eval loss` "
    "with the sweep's eval bindings); pass@1 and exact match: `jaxformer eval humaneval` / `eval infill`, "
    "greedy, by execution in the sandbox.",
    "",
    "| run | " + " | ".join(metrics) + " |",
    "|---" * (len(metrics) + 1) + "|",
  ]
  for row in rows:
    lines.append(f"| {row['run']} | " + " | ".join(f"{row[m]:.4f}" if m in row else "" for m in metrics) + " |")
  if comparisons:
    lines += ["", "| lesson | metric | claim | values | agrees |", "|---|---|---|---|---|"]
    for c in comparisons:
      claim = f"{c['lower']} < {c['than']}" + (f" + {c['margin']:g}" if c["margin"] else "")
      values = "n/a" if c["agrees"] is None else f"{c['lower_value']:.4f} vs {c['than_value']:.4f}"
      agrees = {None: "not run", True: "yes", False: "no"}[c["agrees"]]
      lines.append(f"| {c['lesson']} | {c['metric']} | {claim} | {values} | {agrees} |")
  return "\n".join(lines) + "\n"


def _is_rate(metric: str) -> bool:
  return "pass@" in metric or "exact_match" in metric


def _plot(rows, metrics, path: str):
  """Bars per run: losses on one panel, pass@1 and exact-match rates (code evals) on another."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  panels = [
    (group, label)
    for group, label in (
      ([m for m in metrics if not _is_rate(m)], "held-out loss (nats/token)"),
      ([m for m in metrics if _is_rate(m)], "pass@1 / exact match"),
    )
    if group
  ]
  wide = min(14, max(6, 0.6 * len(rows) * max(1, len(metrics))))
  fig, axes = plt.subplots(1, len(panels), figsize=(wide * len(panels), 4.5), squeeze=False)
  x = np.arange(len(rows))
  for ax, (group, label) in zip(axes[0], panels):
    width = 0.8 / len(group)
    for j, metric in enumerate(group):
      ax.bar(x + j * width, [row.get(metric, np.nan) for row in rows], width, label=metric)
    ax.set_xticks(x + width * (len(group) - 1) / 2, [row["run"] for row in rows], rotation=30, ha="right")
    ax.set_ylabel(label)
    values = [row[m] for row in rows for m in group if m in row]
    if not _is_rate(group[0]):
      ax.set_ylim(min(values) * 0.95, max(values) * 1.02)
    else:
      ax.set_ylim(0, max(max(values) * 1.1, 0.05))
    ax.legend(fontsize=7)
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=110)
  plt.close(fig)
  fs.write(path, buffer.getvalue(), mode="wb")
