"""The Beam pipeline of `data convert`: read files -> filter -> licences -> decontaminate -> exact
dedup -> near dedup -> sharded TFRecords.

Every step that decides what is written sorts or keys by content, never by arrival order, so the
output bytes and the counts are the same on one worker or a hundred:

  file paths -> Reshuffle -> read + filter + licence allow-list + benchmark overlap (per file,
    streaming) -> key by sha256(text) -> combine per digest (keep the smallest `where`, count the
    copies dropped) -> near-duplicate removal (near_dedup_beam.py)
    -> key by (folder, split, shard of the digest) -> group -> write one shard, sorted by digest

Counts (written, duplicates, skipped, languages, language_bytes) and the first skipped examples
per reason are combined in the pipeline and written as one JSON file for the driver to merge.
"""

import hashlib
import json
import os
import typing

import apache_beam as beam

from jaxformer.data.ingest import decontaminate, near_dedup_beam, records
from jaxformer.data.ingest.corpus import shard_paths, split_of, validation_shards
from jaxformer.data.ingest.languages import language_dir
from jaxformer.data.ingest.records import natural_key
from jaxformer.tensorflow_import import import_tensorflow

SKIPPED_EXAMPLES = 5
CONTAMINATED_LISTED = 10_000  # documents stats.json lists by name (smallest `where` first); all are counted
# Every element is a (key, value) pair; Beam cannot infer it through TaggedOutput.
Pair = typing.Tuple[typing.Any, typing.Any]  # noqa: UP006 (Beam's type hints want typing.Tuple)


def example(text: str, where: str, language: str, licenses: tuple[str, ...] | None = None) -> bytes:
  """A tf.train.Example (text, path, lang[, license]) serialized deterministically: protobuf otherwise
  writes map entries in an order that differs between processes, and shards would differ by worker
  count. `license` is the record's licence names joined by ',' (with --license_field only)."""
  tf = import_tensorflow()
  # surrogateescape: a local file name that is not UTF-8 (text and language are valid by now)
  feature = lambda s: tf.train.Feature(bytes_list=tf.train.BytesList(value=[s.encode("utf-8", "surrogateescape")]))
  features = {"text": feature(text), "path": feature(where), "lang": feature(language)}
  if licenses is not None:
    features["license"] = feature(",".join(licenses))
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(deterministic=True)


class ReadFile(beam.DoFn):
  """One input file -> (digest, (where, text, language, licences)) per kept document, (reason, where)
  tagged 'skipped' for each record dropped by the reader, a filter, the licence allow-list or the
  benchmark overlap, and counts tagged 'counts' (licences dropped, benchmark matches)."""

  def __init__(self, text_field, language_field, filters, license_field, allowed_licenses, decontamination):
    self.text_field, self.language_field, self.filters = text_field, language_field, filters
    self.license_field, self.allowed_licenses, self.decontamination = license_field, allowed_licenses, decontamination

  def process(self, path):
    for item in records.read_records(path, self.text_field, self.language_field, self.license_field):
      if isinstance(item, records.Skip):
        yield beam.pvalue.TaggedOutput("skipped", tuple(item))
        continue
      reason = self.filters.reason(item.text)
      if reason:
        yield beam.pvalue.TaggedOutput("skipped", (reason, item.where))
        continue
      if self.allowed_licenses is not None and not set(item.licenses) <= self.allowed_licenses:
        for name in item.licenses:
          yield beam.pvalue.TaggedOutput("counts", (("license_dropped", name), 1))
        yield beam.pvalue.TaggedOutput("skipped", ("licence not allowed", item.where))
        continue
      task_id = decontaminate.matched_problem(item.text, self.decontamination)
      if task_id is not None:
        yield beam.pvalue.TaggedOutput("counts", (("contaminated", task_id), 1))
        yield beam.pvalue.TaggedOutput("contaminated", {"where": item.where, "task_id": task_id})
        if self.decontamination.mode == "drop":
          yield beam.pvalue.TaggedOutput("skipped", ("benchmark overlap", item.where))
          continue
      digest = hashlib.sha256(item.text.encode("utf-8")).hexdigest()
      yield digest, (item.where, item.text, item.language, item.licenses)


class KeepFirstCopy(beam.CombineFn):
  """Per digest: (copies seen, the copy with the smallest `where`), whatever order copies arrive in."""

  def create_accumulator(self):
    return 0, None

  def add_input(self, accumulator, copy):
    return self.merge_accumulators([accumulator, (1, copy)])

  def merge_accumulators(self, accumulators):
    count, best = 0, None
    for n, copy in accumulators:
      count += n
      if copy is not None and (best is None or natural_key(copy[0]) < natural_key(best[0])):
        best = copy
    return count, best

  def extract_output(self, accumulator):
    return accumulator


class WriteShard(beam.DoFn):
  """((folder, split, shard), documents) -> one TFRecord file, documents sorted by digest; a shard
  with no document is written empty, so every folder has all its shard files."""

  def __init__(self, output_dir, num_shards):
    self.output_dir, self.num_shards = output_dir, num_shards

  def process(self, keyed):
    tf = import_tensorflow()
    (folder, split, shard), documents = keyed
    count = self.num_shards if split == "train" else validation_shards(self.num_shards)
    path = shard_paths(self.output_dir, folder, split, count)[shard]
    tf.io.gfile.makedirs(os.path.dirname(path))
    temporary = f"{path}.tmp"  # a retried bundle rewrites it; the shard appears whole or not at all
    with tf.io.TFRecordWriter(temporary) as writer:
      for _, where, text, language, licenses in sorted((d for d in documents if d is not None), key=lambda d: d[0]):
        writer.write(example(text, where, language, licenses))
    tf.io.gfile.rename(temporary, path, overwrite=True)
    yield path


def _place(item, by_language, validation_percent, num_shards):
  """(digest, (copies, (where, text, language, licences))) -> ((folder, split, shard), document) and counts."""
  digest, (copies, (where, text, language, licenses)) = item
  split = split_of(digest, validation_percent)
  count = num_shards if split == "train" else validation_shards(num_shards)
  shard = int(digest[8:16], 16) % count
  yield beam.pvalue.TaggedOutput("counts", (("written", split), 1))
  yield beam.pvalue.TaggedOutput("counts", (("bytes", split), len(text.encode("utf-8"))))
  if copies > 1:
    yield beam.pvalue.TaggedOutput("counts", (("duplicates", ""), copies - 1))
  if language is not None:
    yield beam.pvalue.TaggedOutput("counts", (("languages", language), 1))
    yield beam.pvalue.TaggedOutput("counts", (("language_bytes", language), len(text.encode("utf-8"))))
  for name in licenses or ():
    yield beam.pvalue.TaggedOutput("counts", (("license_written", name), 1))
  folder = language_dir(language) if by_language else "text"
  # the sum of a folder's (distinct) document digests: changes whenever its documents do
  yield beam.pvalue.TaggedOutput("counts", (("content", folder), int(digest, 16)))
  yield (folder, split, shard), (digest, where, text, language or "text", licenses)


def _every_shard(folder, num_shards):
  for split, count in (("train", num_shards), ("validation", validation_shards(num_shards))):
    for shard in range(count):
      yield (folder, split, shard), None


def _write_counts(rows, path):
  counts, lists = {}, {"examples": {}, "near_duplicate_pairs": {}, "contaminated_documents": {}}
  for key, value in rows:
    if key[0] in lists:
      lists[key[0]][key[1]] = value
    else:
      counts.setdefault(key[0], {})[key[1]] = value
  collected = {
    "counts": counts,
    "examples": lists["examples"],
    "near_duplicate_pairs": lists["near_duplicate_pairs"].get("", []),
    "contaminated_documents": lists["contaminated_documents"].get("", []),
  }
  with import_tensorflow().io.gfile.GFile(path, "w") as f:
    f.write(json.dumps(collected, sort_keys=True))
  return path


def build(pipeline, paths, output_dir, counts_path, *, settings, validation_percent, num_shards):
  """Adds the conversion of `paths` into output_dir (and its counts into counts_path) to pipeline.

  settings: convert.Settings (fields, filters, licences, decontamination, near dedup)."""
  read = (
    pipeline
    | "Files" >> beam.Create(paths)
    | "SpreadFiles" >> beam.Reshuffle()
    | "ReadAndFilter"
    >> beam.ParDo(
      ReadFile(
        settings.text_field,
        settings.language_field,
        settings.filters,
        settings.license_field,
        settings.allowed_licenses,
        settings.decontamination,
      )
    )
    .with_output_types(Pair)
    .with_outputs("skipped", "counts", "contaminated", main="kept")
  )
  unique = read.kept | "Dedup" >> beam.CombinePerKey(KeepFirstCopy())
  near_counts, near_pairs = [], []
  if settings.near_dedup is not None:
    unique, counts, pairs = near_dedup_beam.build(unique, settings.near_dedup)
    near_counts, near_pairs = [counts], [pairs]
  placed = unique | "Place" >> beam.FlatMap(
    _place, settings.language_field is not None, validation_percent, num_shards
  ).with_output_types(Pair).with_outputs("counts", main="docs")
  empty_shards = (
    placed.docs
    | "Folders" >> beam.Map(lambda keyed: keyed[0][0])
    | "DistinctFolders" >> beam.Distinct()
    | "EveryShard" >> beam.FlatMap(_every_shard, num_shards)
  )
  (
    (placed.docs, empty_shards)
    | "WithEmptyShards" >> beam.Flatten()
    | "GroupShards" >> beam.GroupByKey()
    | "WriteShards" >> beam.ParDo(WriteShard(output_dir, num_shards))
  )
  skip_counts = read.skipped | "CountSkips" >> beam.Map(lambda skip: (("skipped", skip[0]), 1))
  examples = (
    read.skipped
    | "SkipExamples" >> beam.combiners.Top.SmallestPerKey(SKIPPED_EXAMPLES, key=natural_key)
    | "KeyExamples" >> beam.Map(lambda kv: (("examples", kv[0]), sorted(kv[1], key=natural_key)))
  )
  contaminated = (
    read.contaminated
    | "SomeContaminated"
    >> beam.combiners.Top.Of(CONTAMINATED_LISTED, key=lambda d: natural_key(d["where"]), reverse=True)
    | "KeyContaminated"
    >> beam.Map(lambda top: (("contaminated_documents", ""), sorted(top, key=lambda d: natural_key(d["where"]))))
  )
  totals = (
    (placed.counts, skip_counts, read.counts, *near_counts)
    | "AllCounts" >> beam.Flatten()
    | "SumCounts" >> beam.CombinePerKey(sum)
  )
  (
    (totals, examples, contaminated, *near_pairs)
    | "CountsAndExamples" >> beam.Flatten()
    | "OneList" >> beam.combiners.ToList()
    | "WriteCounts" >> beam.Map(_write_counts, counts_path)
  )
