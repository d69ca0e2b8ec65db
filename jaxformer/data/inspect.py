"""What `jaxformer data show` and `data bench` report: examples as people read them, and speed."""

import time

import numpy as np

from jaxformer.data import objectives, pipeline
from jaxformer.data.vocabulary import unescape_sentinels


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
  ids = objectives.SpecialIds.from_vocabulary(vocabulary)
  for example in dataset.take(num_examples).as_numpy_iterator():
    targets, loss, prefix = example["targets"], example["targets_loss"], example["targets_prefix"]
    name = objectives.objective_name(int(example["objective"]))
    source = example["source"].tolist()
    if name == "span_corruption":  # the format drops the document's EOS and writes its own
      source = source[:-1] if source and source[-1] == ids.eos else source
      restores = objectives.invert_span_corruption(targets, ids) == source
    else:
      restores = targets.tolist() == source
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


def bench(config: pipeline.DataConfig, num_batches: int = 50, warmup: int = 5) -> dict:
  """Tokens per second of the whole pipeline: read, tokenize (or read the seqio cache), objective,
  pack, batch; and its start-up, the seconds from building the dataset (seqio and tf.data trace every
  preprocessor) to the first batch, which every train, eval and bench process pays once per task."""
  from jaxformer.data import cache

  cached = cache.resolve(config.mixture_or_task_name, config.cache_dir, config.use_cached)
  built = time.perf_counter()
  dataset = pipeline.get_dataset(config, shard_info=pipeline.seqio.ShardInfo(0, 1), cached=cached)
  iterator = iter(dataset.as_numpy_iterator())
  next(iterator)
  startup = time.perf_counter() - built
  for _ in range(warmup - 1):
    next(iterator)
  tokens = real_tokens = 0
  start = time.perf_counter()
  for _ in range(num_batches):
    batch = next(iterator)
    tokens += batch["decoder_target_tokens"].size
    real_tokens += int(np.count_nonzero(batch["decoder_segment_ids"]))
  seconds = time.perf_counter() - start
  return {
    "batches": num_batches,
    "batch_size": config.batch_size,
    "length": config.length,
    "seconds": seconds,
    "tokens_per_second": tokens / seconds,
    "nonpad_tokens_per_second": real_tokens / seconds,
    "packing_fill": real_tokens / tokens,
    "startup_seconds": startup,
    "cached": cached,
  }
