"""Causal LM: the chunk as it is, loss on every token (CodeGen1's objective; what other objectives'
chunks fall back to when too short for them)."""

import tensorflow as tf

from jaxformer.objectives import base


def causal_output(tokens, objective_id: int = 0) -> dict:
  n = tf.size(tokens)
  return base.output(tokens, tf.ones([n], tf.int32), tf.zeros([n], tf.int32), objective_id)


@base.register
class CausalLM(base.Objective):
  name = "causal_lm"
  id = 0

  def apply(self, tokens, seed=None, context=None):
    return causal_output(tokens, self.id)
