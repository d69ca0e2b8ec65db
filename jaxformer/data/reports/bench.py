"""What `jaxformer data bench` reports: the whole input pipeline's speed and start-up."""

import time

import numpy as np
import seqio

from jaxformer.data import pipeline
from jaxformer.data.pipeline import cache


def bench(config: pipeline.DataConfig, num_batches: int = 50, warmup: int = 5) -> dict:
  """Tokens per second of the whole pipeline: read, tokenize (or read the seqio cache), objective,
  pack, batch; and its start-up, the seconds from building the dataset (seqio and tf.data trace every
  preprocessor) to the first batch, which every train, eval and bench process pays once per task."""
  cached = cache.resolve(config.mixture_or_task_name, config.cache_dir, config.use_cached)
  built = time.perf_counter()
  dataset = pipeline.get_dataset(config, shard_info=seqio.ShardInfo(0, 1), cached=cached)
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
