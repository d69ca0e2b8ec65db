"""What `jaxformer data stats` reports: per objective, how the examples are shaped, and how they pack.

Per objective: examples and their share, tokens per example, the share of its tokens carrying loss,
its part of all loss tokens (LOSS_PLACEMENT moves it), and histograms of prefix lengths; for span
corruption also the span counts, span lengths and the masked share of the chunk, read back from the
targets (<eom> ids after <sep>). Packing: fill and examples
(packed segments, one chunk of a document each) per row, from the real batches (pipeline.get_dataset).
"""

import collections
import dataclasses
import math

import gin
import numpy as np
import seqio

from jaxformer import objectives
from jaxformer.data import pipeline

SPAN = "span_corruption"


def span_structure(targets, ids: objectives.SpecialIds) -> tuple[int, list[int]]:
  """Span corruption targets -> (head length through <sep>, span lengths in order).

  Args: targets: int token ids `corrupted <|endoftext|> <sep> <mask_1> span_1 <eom> ...`; ids: special ids.
  Returns: the tokens up to and including <sep>, and one length per <eom> (tokens between <mask_k> and it).
  """
  targets = np.asarray(targets)
  starts = np.flatnonzero((targets[:-1] == ids.eos) & (targets[1:] == ids.sep))
  if not starts.size:
    raise ValueError("span corruption targets without <|endoftext|><sep>")
  head = int(starts[0]) + 2
  eoms = np.flatnonzero(targets[head:] == ids.eom)
  # Each span is <mask_k> span_k <eom>: its length is the distance between <eom>s less the mask.
  previous = np.concatenate([[-1], eoms[:-1]])
  return head, (eoms - previous - 2).tolist()


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


def example_stats(config: pipeline.DataConfig, ids: objectives.SpecialIds, num_examples: int, split: str) -> dict:
  """Per objective statistics of the first num_examples preprocessed (unpacked) examples.

  Returns: {objective name: {examples, share, tokens, loss_share (of its tokens), share_of_loss (of
  all loss tokens), prefix_lengths, and for span
  corruption span_counts ({count: examples}), span_lengths, masked_share}}.
  """
  dataset = pipeline.examples_dataset(
    config.mixture_or_task_name, config.task_feature_lengths, split=split, seed=config.seed
  )
  rows = collections.defaultdict(lambda: collections.defaultdict(list))
  total = 0
  edges = length_edges(config.length)
  for example in dataset.take(num_examples).as_numpy_iterator():
    name = objectives.objective_name(int(example["objective"]))
    targets, row = example["targets"], rows[name]
    row["tokens"].append(int(targets.size))
    row["loss"].append(int(example["targets_loss"].sum()))
    prefix = int(example["targets_prefix"].sum())
    if name == SPAN:
      head, lengths = span_structure(targets, ids)
      row["span_counts"].append(len(lengths))
      row["span_lengths"].extend(lengths)
      source = example["source"]
      chunk = int(source.size) - int(source.size > 0 and source[-1] == ids.eos)  # the format drops the EOS
      row["masked_share"].append(sum(lengths) / max(chunk, 1))
      prefix = prefix or head  # the corrupted document the spans are predicted from
    row["prefix_lengths"].append(prefix)
    total += 1
  if not total:
    raise ValueError(f"task {config.mixture_or_task_name!r} split {split!r} produced no examples")
  out = {}
  for name in objectives.OBJECTIVES:
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
    if name == SPAN:
      entry["span_counts"] = {str(k): v for k, v in sorted(collections.Counter(row["span_counts"]).items())}
      entry["span_lengths"] = histogram(row["span_lengths"], edges)
      entry["masked_share"] = histogram(row["masked_share"], edges=[i / 10 for i in range(10)])
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
  ids = objectives.SpecialIds.from_vocabulary(vocabulary)
  return {
    "task": config.mixture_or_task_name,
    "length": config.length,
    "seed": config.seed,
    "split": split,
    "num_examples": num_examples,
    "span_corruption": dataclasses.asdict(objectives.SpanCorruption()),  # with the gin bindings
    "loss_placement": gin.get_bindings("objectives.objective_mixture").get("loss_placement", "infill"),
    "objectives": example_stats(config, ids, num_examples, split),
    "packing": packing_stats(config, num_batches, split),
  }


def _percent_row(counts: dict, keys) -> list[str]:
  total = max(sum(counts.values()), 1)
  return [f"{100 * counts.get(str(k), 0) / total:5.1f}" for k in keys]


def _bin_label(edges, i: int) -> str:
  """Integer bin i of a histogram as 'a', 'a-b' or '>=a'."""
  if i + 1 == len(edges):
    return f">={edges[i]}"
  return str(edges[i]) if edges[i + 1] - edges[i] == 1 else f"{edges[i]}-{edges[i + 1] - 1}"


def format_table(report: dict) -> str:
  """The report as the text table `data stats` prints."""
  lines = [
    f"task {report['task']}, length {report['length']}, seed {report['seed']}, split {report['split']}: "
    f"{sum(o['examples'] for o in report['objectives'].values())} examples, span corruption's loss on "
    f"{report['loss_placement']!r} (LOSS_PLACEMENT)"
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
  span = report["objectives"].get(SPAN)
  if span:
    counts = span["span_counts"]
    top = max(int(k) for k in counts)
    keys = list(range(min(int(k) for k in counts), top + 1))
    lines.append(f"span corruption: spans per example (% of {span['examples']} examples)")
    lines.append("  spans " + " ".join(f"{k:>5d}" for k in keys))
    lines.append("  %     " + " ".join(_percent_row(counts, keys)))
    s, m = span["span_lengths"], span["masked_share"]
    if s["n"]:
      lines.append(
        f"  span length (tokens): {s['n']} spans, mean {s['mean']:.1f}, p10/p50/p90 "
        f"{s['p10']:.0f}/{s['p50']:.0f}/{s['p90']:.0f}, max {s['max']:.0f}"
      )
      edges, first = s["edges"], next(i for i, c in enumerate(s["counts"]) if c)  # no span is empty
      labels = [_bin_label(edges, i) for i in range(first, len(edges))]
      lines.append("  length " + " ".join(f"{label:>7s}" for label in labels))
      lines.append("  %      " + " ".join(f"{100 * c / s['n']:7.1f}" for c in s["counts"][first:]))
    lines.append(
      f"  masked share of the chunk: mean {m['mean']:.1%}, p10/p50/p90 {m['p10']:.1%}/{m['p50']:.1%}/{m['p90']:.1%}"
    )
  pack = report["packing"]
  per_row = pack["examples_per_row"]
  lines.append(
    f"packing ({pack['batches']} batches, {pack['rows']} rows): fill {pack['fill']:.1%}, loss on "
    f"{pack['loss_share']:.1%} of tokens, examples per row mean {pack['mean_examples_per_row']:.2f} "
    f"({', '.join(f'{k}: {v}' for k, v in per_row.items())})"
  )
  return "\n".join(lines)


def write_png(report: dict, path: str) -> str:
  """Histograms of the report (span counts, span lengths, prefix lengths, examples per row) as a PNG at path."""
  import os

  import matplotlib

  matplotlib.use("Agg")  # files only: no display on a training host
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 4, figsize=(18, 4))
  span = report["objectives"].get(SPAN)
  if span:
    counts = span["span_counts"]
    axes[0].bar([int(k) for k in counts], [v / span["examples"] for v in counts.values()])
    axes[1].bar(range(len(span["span_lengths"]["counts"])), span["span_lengths"]["counts"])
  axes[0].set(title="spans per example", xlabel="spans", ylabel="share of span examples")
  axes[1].set(title="span length", xlabel="tokens (bin start)", ylabel="spans")
  for name, o in report["objectives"].items():
    p = o["prefix_lengths"]
    axes[2].plot(range(len(p["counts"])), np.asarray(p["counts"]) / max(p["n"], 1), marker="o", label=name)
  axes[2].set(title="prefix length", xlabel="tokens (bin start)", ylabel="share of examples")
  axes[2].legend()
  edges = length_edges(report["length"])
  for ax in axes[1:3]:
    ax.set_xticks(range(len(edges)), [str(e) for e in edges], rotation=90)
  per_row = report["packing"]["examples_per_row"]
  axes[3].bar([int(k) for k in per_row], list(per_row.values()))
  axes[3].set_xticks([int(k) for k in per_row])
  axes[3].set(title=f"examples per row (fill {report['packing']['fill']:.1%})", xlabel="examples", ylabel="rows")
  fig.suptitle(f"{report['task']}, length {report['length']}")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path
