"""Training objectives as seeded, deterministic TF ops over one chunk of one document.

Each objective turns `tokens` (int32 [n], one chunk of one document) into three aligned
int32 sequences:
  targets         the token sequence the model reads and predicts,
  targets_loss    1 where the loss counts,
  targets_prefix  1 on bidirectional (prefix) tokens,
plus `objective`, the objective's index in the registry OBJECTIVES.

Adding an objective is one function and one `@register` line: it is then a name OBJECTIVE_RATES
accepts, `data show` prints and the mixture draws.

Span corruption is CodeGen2's format (docs/DESIGN.md):
  corrupted_doc(span k -> <mask_k>) <|endoftext|> <sep> <mask_1> span_1 <eom> ... <mask_K> span_K <eom>
The span count K and the masked tokens are drawn by the laws SpanCorruption names (docs/RECIPE.md).
"""

import dataclasses
from collections.abc import Callable

import tensorflow as tf

from jaxformer.objectives.span_laws import (  # noqa: F401 (objectives.SpanCorruption etc. are the public names)
  NUM_SPANS_LAWS,
  SPAN_LENGTH_LAWS,
  SpanCorruption,
  noise_and_spans,
  random_segmentation,
  span_count_pmf,
)


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  eos: int
  sep: int  # -1 where the vocabulary has none (only objectives that need it check: `needs`)
  eom: int
  masks: tuple[int, ...]  # ids of <mask_1>, <mask_2>, ... in that order (CodeGen2's count down)
  # Byte-fallback pieces <0x80>..<0xBF> continue a UTF-8 character: a span never starts or ends
  # inside one, so every span decodes to whole characters. (-1, -2): no such pieces.
  continuation_first: int = -1
  continuation_last: int = -2

  @property
  def num_masks(self) -> int:
    return len(self.masks)

  @classmethod
  def from_vocabulary(cls, vocabulary):
    first = last = None
    tokenizer = getattr(vocabulary, "tokenizer", None)
    if tokenizer is not None and hasattr(tokenizer, "piece_to_id"):
      first, last = tokenizer.piece_to_id("<0x80>"), tokenizer.piece_to_id("<0xBF>")
      if last - first != 0xBF - 0x80 or tokenizer.is_unknown(first):
        first = last = None
    absent = lambda i: -1 if i is None else i
    return cls(
      vocabulary.eos_id,
      absent(getattr(vocabulary, "sep_id", None)),
      absent(getattr(vocabulary, "eom_id", None)),
      tuple(getattr(vocabulary, "mask_ids", ())),
      -1 if first is None else first,
      -2 if last is None else last,
    )


def _output(targets, loss, prefix, objective):
  return {
    "targets": tf.cast(targets, tf.int32),
    "targets_loss": tf.cast(loss, tf.int32),
    "targets_prefix": tf.cast(prefix, tf.int32),
    "objective": tf.constant(objective, tf.int32),
  }


@dataclasses.dataclass(frozen=True)
class Context:
  """What an objective may use besides the tokens and its seed."""

  ids: SpecialIds
  span: SpanCorruption
  loss_placement: str = "infill"


@dataclasses.dataclass(frozen=True)
class Objective:
  """apply(tokens, seed, context) -> {targets, targets_loss, targets_prefix} (int32 [m]).

  overhead(span_config): tokens the objective may add to a chunk. own_eos: the format writes its own
  <|endoftext|>, so it gets the chunk without the document's EOS. bidirectional: trains a prefix.
  """

  name: str
  apply: Callable
  overhead: Callable[[SpanCorruption], int]
  own_eos: bool = False
  bidirectional: bool = False
  needs: tuple[str, ...] = ()  # special tokens (by string) the format writes, besides EOS


OBJECTIVES: dict[str, Objective] = {}


def register(
  name: str, overhead=lambda span: 0, own_eos: bool = False, bidirectional: bool = False, needs: tuple[str, ...] = ()
):
  """Adds the decorated apply function to the registry under `name` (its index: the order added)."""

  def add(apply):
    OBJECTIVES[name] = Objective(name, apply, overhead, own_eos, bidirectional, tuple(needs))
    return apply

  return add


def objective_name(index: int) -> str:
  """The name of the objective whose index the `objective` feature holds."""
  return list(OBJECTIVES)[index]


def _index(name: str) -> int:
  return list(OBJECTIVES).index(name)


def trained_as_prefix_lm(rates: dict | None, bidirectional_span: bool | None = False) -> bool:
  """Whether a run with these OBJECTIVE_RATES trained bidirectional prefixes (sampling then reads the
  prompt as one)."""
  rates = rates or {}
  return bool(bidirectional_span) or any(
    rates.get(name, 0) and objective.bidirectional for name, objective in OBJECTIVES.items()
  )


@register("causal_lm")
def causal_lm(tokens, seed=None, context=None):
  n = tf.size(tokens)
  return _output(tokens, tf.ones([n], tf.int32), tf.zeros([n], tf.int32), _index("causal_lm"))


@register("span_corruption", overhead=lambda span: span.overhead(), own_eos=True, needs=("<sep>", "<eom>", "<mask_1>"))
def span_corruption(tokens, seed, context: Context):
  """CodeGen2 file-level span corruption of one chunk (n >= 2 tokens)."""
  ids, config, loss_placement = context.ids, context.span, context.loss_placement
  n = tf.size(tokens)
  num_noise, num_spans = noise_and_spans(n, seed, config, min(config.max_spans, ids.num_masks))
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
  continues = tf.logical_and(tokens >= ids.continuation_first, tokens <= ids.continuation_last)
  character = tf.cumsum(tf.cast(tf.logical_not(continues), tf.int32))  # id of each token's character
  character_start = tf.math.unsorted_segment_min(index, character, n + 1)
  is_noise = tf.gather(is_noise, tf.gather(character_start, character))
  starts_segment = tf.logical_and(is_noise, tf.logical_not(tf.concat([[False], is_noise[:-1]], 0)))
  span_of_token = tf.where(is_noise, tf.cumsum(tf.cast(starts_segment, tf.int32)), 0)
  num_spans = tf.reduce_sum(tf.cast(starts_segment, tf.int32))

  mask_table = tf.constant(ids.masks, tf.int32)
  with_masks = tf.where(is_noise, tf.gather(mask_table, tf.maximum(span_of_token - 1, 0)), tokens)
  corrupted = tf.boolean_mask(with_masks, tf.logical_or(tf.logical_not(is_noise), starts_segment))
  spans = tf.RaggedTensor.from_value_rowids(
    tf.boolean_mask(tokens, is_noise), tf.boolean_mask(span_of_token, is_noise) - 1, nrows=num_spans, validate=False
  ).with_row_splits_dtype(tf.int64)
  masks = tf.RaggedTensor.from_tensor(tf.gather(mask_table, tf.range(num_spans))[:, None], row_splits_dtype=tf.int64)
  eoms = tf.RaggedTensor.from_tensor(tf.fill([num_spans, 1], ids.eom), row_splits_dtype=tf.int64)
  infill = tf.concat([masks, spans, eoms], axis=1).flat_values

  head = tf.concat([corrupted, [ids.eos, ids.sep]], 0)
  targets = tf.concat([head, infill], 0)
  in_head = tf.concat([tf.ones_like(head), tf.zeros_like(infill)], 0)
  if config.bidirectional_prefix:
    prefix, loss = in_head, 1 - in_head
  else:
    prefix = tf.zeros_like(targets)
    loss = 1 - in_head if loss_placement == "infill" else tf.ones_like(targets)
  return _output(targets, loss, prefix, _index("span_corruption"))


def invert_span_corruption(targets, ids: SpecialIds) -> list[int]:
  """The source tokens of span corruption targets: each span put back in place of its <mask_k>.

  Raises ValueError for targets that are not `corrupted <|endoftext|> <sep> (<mask_k> span <eom>)*`
  with every mask used once.
  """
  targets = [int(t) for t in targets]
  cut = next((i for i in range(len(targets) - 1) if targets[i] == ids.eos and targets[i + 1] == ids.sep), None)
  if cut is None:
    raise ValueError("span corruption targets without <|endoftext|><sep>")
  corrupted, infill = targets[:cut], targets[cut + 2 :]
  masks, spans, current = set(ids.masks), {}, None
  for token in infill:
    if current is None:
      if token not in masks or token in spans:
        raise ValueError(f"infill: expected a new <mask_k>, got id {token}")
      current, spans[token] = token, []
    elif token == ids.eom:
      current = None
    else:
      spans[current].append(token)
  restored = []
  for token in corrupted:
    restored.extend(spans.pop(token) if token in spans else [token])
  if spans or current is not None:
    raise ValueError("infill: a span without its <mask_k> in the text, or without its <eom>")
  return restored


@register("prefix_lm", bidirectional=True)
def prefix_lm(tokens, seed, context=None):
  """A uniform split point p in [1, n-1]: tokens[:p] is a bidirectional prefix without loss."""
  n = tf.size(tokens)
  split = tf.random.stateless_uniform([], seed, minval=1, maxval=tf.maximum(n, 2), dtype=tf.int32)
  prefix = tf.cast(tf.range(n) < split, tf.int32)
  return _output(tokens, 1 - prefix, prefix, _index("prefix_lm"))


# Where span corruption's loss goes (LOSS_PLACEMENT): 'infill' counts only the tokens after <sep>
# (the masks, spans and <eom>s the model will be asked to write), 'sequence' every token, the
# corrupted document too. docs/RECIPE.md, "Loss placement", says why 'infill' is the default.
LOSS_PLACEMENTS = ("infill", "sequence")


def check_loss_placement(placement: str) -> str:
  if placement not in LOSS_PLACEMENTS:
    raise ValueError(
      f"objectives.objective_mixture.loss_placement (LOSS_PLACEMENT) = {placement!r} "
      f"is not one of {list(LOSS_PLACEMENTS)}"
    )
  return placement


def normalized_rates(rates: dict) -> list[float]:
  """Rates in OBJECTIVES order, summing to 1; errors name the OBJECTIVE_RATES macro."""
  unknown = set(rates) - set(OBJECTIVES)
  if unknown:
    raise ValueError(f"OBJECTIVE_RATES names unknown objectives {sorted(unknown)}; known: {list(OBJECTIVES)}")
  values = [float(rates.get(name, 0.0)) for name in OBJECTIVES]
  if any(v < 0 for v in values) or sum(values) <= 0:
    raise ValueError(f"OBJECTIVE_RATES={rates} must be non-negative with a positive sum")
  return [v / sum(values) for v in values]


def chunk_length(feature_length: int, rates: dict, config: SpanCorruption) -> int:
  """Tokens of a document per example, so every objective's output fits the feature length."""
  used = [o for o, rate in zip(OBJECTIVES.values(), normalized_rates(rates)) if rate > 0]
  length = feature_length - max(o.overhead(config) for o in used)
  if "span_corruption" in [o.name for o in used] and length < 2 * config.max_spans:
    raise ValueError(
      f"TASK_FEATURE_LENGTHS['targets']={feature_length} is too short for span corruption with "
      f"objectives.SpanCorruption.max_spans={config.max_spans} "
      f"(needs at least {config.overhead() + 2 * config.max_spans})"
    )
  return length


def check_vocabulary(rates: dict, vocabulary) -> None:
  """Raises ValueError naming each objective in use whose special tokens the vocabulary lacks."""
  problems = []
  for objective, rate in zip(OBJECTIVES.values(), normalized_rates(rates)):
    missing = vocabulary.missing(objective.needs) if rate > 0 and hasattr(vocabulary, "missing") else []
    if missing:
      problems.append(f"objective {objective.name!r} needs {', '.join(missing)}")
  if problems:
    source = getattr(vocabulary, "source", "the task's vocabulary")
    raise ValueError(f"{'; '.join(problems)}: the vocabulary {source} (VOCABULARY) has no such token")


def choose_objective(tokens, seed, rates: list[float], context: Context):
  """Draws one objective by rate (rates in registry order) and applies it; chunks under 2 tokens stay
  causal LM."""
  seeds = tf.random.experimental.stateless_split(seed, 1 + len(OBJECTIVES))
  draw = tf.random.stateless_uniform([], seeds[0])
  index = tf.searchsorted(tf.constant([sum(rates[: i + 1]) for i in range(len(rates) - 1)]), [draw], side="right")[0]
  # A format that writes its own <|endoftext|> gets the chunk without the document's, if it ends it.
  n = tf.size(tokens)
  eos = context.ids.eos
  ends_document = tf.cast(tf.logical_and(n > 0, tf.equal(tokens[tf.maximum(n - 1, 0)], eos)), tf.int32)
  body = tokens[: n - ends_document]
  index = tf.where(tf.size(body) < 2, _index("causal_lm"), tf.cast(index, tf.int32))
  padded_body = tf.concat([body, tf.fill([tf.maximum(0, 2 - tf.size(body))], eos)], 0)
  # Every objective in use is computed and one is picked by index: a tf.switch_case (a stateful Case
  # op) would make the tf.data iterator impossible to checkpoint. One at rate 0 is never picked, and
  # may lack its special tokens: causal LM's output stands in for it.
  causal = causal_lm(tokens)
  candidates = [
    o.apply(padded_body if o.own_eos else tokens, seeds[1 + i], context) if rates[i] > 0 else causal
    for i, o in enumerate(OBJECTIVES.values())
  ]
  out = {
    key: tf.ragged.stack([c[key] for c in candidates])[index] for key in ("targets", "targets_loss", "targets_prefix")
  }
  out["objective"] = index
  return out
