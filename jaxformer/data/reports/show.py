"""What `jaxformer data show` prints: training examples as people read them, with their masks."""

from jaxformer import objectives
from jaxformer.data import pipeline
from jaxformer.data.pipeline.vocabulary import unescape_sentinels


def _masked_text(vocabulary, tokens, keep) -> str:
  """The decoded tokens where keep is 1, with '·' standing for each run of the others."""
  out, run, hidden = [], [], False
  for token, k in zip(tokens, keep):
    if k:
      if hidden:
        out.append("·")
        hidden = False
      run.append(int(token))
    else:
      if run:
        out.append(vocabulary.decode_with_specials(run))
        run = []
      hidden = True
  if run:
    out.append(vocabulary.decode_with_specials(run))
  if hidden:
    out.append("·")
  return "".join(out)


def show_examples(config: pipeline.DataConfig, vocabulary, num_examples: int, split: str = "train") -> list[dict]:
  """The first num_examples preprocessed examples, decoded.

  Each dict: objective, inputs_text (the model's token sequence, special tokens written out),
  source_text (the document chunk it was made from), restores_source (the spans put back in place
  give the chunk's tokens exactly; other objectives: the tokens are the chunk's), loss_text /
  prefix_text (only the tokens under each mask, '·' for the rest), loss_mask, prefix_mask, num_tokens.
  """
  dataset = pipeline.examples_dataset(
    config.mixture_or_task_name, config.task_feature_lengths, split=split, seed=config.seed
  )
  rows = []
  context = objectives.Context(vocabulary.special, objectives.all_settings(), vocabulary)
  for example in dataset.take(num_examples).as_numpy_iterator():
    targets, loss, prefix = example["targets"], example["targets_loss"], example["targets_prefix"]
    objective = objectives.by_id(int(example["objective"]))
    source = example["source"].tolist()
    if objective.own_eos:  # the format drops the document's EOS and writes its own
      source = source[:-1] if source and source[-1] == vocabulary.special.eos else source
    restores = objective.invert(targets, context) == source
    name = objective.name
    rows.append(
      {
        "objective": name,
        "restores_source": restores,
        "num_tokens": int(targets.size),
        "inputs_text": vocabulary.decode_with_specials(targets),
        "source_text": unescape_sentinels(vocabulary.decode_with_specials(example["source"])),
        "loss_text": _masked_text(vocabulary, targets, loss),
        "prefix_text": _masked_text(vocabulary, targets, prefix) if prefix.any() else "",
        "loss_mask": loss.tolist(),
        "prefix_mask": prefix.tolist(),
      }
    )
  if not rows:
    raise ValueError(f"task {config.mixture_or_task_name!r} split {split!r} produced no examples")
  return rows
