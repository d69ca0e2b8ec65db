"""Task features -> the model's batch features (names fixed in docs/DESIGN.md), with packing.

decoder_target_tokens     the tokens to predict
decoder_input_tokens      what the model reads (below)
decoder_loss_weights      1 where the loss counts (never on padding)
decoder_segment_ids       packed-document ids, 0 on padding
decoder_positions         position inside each packed document
decoder_causal_attention  1 on bidirectional (prefix) input positions

With a BOS (our SentencePiece vocabularies: <pad>, id 0) the inputs are the targets shifted right
per packed segment behind the BOS, and a prefix of p targets covers input positions 0..p, as
seqio's prefix-LM. Without one (CodeGen2's tokenizer.json: the model reads the tokens alone, as in
HF) the inputs are the tokens themselves, each position predicts the next token of its segment (a
segment's first token is predicted by nothing, its last position predicts nothing), and a prefix of
p targets covers input positions 0..p-1.

Every feature is carried through the packer as value + 1, because packers measure features by
their non-zero entries, and id 0 is a real token in GPT-2-style vocabularies ('!').
"""

import seqio
import tensorflow as tf

from jaxformer.data.feature_names import MODEL_FEATURE_NAMES
from jaxformer.data.pipeline import packing

TASK_FEATURE_NAMES = ("targets", "targets_loss", "targets_prefix")


class PrefixLMObjectiveConverter(seqio.FeatureConverter):
  """Packs (targets, targets_loss, targets_prefix) examples into decoder batches.

  bos_id: the token the model reads before each document, or None for none (module docstring).
  packing: 'best_fit' (packing.py, `bins` rows open) or 'seqio' (seqio's greedy packer).
  """

  TASK_FEATURES = {name: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32) for name in TASK_FEATURE_NAMES}
  MODEL_FEATURES = {
    name: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
    for name in ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights", "decoder_causal_attention")
  }
  PACKING_FEATURE_DTYPES = {"decoder_segment_ids": tf.int32, "decoder_positions": tf.int32}

  def __init__(self, pack: bool = True, bos_id: int | None = 0, packing: str = "best_fit", bins: int = 16):
    super().__init__(pack=pack, bos_id=0 if bos_id is None else bos_id)
    self.has_bos = bos_id is not None
    self.packing, self.bins = packing, bins

  def _pack_or_pad(self, ds, packed_lengths):
    if self.pack and self.packing == "best_fit":  # packing.py; 'seqio' is seqio's greedy packer
      return packing.best_fit_pack(ds, TASK_FEATURE_NAMES, packed_lengths["targets"], self.bins)
    return super()._pack_or_pad(ds, packed_lengths)

  def _convert_features(self, ds, task_feature_lengths):
    # (Other task features, e.g. `objective` for `data show`, are dropped here.)
    shift = tf.autograph.experimental.do_not_convert(lambda ex: {k: ex[k] + 1 for k in TASK_FEATURE_NAMES})
    ds = ds.map(shift, num_parallel_calls=tf.data.AUTOTUNE)
    ds = self._pack_or_pad(ds, task_feature_lengths)
    pack, has_bos, bos_id = self.pack, self.has_bos, self.bos_id

    @tf.autograph.experimental.do_not_convert  # Python `if`s here are on Python values only
    def convert(example):
      real = tf.cast(example["targets"] > 0, tf.int32)  # 0 only on padding
      targets, loss, prefix = (tf.maximum(example[k] - 1, 0) for k in TASK_FEATURE_NAMES)
      if pack:
        segment_ids, positions = example["targets_segment_ids"], example["targets_positions"]
      else:
        segment_ids, positions = real, tf.range(tf.size(targets)) * real
      if has_bos:
        inputs = seqio.utils.make_autoregressive_inputs(targets, sequence_id=segment_ids, bos_id=bos_id)
        shifted_prefix = seqio.utils.make_autoregressive_inputs(prefix, sequence_id=segment_ids, bos_id=0)
        attention = tf.maximum(prefix, shifted_prefix)
      else:
        # Position i predicts token i + 1 of the same segment.
        continues = tf.concat([tf.cast(segment_ids[1:] == segment_ids[:-1], tf.int32), [0]], 0) * real
        next_of = lambda x: tf.concat([x[1:], [0]], 0) * continues
        inputs, targets, loss, attention = targets, next_of(targets), next_of(loss), prefix
      return {
        "decoder_target_tokens": targets,
        "decoder_input_tokens": inputs,
        "decoder_loss_weights": loss * real,
        "decoder_causal_attention": attention,
        "decoder_segment_ids": segment_ids,
        "decoder_positions": positions,
      }

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

  def get_model_feature_lengths(self, task_feature_lengths):
    length = task_feature_lengths["targets"]
    return {name: length for name in MODEL_FEATURE_NAMES}


def expand_lengths(task_feature_lengths: dict) -> dict:
  """{'targets': L} -> a length for every task feature (they are aligned)."""
  if "targets" not in task_feature_lengths:
    raise ValueError(f"TASK_FEATURE_LENGTHS={task_feature_lengths} needs a 'targets' length")
  return {name: task_feature_lengths["targets"] for name in TASK_FEATURE_NAMES}
