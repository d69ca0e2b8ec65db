"""The corpus recipe for converted code corpora (The Stack style): one seqio task per programming
language plus natural-language tasks, mixed by size with a temperature (jaxformer/gin/data/code_corpus.gin).

    PL_DIR   a `jaxformer data convert --language_field=lang` folder: PL_DIR/<language>/{split}-*.tfrecord
             and PL_DIR/stats.json ({language: bytes} in language_bytes, folder names in language_dirs)
    NL_DIRS  {task name: `jaxformer data convert` folder} (PL_DIR/text/ layout), e.g. {'nl_pile': ...}

Tasks are named code_<language folder> (code_python, code_cpp, ...). Rates: each task's size n_i
is its token count from seqio's cache (`jaxformer data cache`) when every task is cached, else
its UTF-8 bytes from the converter's stats.json (language_bytes, or bytes for an NL folder);
weights n_i ** (1 / temperature) are normalised within PL to pl_share and within NL to
1 - pl_share. temperature 1 samples in proportion to size; larger values flatten towards
uniform (multilingual practice: mT5 used 1/0.3).
"""

import json
import logging
import os

import gin
import seqio
import tensorflow as tf

from jaxformer.data.pipeline import cache
from jaxformer.data.pipeline.vocabulary import load_vocabulary
from jaxformer.errors import require_int
from jaxformer.tasks.local import add_mixture, text_source, text_task

log = logging.getLogger("jaxformer")
SPLITS = ("train", "validation")


def _stats(folder: str) -> dict:
  path = os.path.join(folder, "stats.json")
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
      f"{path} is missing: write the folder with `jaxformer data convert --input='...' --output_dir={folder}`"
    )
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def _source(folder: str, subdir: str, train_shards: int | None = None) -> tuple[seqio.TFExampleDataSource | None, int]:
  """The splits of folder/subdir that hold documents (an empty TFRecord file is 0 bytes), and the
  bytes of its train shards; with train_shards, only the first that many train shards."""
  patterns, train_bytes = {}, 0
  for split in SPLITS:
    pattern = os.path.join(folder, subdir, f"{split}-*.tfrecord")
    files = sorted(tf.io.gfile.glob(pattern))
    if split == "train" and train_shards:
      files = files[:train_shards]
      pattern = files
    sizes = [tf.io.gfile.stat(p).length for p in files]
    if any(sizes):
      patterns[split] = pattern
    if split == "train":
      train_bytes = sum(sizes)
  if "train" not in patterns:
    return None, 0
  return text_source(patterns), train_bytes


def mixture_rates(sizes: dict, groups: dict, temperature: float, pl_share: float) -> dict:
  """{task: rate}: sizes ** (1/temperature), normalised to pl_share within 'pl' and the rest in 'nl'."""
  if temperature <= 0:
    raise ValueError(f"tasks.register_code_corpus.temperature={temperature} must be positive")
  if not 0 < pl_share <= 1:
    raise ValueError(f"tasks.register_code_corpus.pl_share={pl_share} must be in (0, 1]")
  weights = {t: float(n) ** (1.0 / temperature) for t, n in sizes.items()}
  shares = {"pl": pl_share, "nl": 1.0 - pl_share}
  present = {g for g in groups.values()}
  if present == {"pl"}:
    shares["pl"] = 1.0
  rates = {}
  for group in present:
    members = [t for t, g in groups.items() if g == group]
    total = sum(weights[t] for t in members)
    for t in members:
      rates[t] = shares[group] * weights[t] / total
  return rates


def _sizes(task_names, byte_sizes: dict, cache_dir: str | None) -> tuple[dict, str]:
  """Cached train token counts when every task has a matching cache, else converted bytes."""
  if cache_dir:
    counts = {}
    for name in task_names:
      task = seqio.TaskRegistry.get(name)
      path = cache.cached_path(task, cache_dir)
      if path is None:
        break
      try:
        cache.check_fingerprint(task, path)
      except ValueError as e:  # reading it is refused later (or use_cached=False, or `data cache --overwrite`)
        log.warning("mixing %s by bytes: %s", task.name, str(e).split(";")[0])
        break
      with tf.io.gfile.GFile(seqio.get_cached_stats_path(path, "train")) as f:
        counts[name] = json.load(f)["targets_tokens"]
    else:
      return counts, f"tokens (seqio cache {cache_dir})"
  return byte_sizes, "UTF-8 bytes (stats.json; cache the tasks for token counts)"


@gin.configurable(module="tasks")
def register_code_corpus(
  pl_dir: str | None = None,
  nl_dirs: dict | None = None,
  vocabulary_path: str | None = None,
  languages: list | None = None,
  temperature: float = 1.0,
  pl_share: float = 0.8,
  mixture_name: str = "code_corpus",
  cache_dir: str | None = None,
  train_shards: int | None = None,
) -> dict:
  """Registers code_<language> tasks, NL tasks and the mixture; returns {task: rate}.

  Nothing happens when pl_dir is None (the recipe is not in use). languages: the converter's
  language names to keep (None: all with training documents). train_shards: each language reads only
  its first that many train shards (a fixed subset for multi-epoch studies; validation stays whole).
  """
  require_int("tasks.register_code_corpus.train_shards", train_shards, 1, allow_none=True)
  if train_shards and cache_dir:
    raise ValueError(
      f"tasks.register_code_corpus.train_shards={train_shards} reads the first shards of {pl_dir}, but the cache "
      f"{cache_dir} (CACHE_DIR) holds every shard under the same task names: bind CACHE_DIR = None"
    )
  if pl_dir is None:
    return {}
  if not vocabulary_path:
    raise ValueError("tasks.register_code_corpus.vocabulary_path (VOCABULARY) is not set")
  vocabulary = load_vocabulary(vocabulary_path)
  stats = _stats(pl_dir)
  dirs = stats.get("language_dirs") or {}
  if not dirs:
    raise ValueError(f"{pl_dir}/stats.json has no languages: convert with --language_field (e.g. lang)")
  chosen = list(dirs) if languages is None else list(languages)
  unknown = [lang for lang in chosen if lang not in dirs]
  if unknown:
    raise ValueError(
      f"tasks.register_code_corpus.languages: {unknown} are not in {pl_dir}/stats.json (it has {sorted(dirs)})"
    )
  sizes, groups, empty = {}, {}, []
  folders = {}  # names that differ only in case or punctuation ('C++', 'cpp') share one folder and task
  for lang in chosen:
    folders.setdefault(dirs[lang], []).append(lang)
  for folder, names in sorted(folders.items()):
    source, _ = _source(pl_dir, folder, train_shards)
    if source is None:
      empty.extend(names)
      continue
    name = f"code_{folder}"
    text_task(name, source, vocabulary)
    sizes[name], groups[name] = sum(stats["language_bytes"][lang] for lang in names), "pl"
    if len(names) > 1:
      log.warning("languages %s share the folder %s/: one task, %s", names, folder, name)
  if empty:
    log.warning("no training documents for %s in %s: left out of %s", empty, pl_dir, mixture_name)
  for name, folder in (nl_dirs or {}).items():
    nl_stats = _stats(folder)
    source, train_bytes = _source(folder, "text")
    if source is None:
      raise ValueError(f"tasks.register_code_corpus.nl_dirs[{name!r}]: {folder}/text holds no training documents")
    text_task(name, source, vocabulary)
    # its documents' UTF-8 bytes; a folder converted before stats.json kept them: its shards' bytes
    sizes[name], groups[name] = sum((nl_stats.get("bytes") or {"train": train_bytes}).values()), "nl"
  if not sizes:
    raise ValueError(f"{pl_dir}: none of {chosen} has training documents")
  sizes, unit = _sizes(list(sizes), sizes, cache_dir)
  rates = mixture_rates(sizes, groups, temperature, pl_share)
  add_mixture(mixture_name, sorted(rates.items()))
  top = ", ".join(f"{t} {r:.3f}" for t, r in sorted(rates.items(), key=lambda x: -x[1])[:8])
  log.info("%s: %d tasks by %s, temperature %g: %s", mixture_name, len(rates), unit, temperature, top)
  return rates
