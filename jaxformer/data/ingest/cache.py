"""`jaxformer data cache`: seqio's task cache written by Apache Beam (the reading side and the
fingerprint it checks: data/pipeline/cache.py).

writes CACHE/<task>/ in seqio's own layout (train.tfrecord-*, info.*.json, stats.*.json, COMPLETED;
`seqio.beam_utils` preprocesses and counts) plus jaxformer_cache.json, the task's fingerprint. Cache
shard i holds source shard i's examples in their source order, so the same corpus always gives the
same cache bytes and the same training batches. Each task folder is built beside its final place and
moved there only when the pipeline succeeds.
"""

import json
import os
import time

import seqio
import tensorflow as tf

from jaxformer import runlock
from jaxformer.data.pipeline.cache import FINGERPRINT, fingerprint


def cache_tasks(
  names: list[str],
  output_dir: str,
  setup_fn,
  pipeline_options,
  overwrite: bool = False,
) -> dict:
  """Runs seqio's Beam caching for `names` into output_dir/<task>/; returns {task: {split: stats}}.

  setup_fn: called in each Beam worker before it looks the tasks up (it registers them there).
  pipeline_options: beam PipelineOptions (runner, workers, Dataflow settings).
  """
  import contextlib

  import apache_beam as beam
  from seqio import beam_utils

  tasks = [seqio.TaskRegistry.get(n) for n in names]
  for task in tasks:
    if not task.supports_caching:
      raise ValueError(f"task {task.name!r} has no seqio.CacheDatasetPlaceholder; it cannot be cached")
  start = time.time()
  with contextlib.ExitStack() as stack:
    partials = {
      t.name: stack.enter_context(
        runlock.building(
          os.path.join(output_dir, seqio.get_task_dir_from_name(t.name)), overwrite, "data cache", "--output_dir"
        )
      )
      for t in tasks
    }
    with beam.Pipeline(options=pipeline_options) as p:
      for task in tasks:
        out = partials[task.name]
        for split in task.splits:
          label = f"{task.name}_{split}"
          preprocess = beam_utils.PreprocessTask(task, split, setup_fn=setup_fn, add_provenance=True)
          examples = p | f"{label}_preprocess" >> preprocess
          num_shards = len(preprocess.shards)
          every_shard = p | f"{label}_every_shard" >> beam.Create([(i, None) for i in range(num_shards)])
          _ = (
            (examples | f"{label}_key" >> beam.Map(_keyed), every_shard)
            | f"{label}_with_empty" >> beam.Flatten()
            | f"{label}_group" >> beam.GroupByKey()
            | f"{label}_write" >> beam.Map(_write_shard, seqio.get_cached_tfrecord_prefix(out, split), num_shards)
          )
          _ = (
            examples
            | f"{label}_info" >> beam_utils.GetInfo(num_shards)
            | f"{label}_write_info" >> beam_utils.WriteJson(seqio.get_cached_info_path(out, split))
          )
          _ = (
            examples
            | f"{label}_stats" >> beam_utils.GetStats(task.output_features)
            | f"{label}_write_stats" >> beam_utils.WriteJson(seqio.get_cached_stats_path(out, split))
          )
    report = {}
    for task in tasks:
      out = partials[task.name]
      report[task.name] = {}
      for split in task.splits:
        stats_path = seqio.get_cached_stats_path(out, split)
        if not tf.io.gfile.exists(stats_path) or not tf.io.gfile.exists(seqio.get_cached_info_path(out, split)):
          raise ValueError(f"task {task.name!r} split {split!r} produced no examples; {output_dir} is unchanged")
        with tf.io.gfile.GFile(stats_path) as f:
          report[task.name][split] = json.load(f)
        if not report[task.name][split].get("examples"):
          raise ValueError(f"task {task.name!r} split {split!r} produced no examples; {output_dir} is unchanged")
      with tf.io.gfile.GFile(os.path.join(out, FINGERPRINT), "w") as f:
        f.write(json.dumps(fingerprint(task), indent=1))
      with tf.io.gfile.GFile(os.path.join(out, "COMPLETED"), "w") as f:
        f.write("")
  report["seconds"] = time.time() - start
  return report


def _keyed(example: dict):
  """(source shard, (index within it, serialized Example without provenance)) for the writer."""
  from seqio import beam_utils

  shard = int(example[beam_utils.SOURCE_SHARD_ID_PROVENANCE_KEY])
  index = int(example[beam_utils.ID_WITHIN_SHARD_PROVENANCE_KEY])
  features = {k: v for k, v in example.items() if not k.startswith(beam_utils.PROVENANCE_PREFIX)}
  return shard, (index, seqio.dict_to_tfexample(features).SerializeToString(deterministic=True))


def _write_shard(keyed, prefix: str, num_shards: int) -> str:
  """One cache shard: source shard i's examples in source order (an empty shard is an empty file)."""
  shard, examples = keyed
  path = f"{prefix}-{shard:05d}-of-{num_shards:05d}"
  with tf.io.TFRecordWriter(path) as writer:
    for _, record in sorted(e for e in examples if e is not None):
      writer.write(record)
  return path
