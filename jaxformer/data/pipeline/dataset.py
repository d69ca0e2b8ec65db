"""Batches for training and eval: seqio task -> objectives -> packing -> per-host batches,
with an iterator whose position can be saved and restored without replaying the stream."""

import dataclasses
import os

import gin
import seqio
import tensorflow as tf

from jaxformer.data.pipeline import cache
from jaxformer.data.pipeline.features import PrefixLMObjectiveConverter, expand_lengths
from jaxformer.data.pipeline.packing import PACKINGS
from jaxformer.data.pipeline.vocabulary import TokenizersVocabulary
from jaxformer.errors import require_int


@gin.configurable(module="data")
@dataclasses.dataclass(frozen=True)
class DataConfig:
  """What a run reads; runs/*.gin bind these to the t5x macros.

  mixture_or_task_name: %MIXTURE_OR_TASK_NAME; task_feature_lengths: %TASK_FEATURE_LENGTHS;
  batch_size: %BATCH_SIZE (global, over all hosts); seed: %SEED; num_epochs: None = repeat forever.
  pack: pack several examples per row (else one, padded); packing: 'best_fit' (data/packing.py,
  pack_bins rows open) or 'seqio' (seqio's greedy packer, which closes a row at the first misfit).
  cache_dir: %CACHE_DIR, the folder `jaxformer data cache` wrote (None: no cache); use_cached: None
  reads the tasks from it when all of them are cached, True requires that, False never reads it.
  """

  mixture_or_task_name: str = "local_pl_nl"
  task_feature_lengths: dict = dataclasses.field(default_factory=lambda: {"targets": 512})
  batch_size: int = 8
  seed: int | None = 0
  num_epochs: int | None = None
  pack: bool = True
  packing: str = "best_fit"
  pack_bins: int = 16
  cache_dir: str | None = None
  use_cached: bool | None = None

  def __post_init__(self):
    require_int("DataConfig.batch_size (BATCH_SIZE)", self.batch_size, 1)
    if not isinstance(self.task_feature_lengths, dict) or "targets" not in self.task_feature_lengths:
      raise ValueError(f"TASK_FEATURE_LENGTHS={self.task_feature_lengths!r} must be a dict with a 'targets' length")
    require_int("TASK_FEATURE_LENGTHS['targets']", self.task_feature_lengths["targets"], 2)
    require_int("DataConfig.num_epochs", self.num_epochs, 1, allow_none=True)
    require_int("DataConfig.pack_bins", self.pack_bins, 1)
    if self.use_cached not in (None, True, False):
      raise ValueError(f"DataConfig.use_cached={self.use_cached!r} must be None (auto), True or False")
    if self.packing not in PACKINGS:
      raise ValueError(f"DataConfig.packing={self.packing!r} is not one of {list(PACKINGS)}")

  def __hash__(self):
    return hash(
      (
        self.mixture_or_task_name,
        tuple(sorted(self.task_feature_lengths.items())),
        self.batch_size,
        self.seed,
        self.num_epochs,
        self.pack,
        self.packing,
        self.pack_bins,
        self.cache_dir,
        self.use_cached,
      )
    )

  @property
  def length(self) -> int:
    return self.task_feature_lengths["targets"]


def default_shard_info() -> seqio.ShardInfo:
  import jax

  return seqio.ShardInfo(jax.process_index(), jax.process_count())


def get_dataset(
  config: DataConfig,
  split: str = "train",
  shuffle: bool = True,
  num_epochs: int | None = -1,
  shard_info: seqio.ShardInfo | None = None,
  drop_remainder: bool = True,
  cached: bool | None = None,
) -> tf.data.Dataset:
  """This host's batches of the model features (data/features.py).

  Args:
    config: the task, lengths, global batch size, seed.
    num_epochs: -1 takes config.num_epochs; None repeats forever; k passes over the data k times.
    shard_info: which part of the data this host reads (default: jax process index and count);
      each of shard_info.num_shards hosts gets batch_size / num_shards rows.
    cached: whether to read the seqio cache, when the caller already asked cache.resolve (None: ask it).
  Returns:
    a tf.data.Dataset of dicts of int32 [per_host_batch, length] arrays.
  """
  shard_info = shard_info or default_shard_info()
  if config.batch_size % shard_info.num_shards:
    raise ValueError(f"BATCH_SIZE={config.batch_size} is not divisible by the {shard_info.num_shards} hosts")
  vocabulary = seqio.get_mixture_or_task(config.mixture_or_task_name).output_features["targets"].vocabulary
  dataset = seqio.get_dataset(
    config.mixture_or_task_name,
    task_feature_lengths=expand_lengths(config.task_feature_lengths),
    dataset_split=split,
    shuffle=shuffle,
    num_epochs=config.num_epochs if num_epochs == -1 else num_epochs,
    seed=config.seed,
    shard_info=shard_info,
    use_cached=cache.resolve(config.mixture_or_task_name, config.cache_dir, config.use_cached)
    if cached is None
    else cached,
    feature_converter=PrefixLMObjectiveConverter(
      pack=config.pack, bos_id=getattr(vocabulary, "bos_id", 0), packing=config.packing, bins=config.pack_bins
    ),
  )
  dataset = dataset.batch(config.batch_size // shard_info.num_shards, drop_remainder=drop_remainder)
  options = tf.data.Options()
  options.deterministic = True
  if isinstance(vocabulary, TokenizersVocabulary):
    # It encodes through tf.numpy_function, a pure function of the text: its "external state" is
    # none, so the iterator's checkpoint may leave it out (SentencePiece keeps the strict default).
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
  return dataset.with_options(options).prefetch(2)


class BatchIterator:
  """numpy batches from a tf.data.Dataset; save()/restore() keep the exact position.

  The checkpoint is tf.data's own iterator state (buffers included), so restoring continues the
  same sequence without reading the stream from the start.
  """

  def __init__(self, dataset: tf.data.Dataset):
    self._iterator = iter(dataset)
    self._checkpoint = tf.train.Checkpoint(iterator=self._iterator)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    return {k: v.numpy() for k, v in next(self._iterator).items()}

  def save(self, path: str) -> str:
    """Writes the position under `path` (a prefix); returns it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return self._checkpoint.write(path)

  def restore(self, path: str) -> None:
    self._checkpoint.read(path).assert_consumed()


def examples_dataset(
  mixture_or_task_name: str,
  task_feature_lengths: dict,
  split: str = "train",
  seed: int | None = 0,
  shuffle: bool = True,
  shard_info: seqio.ShardInfo | None = None,
  num_epochs: int | None = 1,
) -> tf.data.Dataset:
  """Preprocessed task examples before packing (objective, source and aligned features)."""
  return seqio.get_mixture_or_task(mixture_or_task_name).get_dataset(
    sequence_length=expand_lengths(task_feature_lengths),
    split=split,
    shuffle=shuffle,
    seed=seed,
    use_cached=False,
    num_epochs=num_epochs,
    shard_info=shard_info,
  )
