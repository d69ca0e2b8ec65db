"""The objective mixture as a seqio preprocessor: each document gets its EOS, is cut into chunks that every
objective's output fits, and each chunk gets one objective drawn by OBJECTIVE_RATES.

Every function here that tf.data traces is plain tf ops (see data/pipeline/preprocessors.py).
"""

import gin
import seqio
import tensorflow as tf

from jaxformer.data.pipeline.preprocessors import split_tokens
from jaxformer.objectives.base import OBJECTIVES, Context
from jaxformer.objectives.causal import causal_output

DEFAULT_RATES = {"causal_lm": 1.0}


def normalized_rates(rates: dict) -> list[float]:
  """Rates in OBJECTIVES order, summing to 1; errors name the OBJECTIVE_RATES macro."""
  unknown = set(rates) - set(OBJECTIVES)
  if unknown:
    raise ValueError(f"OBJECTIVE_RATES names unknown objectives {sorted(unknown)}; known: {list(OBJECTIVES)}")
  values = [rates.get(name, 0.0) for name in OBJECTIVES]
  if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in values) or sum(values) <= 0:
    raise ValueError(f"OBJECTIVE_RATES={rates} must be non-negative numbers with a positive sum")
  return [float(v) / sum(values) for v in values]


def objective_settings(rates: dict) -> dict:
  """{name: settings (gin-bound) or None} of each objective OBJECTIVE_RATES uses."""
  return {o.name: o.settings() for o, rate in zip(OBJECTIVES.values(), normalized_rates(rates)) if rate > 0}


def all_settings() -> dict:
  """{name: settings} of every objective, with the gin bindings (what reports invert examples with)."""
  return {o.name: o.settings() for o in OBJECTIVES.values()}


def chunk_length(feature_length: int, rates: dict, settings: dict) -> int:
  """Tokens of a document per example, so every objective's output fits the feature length."""
  used = [OBJECTIVES[name] for name in settings]
  length = feature_length - max(o.overhead(settings[o.name]) for o in used)
  for o in used:
    o.check_length(settings[o.name], feature_length, length)
  return length


def check_vocabulary(rates: dict, vocabulary, settings: dict | None = None) -> None:
  """Raises ValueError naming each objective in use whose special tokens the vocabulary lacks."""
  settings = objective_settings(rates) if settings is None else settings
  special = getattr(vocabulary, "special", None)
  problems = []
  for name, values in settings.items():
    needs = OBJECTIVES[name].needs(values)
    missing = list(needs) if special is None else special.missing(needs)
    if missing:
      problems.append(f"objective {name!r} needs {', '.join(missing)}")
  if problems:
    source = getattr(vocabulary, "source", None) or getattr(special, "source", "the task's vocabulary")
    raise ValueError(
      f"{'; '.join(problems)}: the vocabulary {source} (VOCABULARY) has no such token"
      " (`jaxformer data train-tokenizer` adds the sentinels objectives.FIM.spelling names)"
    )


def choose_objective(tokens, seed, rates: list[float], context: Context):
  """Draws one objective by rate (rates in OBJECTIVES order) and applies it; chunks under 2 tokens stay
  causal LM."""
  seeds = tf.random.experimental.stateless_split(seed, 1 + len(OBJECTIVES))
  draw = tf.random.stateless_uniform([], seeds[0])
  index = tf.searchsorted(tf.constant([sum(rates[: i + 1]) for i in range(len(rates) - 1)]), [draw], side="right")[0]
  # A format that writes its own <|endoftext|> gets the chunk without the document's, if it ends it.
  n = tf.size(tokens)
  eos = context.special.eos
  ends_document = tf.cast(tf.logical_and(n > 0, tf.equal(tokens[tf.maximum(n - 1, 0)], eos)), tf.int32)
  body = tokens[: n - ends_document]
  causal_index = list(OBJECTIVES).index("causal_lm")
  index = tf.where(tf.size(body) < 2, causal_index, tf.cast(index, tf.int32))
  padded_body = tf.concat([body, tf.fill([tf.maximum(0, 2 - tf.size(body))], eos)], 0)
  # Every objective in use is computed and one is picked by index: a tf.switch_case (a stateful Case
  # op) would make the tf.data iterator impossible to checkpoint. One at rate 0 is never picked, and
  # may lack its special tokens: causal LM's output stands in for it.
  causal = causal_output(tokens)
  candidates = [
    o.apply(padded_body if o.own_eos else tokens, seeds[1 + i], context) if rates[i] > 0 else causal
    for i, o in enumerate(OBJECTIVES.values())
  ]
  out = {key: tf.ragged.stack([c[key] for c in candidates])[index] for key in candidates[0]}
  return out


@gin.configurable(module="objectives")
def objective_mixture(dataset, sequence_length, output_features, rates=None):
  """Appends EOS to each document, chunks it to fit, and applies one objective per chunk.

  Args (gin: objectives.objective_mixture.*):
    rates: {objective name: rate}, normally the macro OBJECTIVE_RATES; default causal LM only. Each
      objective in use reads its own settings (objectives.SpanCorruption.*, objectives.FIM.*).
  """
  rates = dict(DEFAULT_RATES if rates is None else rates)
  normalized = normalized_rates(rates)
  if not sequence_length or "targets" not in sequence_length:
    raise ValueError("objective_mixture needs TASK_FEATURE_LENGTHS with a 'targets' length")
  settings = objective_settings(rates)
  chunk = chunk_length(sequence_length["targets"], rates, settings)
  vocabulary = output_features["targets"].vocabulary
  check_vocabulary(rates, vocabulary, settings)
  context = Context(vocabulary.special, settings, vocabulary)

  plain = tf.autograph.experimental.do_not_convert
  dataset = dataset.filter(plain(lambda ex: tf.size(ex["targets"]) > 0))
  dataset = dataset.map(
    plain(lambda ex: {"targets": tf.concat([ex["targets"], [context.special.eos]], 0)}),
    num_parallel_calls=tf.data.AUTOTUNE,
  )
  dataset = split_tokens(dataset, chunk)

  @seqio.map_over_dataset(num_seeds=1)
  @plain
  def apply(example, seed):
    out = choose_objective(example["targets"], seed, normalized, context)
    out["source"] = example["targets"]
    return out

  return apply(dataset)
