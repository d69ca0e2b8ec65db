"""Tasks over the embedded local corpus (`jaxformer data build-local`).

local_pl, local_nl     one class of documents each (splits: train, validation)
local_pl_small         a fixed small subset of local_pl's train split (several-epoch studies)
local_pl_only          mixture: PL alone
local_nl_only          mixture: NL alone
local_pl_nl            mixture: PL and NL at rates from gin
"""

import functools
import os

import gin
import seqio
import tensorflow as tf

from jaxformer.data.ingest.corpus import check_corpus
from jaxformer.data.pipeline import preprocessors
from jaxformer.data.pipeline.vocabulary import load_vocabulary
from jaxformer.errors import require_int
from jaxformer.objectives.mixture import objective_mixture

DEFAULT_CORPUS_DIR = os.path.join("~", ".cache", "jaxformer", "local_corpus")
TASKS = ("local_pl", "local_nl", "local_pl_small")
MIXTURES = ("local_pl_only", "local_nl_only", "local_pl_nl")


def output_features(vocabulary) -> dict:
  flags = seqio.PassThroughVocabulary(size=2)
  return {
    "targets": seqio.Feature(vocabulary, add_eos=False, dtype=tf.int32),
    "targets_loss": seqio.Feature(flags, add_eos=False, dtype=tf.int32),
    "targets_prefix": seqio.Feature(flags, add_eos=False, dtype=tf.int32),
    # For `jaxformer data show`; the feature converter drops them.
    "objective": seqio.Feature(flags, add_eos=False, dtype=tf.int32, rank=0, required=False),
    "objective_info": seqio.Feature(flags, add_eos=False, dtype=tf.int32, required=False),  # for `data stats`
    "source": seqio.Feature(vocabulary, add_eos=False, dtype=tf.int32, required=False),
  }


@gin.configurable(module="tasks")
def shuffle_buffer_size(size: int = 1000) -> int:
  """Examples (after the objective) that a task shuffles together (gin: tasks.shuffle_buffer_size.size)."""
  return size


def text_task(
  name: str,
  source: seqio.DataSource,
  vocabulary,
  text_key: str = "text",
  max_documents: int | None = None,
  max_tokens: int | None = None,
) -> seqio.Task:
  """A task from any source of documents with a text feature, through the objective mixture.
  max_documents keeps only the first documents the source yields, max_tokens the first documents whose
  tokens add up to at most that many (a small set for epoch studies, of a size in batches)."""
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  # Tokens are what `jaxformer data cache` stores (data/ingest/cache.py); the objectives come after the
  # placeholder so every epoch draws fresh spans, cached or not. seqio repeats epochs after the
  # placeholder, so a subset (max_documents) is taken before it and not from the repeated stream.
  first = [functools.partial(_take, count=max_documents)] if max_documents else []
  budget = [functools.partial(_take_tokens, budget=max_tokens)] if max_tokens else []
  return seqio.TaskRegistry.add(
    name,
    source=source,
    output_features=output_features(vocabulary),
    preprocessors=[
      *first,
      functools.partial(preprocessors.text_to_targets, text_key=text_key),
      functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False),  # the cache keeps ids only
      *budget,
      seqio.CacheDatasetPlaceholder(),
      objective_mixture,
    ],
    shuffle_buffer_size=shuffle_buffer_size(),
  )


def text_source(split_to_filepattern: dict) -> seqio.TFExampleDataSource:
  """A seqio source over TFRecords of tf.train.Examples with a `text` feature (build-local, convert)."""
  return seqio.TFExampleDataSource(
    split_to_filepattern=split_to_filepattern, feature_description={"text": tf.io.FixedLenFeature([], tf.string)}
  )


def _take(dataset, count: int):
  return dataset.take(count)


def _take_tokens(dataset, budget: int):
  """The first documents whose tokens add up to at most budget."""
  totals = dataset.scan(tf.constant(0, tf.int64), _add_length)
  return totals.take_while(lambda total, example: total <= budget).map(lambda total, example: example)


def _add_length(total, example):
  total = total + tf.cast(tf.size(example["targets"]), tf.int64)
  return total, (total, example)


def add_mixture(name: str, tasks_and_rates):
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  return seqio.MixtureRegistry.add(name, tasks_and_rates)


def corpus_vocabulary(corpus_dir: str, vocabulary_path: str | None):
  """VOCABULARY (a SentencePiece .model or a tokenizer.json), or the corpus's own spm.model."""
  corpus_dir = os.path.expanduser(corpus_dir)
  path = os.path.expanduser(vocabulary_path) if vocabulary_path else os.path.join(corpus_dir, "spm.model")
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
      f"no tokenizer at {path} (VOCABULARY); train one with "
      f"`jaxformer data train-tokenizer --corpus_dir={corpus_dir} --output={path}`"
    )
  return load_vocabulary(path)


def _build_missing(corpus_dir: str, vocabulary_path: str | None):
  from jaxformer.data.ingest import corpus, tokenizer

  if not os.path.exists(os.path.join(corpus_dir, "stats.json")):
    print(f"building the local corpus in {corpus_dir} (jaxformer data build-local)", flush=True)
    corpus.build_local_corpus(corpus_dir)
  path = vocabulary_path or os.path.join(corpus_dir, "spm.model")
  if not os.path.exists(path) and not path.endswith(".json"):  # a tokenizer.json is never trained here
    print(f"training the tokenizer {path} (jaxformer data train-tokenizer)", flush=True)
    tokenizer.train_tokenizer(corpus_dir, path)


@gin.configurable(module="tasks")
def register_local_tasks(
  corpus_dir: str = DEFAULT_CORPUS_DIR,
  vocabulary_path: str | None = None,
  pl_rate: float = 0.8,
  nl_rate: float = 0.2,
  build_if_missing: bool = False,
  small_pl_documents: int = 64,
  small_pl_tokens: int | None = None,
):
  """Registers local_pl, local_nl and their mixtures; returns the vocabulary.

  Also registers local_pl_small: the first small_pl_documents documents of PL's first train shard
  (always the same ones, so a run over it sees them once per epoch), with local_pl's validation split;
  with small_pl_tokens, the first documents of that shard whose tokens add up to at most that many
  (an epoch of a known size on any machine's corpus: BATCH_SIZE x length x packing fill tokens a step).

  With build_if_missing (runs/local.gin) a missing corpus or tokenizer is built first
  (`jaxformer data build-local` and `data train-tokenizer` with their defaults). Otherwise
  raises FileNotFoundError naming the command that builds it, and ValueError for a class with
  no documents.
  """
  corpus_dir = os.path.expanduser(corpus_dir)
  if build_if_missing:
    _build_missing(corpus_dir, vocabulary_path)
  stats = check_corpus(corpus_dir)
  vocabulary = corpus_vocabulary(corpus_dir, vocabulary_path)
  for kind in ("pl", "nl"):
    counts = {
      split: stats["classes"].get(kind, {}).get(split, {}).get("documents", 0) for split in ("train", "validation")
    }
    empty = [split for split, count in counts.items() if count == 0]
    if empty:
      raise ValueError(
        f"task local_{kind}: split(s) {empty} of {corpus_dir} hold no documents "
        f"({os.path.join(corpus_dir, 'stats.json')}); rebuild with a larger --max_bytes"
      )
    source = text_source(
      {split: os.path.join(corpus_dir, kind, f"{split}-*.tfrecord") for split in ("train", "validation")}
    )
    text_task(f"local_{kind}", source, vocabulary)
  pl_train = sorted(tf.io.gfile.glob(os.path.join(corpus_dir, "pl", "train-*.tfrecord")))
  small = text_source({"train": pl_train[0], "validation": os.path.join(corpus_dir, "pl", "validation-*.tfrecord")})
  if small_pl_tokens is None:
    text_task("local_pl_small", small, vocabulary, max_documents=small_pl_documents)
  else:
    require_int("tasks.register_local_tasks.small_pl_tokens", small_pl_tokens, 1)
    text_task("local_pl_small", small, vocabulary, max_tokens=small_pl_tokens)
  add_mixture("local_pl_only", [("local_pl", 1.0)])
  add_mixture("local_nl_only", [("local_nl", 1.0)])
  add_mixture("local_pl_nl", [("local_pl", pl_rate), ("local_nl", nl_rate)])
  return vocabulary
