"""What `jaxformer data stats` reports: per objective, how the examples are shaped, and how they pack.

Per objective: examples and their share, tokens per example, the share of its tokens carrying loss,
its part of all loss tokens (LOSS_PLACEMENT moves it), and histograms of prefix lengths; and what each
objective reports of itself (base.Objective.example_stats): span corruption's span counts, span lengths and
masked share, read back from the targets; FIM's PSM/SPM split and middle lengths. Packing: fill and examples
(packed segments, one chunk of a document each) per row, from the real batches (pipeline.get_dataset).
"""

import collections
import dataclasses

import numpy as np
import seqio

from jaxformer import objectives
from jaxformer.data import pipeline
from jaxformer.data.histograms import histogram, length_edges


def example_stats(config: pipeline.DataConfig, vocabulary, num_examples: int, split: str) -> dict:
  """Per objective statistics of the first num_examples preprocessed (unpacked) examples.

  Returns: {objective name: {examples, share, tokens, loss_share (of its tokens), share_of_loss (of
  all loss tokens), prefix_lengths, and what the objective adds (objective.summarize): span corruption's
  span_counts, span_lengths and masked_share; FIM's psm, spm and middle_lengths}}.
  """
  dataset = pipeline.examples_dataset(
    config.mixture_or_task_name, config.task_feature_lengths, split=split, seed=config.seed
  )
  context = objectives.Context(vocabulary.special, objectives.all_settings(), vocabulary)
  rows = collections.defaultdict(lambda: collections.defaultdict(list))
  total = 0
  edges = length_edges(config.length)
  for example in dataset.take(num_examples).as_numpy_iterator():
    objective = objectives.by_id(int(example["objective"]))
    targets, row = example["targets"], rows[objective.name]
    row["tokens"].append(int(targets.size))
    row["loss"].append(int(example["targets_loss"].sum()))
    values = objective.example_stats(example, context)
    # The context the prediction reads: its bidirectional prefix, or what the objective names.
    row["prefix_lengths"].append(int(example["targets_prefix"].sum()) or values.pop("context_length", 0))
    values.pop("context_length", None)
    for key, value in values.items():
      row[key].extend(value) if isinstance(value, list) else row[key].append(value)
    total += 1
  if not total:
    raise ValueError(f"task {config.mixture_or_task_name!r} split {split!r} produced no examples")
  out = {}
  for name, objective in objectives.OBJECTIVES.items():
    if name not in rows:
      continue
    row = rows[name]
    entry = {
      "examples": len(row["tokens"]),
      "share": len(row["tokens"]) / total,
      "tokens": histogram(row["tokens"], edges),
      "loss_share": sum(row["loss"]) / max(sum(row["tokens"]), 1),
      "prefix_lengths": histogram(row["prefix_lengths"], edges),
    }
    entry.update(objective.summarize(row, edges, context.of(name)))
    out[name] = entry
  all_loss = max(sum(sum(rows[name]["loss"]) for name in out), 1)
  for name, entry in out.items():  # with token-level normalisation, each objective's part of the loss
    entry["share_of_loss"] = sum(rows[name]["loss"]) / all_loss
  return out


def packing_stats(config: pipeline.DataConfig, num_batches: int, split: str) -> dict:
  """Fill, examples per row and loss share of num_batches real packed batches (one host's view).

  Returns: {batches, rows, fill, loss_share, examples_per_row: {count: rows}, mean_examples_per_row}.
  """
  dataset = pipeline.get_dataset(config, split=split, shard_info=seqio.ShardInfo(0, 1))
  tokens = nonpad = loss = 0
  per_row = collections.Counter()
  batches = 0
  for batch in dataset.take(num_batches).as_numpy_iterator():
    segments = batch["decoder_segment_ids"]
    tokens += segments.size
    nonpad += int(np.count_nonzero(segments))
    loss += int(batch["decoder_loss_weights"].sum())
    for row in segments:
      per_row[len(set(row.tolist()) - {0})] += 1
    batches += 1
  rows = sum(per_row.values())
  return {
    "batches": batches,
    "rows": rows,
    "fill": nonpad / max(tokens, 1),
    "loss_share": loss / max(tokens, 1),
    "examples_per_row": {str(k): v for k, v in sorted(per_row.items())},
    "mean_examples_per_row": sum(k * v for k, v in per_row.items()) / max(rows, 1),
  }


def data_stats(config: pipeline.DataConfig, vocabulary, num_examples: int = 400, num_batches: int = 8, split="train"):
  """Everything `data stats` reports, as one JSON-ready dict: the settings, per objective, packing.

  Args: config: the data settings (task, length, batch size, seed); vocabulary: the task's;
    num_examples: unpacked examples read; num_batches: packed batches read; split: the task split.
  """
  settings = objectives.all_settings()
  return {
    "task": config.mixture_or_task_name,
    "length": config.length,
    "seed": config.seed,
    "split": split,
    "num_examples": num_examples,
    "settings": {name: dataclasses.asdict(s) for name, s in settings.items() if s is not None},  # gin-bound
    "objectives": example_stats(config, vocabulary, num_examples, split),
    "packing": packing_stats(config, num_batches, split),
  }


def format_table(report: dict) -> str:
  """The report as the text table `data stats` prints."""
  lines = [
    f"task {report['task']}, length {report['length']}, seed {report['seed']}, split {report['split']}: "
    f"{sum(o['examples'] for o in report['objectives'].values())} examples"
  ]
  lines.append(
    f"{'objective':18s} {'examples':>8s} {'share':>6s} {'tokens mean':>11s} {'loss share':>10s} "
    f"{'of all loss':>11s} {'prefix p10/p50/p90':>20s}"
  )
  for name, o in report["objectives"].items():
    p = o["prefix_lengths"]
    lines.append(
      f"{name:18s} {o['examples']:8d} {o['share']:6.1%} {o['tokens']['mean']:11.1f} {o['loss_share']:10.1%} "
      f"{o['share_of_loss']:11.1%} {'/'.join(f'{p[q]:.0f}' for q in ('p10', 'p50', 'p90')):>20s}"
    )
  for name, o in report["objectives"].items():
    lines.extend(objectives.OBJECTIVES[name].describe(o))
  pack = report["packing"]
  per_row = pack["examples_per_row"]
  lines.append(
    f"packing ({pack['batches']} batches, {pack['rows']} rows): fill {pack['fill']:.1%}, loss on "
    f"{pack['loss_share']:.1%} of tokens, examples per row mean {pack['mean_examples_per_row']:.2f} "
    f"({', '.join(f'{k}: {v}' for k, v in per_row.items())})"
  )
  return "\n".join(lines)


def write_png(report: dict, path: str) -> str:
  """Histograms of the report (prefix lengths, examples per row, and each objective's own: span counts and
  lengths, FIM middle lengths) as a PNG at path."""
  import os

  import matplotlib

  matplotlib.use("Agg")  # files only: no display on a training host
  import matplotlib.pyplot as plt

  panels = [p for name, o in report["objectives"].items() for p in objectives.OBJECTIVES[name].plots(o)]
  fig, axes = plt.subplots(1, 2 + len(panels), figsize=(4.5 * (2 + len(panels)), 4))
  for ax, (title, xlabel, ylabel, x, heights) in zip(axes[2:], panels):
    ax.bar(range(len(x)), heights)
    ax.set_xticks(range(len(x)), [str(v) for v in x], rotation=90)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
  edges = length_edges(report["length"])
  for name, o in report["objectives"].items():
    p = o["prefix_lengths"]
    axes[0].plot(range(len(p["counts"])), np.asarray(p["counts"]) / max(p["n"], 1), marker="o", label=name)
  axes[0].set(title="prefix length", xlabel="tokens (bin start)", ylabel="share of examples")
  axes[0].set_xticks(range(len(edges)), [str(e) for e in edges], rotation=90)
  axes[0].legend()
  per_row = report["packing"]["examples_per_row"]
  axes[1].bar([int(k) for k in per_row], list(per_row.values()))
  axes[1].set_xticks([int(k) for k in per_row])
  axes[1].set(title=f"examples per row (fill {report['packing']['fill']:.1%})", xlabel="examples", ylabel="rows")
  fig.suptitle(f"{report['task']}, length {report['length']}")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path
