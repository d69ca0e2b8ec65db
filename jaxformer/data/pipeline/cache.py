"""seqio's offline task cache, the reading side: whether a task is cached, and whether that cache still
matches the task (its fingerprint). The writer is data/ingest/cache.py.

Every jaxformer task tokenises before a `seqio.CacheDatasetPlaceholder` and applies its objectives
after it, so a cached task stores token ids and still draws fresh spans every epoch.

    jaxformer data cache --gin_file=... --output_dir=CACHE [--tasks=a,b] [--runner=direct --num_workers=N]

writes CACHE/<task>/ in seqio's own layout (train.tfrecord-*, info.*.json, stats.*.json, COMPLETED;
`seqio.beam_utils` preprocesses and counts) plus jaxformer_cache.json, the task's fingerprint (its
vocabulary's sha256, its source's shard counts and stats.json, its pre-cache steps), which training
checks before it reads the cache: a cache built with another tokenizer or from other documents is an
error, never silently used. Cache shard i holds source shard i's examples in their source order, so
the same corpus always gives the same cache bytes and the same training batches. Each task folder is
built beside its final place and moved there only when the pipeline succeeds.
"""

import functools
import hashlib
import json
import logging
import os

import seqio
import tensorflow as tf

from jaxformer.errors import UserError

log = logging.getLogger("jaxformer")
FINGERPRINT = "jaxformer_cache.json"


def vocabulary_digest(vocabulary) -> str:
  """sha256 of the vocabulary's model (SentencePiece proto or tokenizer.json bytes)."""
  data = getattr(vocabulary, "sp_model", None)
  return hashlib.sha256(data).hexdigest() if data is not None else _file_digest(vocabulary.path)


@functools.lru_cache(maxsize=16)
def _file_digest(path: str) -> str:
  """A tokenizer.json's sha256, read once per path (every task of a mixture shares it)."""
  with tf.io.gfile.GFile(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


TIMING_KEYS = ("seconds", "documents_per_second")  # what changes in stats.json when nothing else does


def source_stats_digest(task: seqio.Task) -> str | None:
  """What the stats.json beside the task's shards says of its documents: `data convert`'s digest of
  the folder's documents with the digest of the settings that chose them (filters, licences,
  decontamination, near dedup: a corpus converted with other settings is another corpus even where
  it happens to hold the same documents), else (`build-local`) a sha256 of the whole file, timing
  fields left out; None when there is none."""
  patterns = getattr(task.source, "_split_to_filepattern", None) or {}
  folders = sorted({os.path.dirname(p) for p in patterns.values()})
  digests = []
  for folder in folders:
    path = os.path.join(os.path.dirname(folder), "stats.json")
    if tf.io.gfile.exists(path):
      with tf.io.gfile.GFile(path) as f:
        stats = {k: v for k, v in json.load(f).items() if k not in TIMING_KEYS}
      content = (stats.get("content_digest") or {}).get(os.path.basename(folder))
      if content and stats.get("settings_digest"):
        content = f"{content}:{stats['settings_digest']}"
      digests.append(content or hashlib.sha256(json.dumps(stats, sort_keys=True).encode()).hexdigest())
  return hashlib.sha256(",".join(digests).encode()).hexdigest() if digests else None


def fingerprint(task: seqio.Task) -> dict:
  """What a cache of `task` depends on: the vocabulary, the source's files and documents, the
  pre-cache steps with their settings."""
  shards = {split: len(task.source.list_shards(split)) for split in task.splits}
  steps = [_step_name(p) for p in task.preprocessors]
  end = steps.index("CacheDatasetPlaceholder") if "CacheDatasetPlaceholder" in steps else len(steps)
  return {
    "task": task.name,
    "vocabulary_sha256": vocabulary_digest(task.output_features["targets"].vocabulary),
    "source_shards": shards,
    "source_stats_sha256": source_stats_digest(task),
    "preprocessors": steps[:end],
  }


def _step_name(step) -> str:
  if isinstance(step, seqio.CacheDatasetPlaceholder):
    return "CacheDatasetPlaceholder"
  name = getattr(getattr(step, "func", step), "__name__", type(step).__name__)
  keywords = getattr(step, "keywords", None)  # functools.partial settings: count=64, text_key=...
  return f"{name}({', '.join(f'{k}={v!r}' for k, v in sorted(keywords.items()))})" if keywords else name


def leaf_tasks(name: str) -> list[seqio.Task]:
  provider = seqio.get_mixture_or_task(name)
  return list(provider.tasks) if isinstance(provider, seqio.Mixture) else [provider]


def cached_path(task: seqio.Task, cache_dir: str) -> str | None:
  path = os.path.join(cache_dir, seqio.get_task_dir_from_name(task.name))
  return path if tf.io.gfile.exists(os.path.join(path, "COMPLETED")) else None


def check_fingerprint(task: seqio.Task, path: str) -> None:
  """Raises ValueError when the cache at `path` was built for another vocabulary or source."""
  stored_path = os.path.join(path, FINGERPRINT)
  if not tf.io.gfile.exists(stored_path):
    raise UserError(f"{path} is a seqio cache without {FINGERPRINT}; rebuild it with `jaxformer data cache`")
  with tf.io.gfile.GFile(stored_path) as f:
    stored = json.load(f)
  now = fingerprint(task)
  keys = ("vocabulary_sha256", "source_shards", "source_stats_sha256", "preprocessors")
  changed = [k for k in keys if stored.get(k) != now[k]]
  if changed:
    raise UserError(
      f"the cache of task {task.name!r} at {path} was built with another {', '.join(changed)} "
      f"({[stored.get(k) for k in changed]} vs now {[now[k] for k in changed]}); rebuild it with "
      f"`jaxformer data cache ... --tasks={task.name} --overwrite` or set DataConfig.use_cached = False"
    )


def resolve(name: str, cache_dir: str | None, use_cached: bool | None) -> bool:
  """Whether to read `name`'s tasks from CACHE_DIR (DataConfig.cache_dir / use_cached).

  use_cached None (default) reads the cache when every task of the mixture has one, True requires
  it, False never reads it. seqio reads a mixture's tasks all cached or all not: a partly cached
  mixture is read uncached, with a warning naming the tasks still to cache.
  """
  seqio.set_global_cache_dirs([cache_dir] if cache_dir else [])
  if use_cached is False:
    return False
  tasks = leaf_tasks(name)
  paths = {task.name: cached_path(task, cache_dir) if cache_dir else None for task in tasks}
  missing = sorted(t for t, p in paths.items() if p is None)
  if missing:
    command = f"`jaxformer data cache ... --output_dir={cache_dir or 'CACHE_DIR'} --tasks={','.join(missing)}`"
    if use_cached:
      raise UserError(
        f"DataConfig.use_cached = True but {missing} have no cache in DataConfig.cache_dir={cache_dir!r}; "
        f"build it with {command}"
      )
    if cache_dir and len(missing) < len(tasks):
      log.warning("reading %s uncached: %s have no cache in %s (%s)", name, missing, cache_dir, command)
    elif cache_dir:  # a CACHE_DIR that holds none of them: a typo, or a cache not built yet
      log.warning("CACHE_DIR=%s holds no cache of %s: tokenising online (%s)", cache_dir, missing, command)
    return False
  for task in tasks:
    check_fingerprint(task, paths[task.name])
  log.info("reading %s from the seqio cache in %s", name, cache_dir)
  return True
