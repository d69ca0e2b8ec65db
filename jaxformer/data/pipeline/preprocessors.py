"""seqio preprocessors before the objectives: document text (sentinels escaped) and chunking.

Every function here that tf.data traces is plain tf ops, branching only on Python values (settings),
so it is marked `do_not_convert`: AutoGraph's conversion cost seconds at each pipeline start (every
train, eval and bench process) and changed nothing. A function that needs tensor-dependent control
flow must use tf.cond / tf.while_loop, or drop the mark.
"""

import seqio
import tensorflow as tf

from jaxformer.data.pipeline.vocabulary import escape_sentinels


@seqio.map_over_dataset
@tf.autograph.experimental.do_not_convert
def text_to_targets(example, text_key: str = "text"):
  """Keeps the document text (sentinel strings escaped) as the feature seqio tokenizes."""
  return {"targets": escape_sentinels(example[text_key])}


def split_tokens(dataset, max_tokens: int):
  """Cuts each example's `targets` into pieces of at most max_tokens (seqio 0.0.20 has no split_tokens)."""

  @tf.autograph.experimental.do_not_convert
  def split(example):
    tokens = example["targets"]
    n = tf.size(tokens)
    pieces = tf.maximum(1, (n + max_tokens - 1) // max_tokens)
    lengths = tf.concat([tf.fill([pieces - 1], max_tokens), [n - (pieces - 1) * max_tokens]], 0)
    return tf.data.Dataset.from_tensor_slices({"targets": tf.RaggedTensor.from_row_lengths(tokens, lengths)})

  return dataset.flat_map(split)
