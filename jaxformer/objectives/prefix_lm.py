"""Prefix-LM: a uniform split point p in [1, n-1]; tokens[:p] is a bidirectional prefix without loss."""

import tensorflow as tf

from jaxformer.objectives import base


@base.register
class PrefixLM(base.Objective):
  name = "prefix_lm"
  id = 2
  bidirectional = True

  def apply(self, tokens, seed, context=None):
    n = tf.size(tokens)
    split = tf.random.stateless_uniform([], seed, minval=1, maxval=tf.maximum(n, 2), dtype=tf.int32)
    prefix = tf.cast(tf.range(n) < split, tf.int32)
    return base.output(tokens, 1 - prefix, prefix, self.id)
