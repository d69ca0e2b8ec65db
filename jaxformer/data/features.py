"""Task features -> the model's batch features (names fixed in docs/DESIGN.md), with packing.

decoder_target_tokens     the tokens to predict
decoder_input_tokens      targets shifted right per packed segment (0 = BOS)
decoder_loss_weights      1 where the loss counts (never on padding)
decoder_segment_ids       packed-document ids, 0 on padding
decoder_positions         position inside each packed document
decoder_causal_attention  1 on bidirectional (prefix) input positions, as seqio's prefix-LM:
                          a prefix of p targets covers input positions 0..p.
"""

import seqio
import tensorflow as tf

from jaxformer.data.feature_names import MODEL_FEATURE_NAMES

TASK_FEATURE_NAMES = ("targets", "targets_loss", "targets_prefix")
FLAG_FEATURES = ("targets_loss", "targets_prefix")


class PrefixLMObjectiveConverter(seqio.FeatureConverter):
  """Packs (targets, targets_loss, targets_prefix) examples into decoder batches."""

  TASK_FEATURES = {name: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32) for name in TASK_FEATURE_NAMES}
  MODEL_FEATURES = {
    name: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
    for name in ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights", "decoder_causal_attention")
  }
  PACKING_FEATURE_DTYPES = {"decoder_segment_ids": tf.int32, "decoder_positions": tf.int32}

  def _convert_features(self, ds, task_feature_lengths):
    # seqio's packer measures each feature by its non-zero entries, so 0/1 flags would be cut
    # short: carry them as 1/2 through packing and shift them back after.
    # (Other task features, e.g. `objective` for `data show`, are dropped here.)
    ds = ds.map(
      lambda ex: {"targets": ex["targets"], **{k: ex[k] + 1 for k in FLAG_FEATURES}},
      num_parallel_calls=tf.data.AUTOTUNE,
    )
    ds = self._pack_or_pad(ds, task_feature_lengths)
    pack = self.pack

    def convert(example):
      targets = example["targets"]
      flags = {k: tf.maximum(example[k] - 1, 0) for k in FLAG_FEATURES}
      segment_ids = example["targets_segment_ids"] if pack else None
      inputs = seqio.utils.make_autoregressive_inputs(targets, sequence_id=segment_ids, bos_id=self.bos_id)
      prefix = flags["targets_prefix"]
      shifted_prefix = seqio.utils.make_autoregressive_inputs(prefix, sequence_id=segment_ids, bos_id=0)
      out = {
        "decoder_target_tokens": targets,
        "decoder_input_tokens": inputs,
        "decoder_loss_weights": flags["targets_loss"] * tf.cast(targets != 0, tf.int32),
        "decoder_causal_attention": tf.maximum(prefix, shifted_prefix),
      }
      if pack:
        out["decoder_segment_ids"] = segment_ids
        out["decoder_positions"] = example["targets_positions"]
      else:
        nonpad = tf.cast(targets != 0, tf.int32)
        out["decoder_segment_ids"] = nonpad
        out["decoder_positions"] = tf.range(tf.size(targets)) * nonpad
      return out

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

  def get_model_feature_lengths(self, task_feature_lengths):
    length = task_feature_lengths["targets"]
    return {name: length for name in MODEL_FEATURE_NAMES}


def expand_lengths(task_feature_lengths: dict) -> dict:
  """{'targets': L} -> a length for every task feature (they are aligned)."""
  if "targets" not in task_feature_lengths:
    raise ValueError(f"TASK_FEATURE_LENGTHS={task_feature_lengths} needs a 'targets' length")
  return {name: task_feature_lengths["targets"] for name in TASK_FEATURE_NAMES}
