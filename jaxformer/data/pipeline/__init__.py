"""What runs while a model trains: vocabularies, preprocessors, packing, the model features, the seqio
cache's reading side, and the per-host batches (dataset.py, whose API this package re-exports)."""

from jaxformer.data.pipeline.dataset import (
  BatchIterator,
  DataConfig,
  default_shard_info,
  examples_dataset,
  get_dataset,
)

__all__ = ["BatchIterator", "DataConfig", "default_shard_info", "examples_dataset", "get_dataset"]
