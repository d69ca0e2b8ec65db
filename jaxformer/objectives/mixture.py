"""The objective mixture as a seqio preprocessor: each document gets its EOS, is cut into chunks that every
objective's output fits, and each chunk gets one objective drawn by OBJECTIVE_RATES.

Every function here that tf.data traces is plain tf ops (see data/pipeline/preprocessors.py).
"""

import gin
import seqio
import tensorflow as tf

from jaxformer import objectives
from jaxformer.data.pipeline.preprocessors import split_tokens


@gin.configurable(module="objectives")
def objective_mixture(
  dataset,
  sequence_length,
  output_features,
  rates=None,
  loss_placement: str = "infill",
  span_corruption: objectives.SpanCorruption | None = None,
):
  """Appends EOS to each document, chunks it to fit, and applies one objective per chunk.

  Args (gin: objectives.objective_mixture.*):
    rates: {objective name: rate}, normally the macro OBJECTIVE_RATES; default causal LM only.
    loss_placement: span corruption's loss on the infill targets after <sep> ('infill') or on the
      whole sequence ('sequence'); normally the macro LOSS_PLACEMENT.
    span_corruption: the SpanCorruption settings (default SpanCorruption()).
  """
  rates = {"causal_lm": 1.0} if rates is None else dict(rates)
  span_corruption = span_corruption or objectives.SpanCorruption()
  normalized = objectives.normalized_rates(rates)
  if not sequence_length or "targets" not in sequence_length:
    raise ValueError("objective_mixture needs TASK_FEATURE_LENGTHS with a 'targets' length")
  chunk = objectives.chunk_length(sequence_length["targets"], rates, span_corruption)
  vocabulary = output_features["targets"].vocabulary
  objectives.check_vocabulary(rates, vocabulary)
  ids = objectives.SpecialIds.from_vocabulary(vocabulary)
  context = objectives.Context(ids, span_corruption, objectives.check_loss_placement(loss_placement))

  plain = tf.autograph.experimental.do_not_convert
  dataset = dataset.filter(plain(lambda ex: tf.size(ex["targets"]) > 0))
  dataset = dataset.map(
    plain(lambda ex: {"targets": tf.concat([ex["targets"], [context.ids.eos]], 0)}), num_parallel_calls=tf.data.AUTOTUNE
  )
  dataset = split_tokens(dataset, chunk)

  @seqio.map_over_dataset(num_seeds=1)
  @plain
  def apply(example, seed):
    out = objectives.choose_objective(example["targets"], seed, normalized, context)
    out["source"] = example["targets"]
    return out

  return apply(dataset)
