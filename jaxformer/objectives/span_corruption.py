"""CodeGen2's file-level span corruption (docs/DESIGN.md, docs/RECIPE.md):

  corrupted_doc(span k -> <mask_k>) <|endoftext|> <sep> <mask_1> span_1 <eom> ... <mask_K> span_K <eom>

The span count K and the masked tokens are drawn by the laws objectives.SpanCorruption names
(span_laws.py). Its infill prompt is the CodeGen2 model card's: prefix <mask_1> suffix <|endoftext|>
<sep> <mask_1>, ending at <eom>.
"""

import collections

import numpy as np
import tensorflow as tf

from jaxformer.data.histograms import histogram, length_rows, percent_row
from jaxformer.data.pipeline.vocabulary import EOM, SEP, SpecialTokens, mask_piece
from jaxformer.objectives import base
from jaxformer.objectives.span_laws import SpanCorruption, noise_and_spans, random_segmentation


def corrupt(tokens, seed, special: SpecialTokens, config: SpanCorruption):
  """(targets, loss, prefix) of one chunk (n >= 2 tokens, without the document's EOS)."""
  n = tf.size(tokens)
  num_noise, num_spans = noise_and_spans(n, seed, config, min(config.max_spans, special.num_masks))
  num_nonnoise = n - num_noise
  seeds = tf.random.experimental.stateless_split(seed, 2)
  noise_lengths = random_segmentation(num_noise, num_spans, seeds[0])
  # num_spans + 1 gaps; the first and last may be empty so a span can start or end the chunk.
  gap_lengths = random_segmentation(num_nonnoise + 2, num_spans + 1, seeds[1])
  gap_lengths -= tf.one_hot(0, num_spans + 1, dtype=tf.int32) + tf.one_hot(num_spans, num_spans + 1, dtype=tf.int32)

  # Segments interleave as gap_0, span_1, gap_1, ..., span_K, gap_K.
  lengths = tf.concat([tf.reshape(tf.stack([gap_lengths[:-1], noise_lengths], axis=1), [-1]), gap_lengths[-1:]], 0)
  segment_span = tf.reshape(tf.stack([tf.zeros([num_spans], tf.int32), tf.range(1, num_spans + 1)], 1), [-1])
  segment_span = tf.concat([segment_span, [0]], 0)  # 0 for gaps, k for span k
  segment_of_token = tf.repeat(tf.range(2 * num_spans + 1), lengths)
  is_noise = tf.gather(segment_span, segment_of_token) > 0
  # Snap span edges to character starts: a continuation byte takes the noise flag of the token
  # that starts its character. Spans may merge or vanish; they are renumbered below.
  index = tf.range(n)
  first, last = special.continuation
  continues = tf.logical_and(tokens >= first, tokens <= last)
  character = tf.cumsum(tf.cast(tf.logical_not(continues), tf.int32))  # id of each token's character
  character_start = tf.math.unsorted_segment_min(index, character, n + 1)
  is_noise = tf.gather(is_noise, tf.gather(character_start, character))
  starts_segment = tf.logical_and(is_noise, tf.logical_not(tf.concat([[False], is_noise[:-1]], 0)))
  span_of_token = tf.where(is_noise, tf.cumsum(tf.cast(starts_segment, tf.int32)), 0)
  num_spans = tf.reduce_sum(tf.cast(starts_segment, tf.int32))

  mask_table = tf.constant(special.masks, tf.int32)
  with_masks = tf.where(is_noise, tf.gather(mask_table, tf.maximum(span_of_token - 1, 0)), tokens)
  corrupted = tf.boolean_mask(with_masks, tf.logical_or(tf.logical_not(is_noise), starts_segment))
  spans = tf.RaggedTensor.from_value_rowids(
    tf.boolean_mask(tokens, is_noise), tf.boolean_mask(span_of_token, is_noise) - 1, nrows=num_spans, validate=False
  ).with_row_splits_dtype(tf.int64)
  masks = tf.RaggedTensor.from_tensor(tf.gather(mask_table, tf.range(num_spans))[:, None], row_splits_dtype=tf.int64)
  eoms = tf.RaggedTensor.from_tensor(tf.fill([num_spans, 1], special.eom), row_splits_dtype=tf.int64)
  infill = tf.concat([masks, spans, eoms], axis=1).flat_values

  head = tf.concat([corrupted, [special.eos, special.sep]], 0)
  targets = tf.concat([head, infill], 0)
  in_head = tf.concat([tf.ones_like(head), tf.zeros_like(infill)], 0)
  if config.bidirectional_prefix:
    prefix, loss = in_head, 1 - in_head
  else:
    prefix = tf.zeros_like(targets)
    loss = 1 - in_head if config.loss_placement == "infill" else tf.ones_like(targets)
  return targets, loss, prefix


def invert(targets, special: SpecialTokens) -> list[int]:
  """The source tokens of span corruption targets: each span put back in place of its <mask_k>.

  Raises ValueError for targets that are not `corrupted <|endoftext|> <sep> (<mask_k> span <eom>)*`
  with every mask used once.
  """
  targets = [int(t) for t in targets]
  cut = next((i for i in range(len(targets) - 1) if targets[i] == special.eos and targets[i + 1] == special.sep), None)
  if cut is None:
    raise ValueError("span corruption targets without <|endoftext|><sep>")
  corrupted, infill = targets[:cut], targets[cut + 2 :]
  masks, spans, current = set(special.masks), {}, None
  for token in infill:
    if current is None:
      if token not in masks or token in spans:
        raise ValueError(f"infill: expected a new <mask_k>, got id {token}")
      current, spans[token] = token, []
    elif token == special.eom:
      current = None
    else:
      spans[current].append(token)
  restored = []
  for token in corrupted:
    restored.extend(spans.pop(token) if token in spans else [token])
  if spans or current is not None:
    raise ValueError("infill: a span without its <mask_k> in the text, or without its <eom>")
  return restored


def span_structure(targets, special: SpecialTokens) -> tuple[int, list[int]]:
  """Span corruption targets -> (head length through <sep>, span lengths in order).

  Args: targets: int token ids `corrupted <|endoftext|> <sep> <mask_1> span_1 <eom> ...`; special: its tokens.
  Returns: the tokens up to and including <sep>, and one length per <eom> (tokens between <mask_k> and it).
  """
  targets = np.asarray(targets)
  starts = np.flatnonzero((targets[:-1] == special.eos) & (targets[1:] == special.sep))
  if not starts.size:
    raise ValueError("span corruption targets without <|endoftext|><sep>")
  head = int(starts[0]) + 2
  eoms = np.flatnonzero(targets[head:] == special.eom)
  # Each span is <mask_k> span_k <eom>: its length is the distance between <eom>s less the mask.
  previous = np.concatenate([[-1], eoms[:-1]])
  return head, (eoms - previous - 2).tolist()


CODEGEN2_INFILL = base.InfillFormat(
  name="codegen2",
  objective="span_corruption",
  needs=(SEP, EOM, mask_piece(1)),
  build=lambda special, prefix, suffix: (
    prefix + [special.mask_id(1)] + suffix + [special.eos, special.sep] + [special.mask_id(1)]
  ),
  stops=lambda special: (special.eom, special.eos),
  tokens={"sep": SEP, "eom": EOM, "mask": mask_piece(1)},
)


@base.register
class SpanCorruptionObjective(base.Objective):
  name = "span_corruption"
  id = 1
  own_eos = True
  settings_class = SpanCorruption

  def needs(self, settings):
    return (SEP, EOM, mask_piece(1))

  def overhead(self, settings):
    return settings.overhead()

  def check_length(self, settings, feature_length, chunk):
    if chunk < 2 * settings.max_spans:
      raise ValueError(
        f"TASK_FEATURE_LENGTHS['targets']={feature_length} is too short for span corruption with "
        f"objectives.SpanCorruption.max_spans={settings.max_spans} "
        f"(needs at least {settings.overhead() + 2 * settings.max_spans})"
      )

  def trains_bidirectional(self, settings):
    return bool(settings and settings.bidirectional_prefix)

  def apply(self, tokens, seed, context):
    targets, loss, prefix = corrupt(tokens, seed, context.special, context.of(self.name))
    return base.output(targets, loss, prefix, self.id)

  def invert(self, targets, context):
    return invert(targets, context.special)

  def example_stats(self, example, context):
    head, lengths = span_structure(example["targets"], context.special)
    source = example["source"]
    chunk = int(source.size) - int(source.size > 0 and source[-1] == context.special.eos)  # the format drops EOS
    return {
      "span_counts": len(lengths),
      "span_lengths": lengths,
      "masked_share": sum(lengths) / max(chunk, 1),
      "context_length": head,  # the corrupted document the spans are predicted from
    }

  def summarize(self, collected, edges, settings):
    return {
      "loss_placement": settings.loss_placement,
      "span_counts": {str(k): v for k, v in sorted(collections.Counter(collected["span_counts"]).items())},
      "span_lengths": histogram(collected["span_lengths"], edges),
      "masked_share": histogram(collected["masked_share"], edges=[i / 10 for i in range(10)]),
    }

  def describe(self, entry):
    counts = entry["span_counts"]
    keys = list(range(min(int(k) for k in counts), max(int(k) for k in counts) + 1))
    lines = [
      f"span corruption: loss on {entry['loss_placement']!r} (LOSS_PLACEMENT); spans per example "
      f"(% of {entry['examples']} examples)"
    ]
    lines.append("  spans " + " ".join(f"{k:>5d}" for k in keys))
    lines.append("  %     " + " ".join(percent_row(counts, keys)))
    s, m = entry["span_lengths"], entry["masked_share"]
    if s["n"]:
      lines.append(
        f"  span length (tokens): {s['n']} spans, mean {s['mean']:.1f}, p10/p50/p90 "
        f"{s['p10']:.0f}/{s['p50']:.0f}/{s['p90']:.0f}, max {s['max']:.0f}"
      )
      lines.extend(length_rows(s))
    lines.append(
      f"  masked share of the chunk: mean {m['mean']:.1%}, p10/p50/p90 {m['p10']:.1%}/{m['p50']:.1%}/{m['p90']:.1%}"
    )
    return lines

  def plots(self, entry):
    counts = entry["span_counts"]
    return [
      (
        "spans per example",
        "spans",
        "share of span examples",
        [int(k) for k in counts],
        [v / entry["examples"] for v in counts.values()],
      ),
      ("span length", "tokens (bin start)", "spans", entry["span_lengths"]["edges"], entry["span_lengths"]["counts"]),
    ]

  def infill_formats(self, settings):
    return [CODEGEN2_INFILL]
