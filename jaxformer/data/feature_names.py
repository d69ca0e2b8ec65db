"""The model's batch features (fixed names, docs/DESIGN.md): a module without seqio or TensorFlow, so the
train step, bench and plan import them on machines that have neither (a GPU box running `bench`)."""

MODEL_FEATURE_NAMES = (
  "decoder_target_tokens",
  "decoder_input_tokens",
  "decoder_loss_weights",
  "decoder_segment_ids",
  "decoder_positions",
  "decoder_causal_attention",
)
