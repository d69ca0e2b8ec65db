"""The results of a finished sweep (`jaxformer sweep`, sweep.py): results.csv (one row per run, each seed
apart), results.md (per arm: mean and standard deviation over its seeds, and each comparison's verdict)
and results.png (the means, with one standard deviation as error bars).

The verdict of a comparison "metric of `lower` < that of `than` (+ margin)" (docs/LESSONS.md, "How a
verdict is decided"): d = mean(lower) - mean(than) - margin, with a 95% interval from Welch's standard
error sqrt(s_a^2 / n_a + s_b^2 / n_b) and Student's t at min(n_a, n_b) - 1 degrees of freedom (fewer
than Welch's, so the interval is wider, not narrower). "agrees" when the whole interval is below 0,
"disagrees" when it is all above 0, "within noise" otherwise. With one seed on either side the spread
is not measured: the verdict is the sign of d, marked "1 seed"."""

import csv
import io
import math

from jaxformer import fs
from jaxformer.sweep import RESULT_FILE, Sweep, flatten_metrics, format_value, join_path, read_json, seeded

# Student's t, two-sided 95% (0.975 quantile), by degrees of freedom. Between entries the one below is
# used (a larger t: the interval errs wide); 30 and more take 30's.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
T_975.update({15: 2.131, 20: 2.086, 30: 2.042})


def t_975(df: int) -> float:
  return T_975[max(bound for bound in T_975 if bound <= max(df, 1))]


def summarise(values: list[float]) -> dict:
  """{mean, std (sample, n - 1), n} of one metric over an arm's seeds."""
  n = len(values)
  mean = sum(values) / n
  std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
  return {"mean": mean, "std": std, "n": n}


def collect(sweep: Sweep, output_dir: str) -> dict:
  """Reads every finished run; writes results.csv, results.md and results.png into OUTPUT_DIR.

  Returns {"rows": [{run, arm, metric: value, ...}], "arms": [{arm, metric: {mean, std, n}}], "metrics",
  "comparisons", "files"}.
  """
  runs = seeded(sweep)
  records = [(run, read_json(join_path(output_dir, run.name, RESULT_FILE))) for run in runs]
  rows = [{"run": run.name, "arm": run.arm_name, **flatten_metrics(r)} for run, r in records if r]
  metrics = sorted({m for row in rows for m in row if m not in ("run", "arm")})
  arms = []
  for arm in dict.fromkeys(run.arm_name for run in runs):
    mine = [row for row in rows if row["arm"] == arm]
    if mine:
      arms.append({"arm": arm, **{m: summarise([r[m] for r in mine if m in r]) for m in metrics if m in mine[0]}})
  by_arm = {a["arm"]: a for a in arms}
  comparisons = [_compare(c, by_arm) for c in sweep.comparisons]

  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=["run", "arm", *metrics])
  writer.writeheader()
  for row in rows:
    writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
  files = [join_path(output_dir, "results.csv"), join_path(output_dir, "results.md")]
  fs.write(files[0], buffer.getvalue())
  # results.csv keeps the trainer's final/* evals; the table shows the sweep's own, which score every run alike
  shown = [m for m in metrics if not m.startswith("final/")] if sweep.evals else metrics
  fs.write(files[1], results_markdown(arms, shown, comparisons, len(rows), len(runs), sweep.seeds))
  if arms:
    files.append(join_path(output_dir, "results.png"))
    # The sweep's own evals score every run alike; the trainer's final/* ones only when there are none.
    losses = [m for m in metrics if not m.startswith("train/")]
    plotted = [m for m in losses if not m.startswith("final/")] or losses
    _plot(arms, plotted, files[2])
  return {"rows": rows, "arms": arms, "metrics": metrics, "comparisons": comparisons, "files": files}


def _compare(spec: dict, by_arm: dict) -> dict:
  """A claim 'metric of arm `lower` is below that of arm `than` (+ margin)', with its verdict (module
  docstring): the difference of the means, its 95% interval and agrees / disagrees / within noise."""
  for key in ("lesson", "metric", "lower", "than"):
    if key not in spec:
      raise ValueError(f"sweep.define.comparisons: {spec!r} lacks {key!r}")
  out = dict(spec)
  margin = float(spec.get("margin", 0.0))
  a = by_arm.get(spec["lower"], {}).get(spec["metric"])
  b = by_arm.get(spec["than"], {}).get(spec["metric"])
  out.update({"lower_value": a, "than_value": b, "margin": margin, "difference": None, "interval": None})
  if a is None or b is None:
    missing = [arm for arm in (spec["lower"], spec["than"]) if arm in by_arm and spec["metric"] not in by_arm[arm]]
    return {**out, "verdict": f"metric missing for {', '.join(missing)}" if missing else "not run", "agrees": None}
  d = a["mean"] - b["mean"] - margin
  out["difference"] = d
  if min(a["n"], b["n"]) < 2:
    verdict = "agrees (1 seed)" if d < 0 else "disagrees (1 seed)"
    return {**out, "verdict": verdict, "agrees": d < 0}
  half = t_975(min(a["n"], b["n"]) - 1) * math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])
  out["interval"] = (d - half, d + half)
  verdict = "agrees" if d + half < 0 else "disagrees" if d - half > 0 else "within noise"
  return {**out, "verdict": verdict, "agrees": {"agrees": True, "disagrees": False}.get(verdict)}


def _cell(summary: dict, metric: str) -> str:
  if summary["n"] < 2:
    return format_value(metric, summary["mean"])
  return f"{format_value(metric, summary['mean'])} ± {format_value(metric, summary['std'])}"


def results_markdown(arms, metrics, comparisons, finished: int, planned: int, seeds: int) -> str:
  lines = [
    f"{finished} of {planned} runs finished ({seeds} seed{'s' if seeds > 1 else ''} per arm; mean ± standard "
    "deviation over the seeds). Loss in nats per token, on held-out data (`final/*`: the trainer's last eval, "
    "with the run's own objective, shown only when the sweep has no evals of its own; others: `jaxformer eval "
    "loss` with the sweep's eval bindings); pass@1 and exact match: `jaxformer eval humaneval` / `eval infill`, "
    "greedy, by execution in the sandbox; `train/supervised_tokens`: tokens under the training loss.",
    "",
    "| run | seeds | " + " | ".join(metrics) + " |",
    "|---" * (len(metrics) + 2) + "|",
  ]
  for arm in arms:
    n = max((arm[m]["n"] for m in metrics if m in arm), default=0)  # 0: its runs finished without metrics
    lines.append(f"| {arm['arm']} | {n} | " + " | ".join(_cell(arm[m], m) if m in arm else "" for m in metrics) + " |")
  if comparisons:
    lines += [
      "",
      "| lesson | metric | claim | means | difference (95% interval) | verdict |",
      "|---|---|---|---|---|---|",
    ]
    for c in comparisons:
      claim = f"{c['lower']} < {c['than']}" + (f" + {c['margin']:g}" if c["margin"] else "")
      if c["difference"] is None:
        means = difference = "n/a"
      else:
        means = f"{c['lower_value']['mean']:.4f} vs {c['than_value']['mean']:.4f}"
        difference = f"{c['difference']:+.4f}"
        if c["interval"]:
          difference += f" ({c['interval'][0]:+.4f}, {c['interval'][1]:+.4f})"
      lines.append(f"| {c['lesson']} | {c['metric']} | {claim} | {means} | {difference} | {c['verdict']} |")
  return "\n".join(lines) + "\n"


def _is_rate(metric: str) -> bool:
  return "pass@" in metric or "exact_match" in metric


def _plot(arms, metrics, path: str):
  """Bars per arm (the mean over its seeds, one standard deviation as error bars): losses on one panel,
  pass@1 and exact-match rates (code evals) on another."""
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
  wide = min(14, max(6, 0.6 * len(arms) * max(1, len(metrics))))
  fig, axes = plt.subplots(1, len(panels), figsize=(wide * len(panels), 4.5), squeeze=False)
  x = np.arange(len(arms))
  for ax, (group, label) in zip(axes[0], panels):
    width = 0.8 / len(group)
    for j, metric in enumerate(group):
      means = [arm[metric]["mean"] if metric in arm else np.nan for arm in arms]
      spread = [arm[metric]["std"] if metric in arm and arm[metric]["n"] > 1 else 0.0 for arm in arms]
      ax.bar(x + j * width, means, width, yerr=spread, capsize=3, label=metric)
    ax.set_xticks(x + width * (len(group) - 1) / 2, [arm["arm"] for arm in arms], rotation=30, ha="right")
    ax.set_ylabel(label)
    values = [arm[m]["mean"] for arm in arms for m in group if m in arm]
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


def write_report(doc_path: str, sweep_file: str, results: dict) -> str:
  """Puts a collected sweep into a document (`sweep --report`, e.g. docs/LESSONS.md): the text between the
  lines `<!-- results of STEM -->` and `<!-- end of results -->` (STEM: the sweep file's name without .gin)
  becomes results.md, and results.png is copied beside the document as STEM_results.png with a link to it.
  Returns the image's path. Raises ValueError naming the document when it lacks the marker lines."""
  text, start, stop, stem = report_markers(doc_path, sweep_file)
  begin = f"<!-- results of {stem} -->"
  image = join_path(doc_path.rsplit("/", 1)[0] if "/" in doc_path else ".", f"{stem}_results.png")
  with fs.open(results["files"][1]) as f:
    table = f.read()
  block = f"{begin}\n{table}"
  if len(results["files"]) > 2:  # a plot, when any run finished
    with fs.open(results["files"][2], "rb") as f:
      fs.write(image, f.read(), mode="wb")
    block += f"\n![the arms' means, one standard deviation as error bars]({stem}_results.png)\n"
  fs.write(doc_path, text[:start] + block + text[stop:])
  return image if len(results["files"]) > 2 else None


def report_markers(doc_path: str, sweep_file: str) -> tuple[str, int, int, str]:
  """(text, start, stop, STEM) of write_report's block in doc_path; ValueError naming the document when it
  is missing or lacks the marker lines (`sweep --report` checks this before any run starts)."""
  stem = sweep_file.rsplit("/", 1)[-1].removesuffix(".gin")
  begin, end = f"<!-- results of {stem} -->", "<!-- end of results -->"
  if not fs.exists(doc_path):
    raise ValueError(f"--report={doc_path}: no such document")
  with fs.open(doc_path) as f:
    text = f.read()
  start = text.find(begin)
  stop = text.find(end, start)
  if start < 0 or stop < 0:
    raise ValueError(f"{doc_path}: no '{begin}' line followed by '{end}' to put the results between")
  return text, start, stop, stem
