"""The embedded default corpus: PL and NL documents gathered from this machine's own files.

`jaxformer data build-local --output_dir=DIR` writes

    DIR/{pl,nl}/{train,validation}-SSSSS-of-NNNNN.tfrecord   tf.train.Example: text, path, lang
    DIR/stats.json   documents and bytes per class, split and language; skips by reason

Files are chosen in a deterministic pseudo-random order (by a hash of their path) until each
class's byte budget is filled, so a small budget still samples every root.
"""

import collections
import dataclasses
import gzip
import hashlib
import json
import os
import pathlib
import sys
import sysconfig

from jaxformer import fs, runlock
from jaxformer.data.ingest.languages import classify

SPLITS = ("train", "validation")
CLASSES = ("pl", "nl")
SKIP_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".tox", ".mypy_cache", ".pytest_cache"}


def default_roots() -> list[str]:
  """Where this machine keeps source code and prose: Python's stdlib and site-packages, system
  headers, Debian's package docs, and other installed trees."""
  paths = sysconfig.get_paths()
  candidates = [
    paths["stdlib"],
    paths["purelib"],
    paths["platlib"],
    paths["include"],
    os.path.join(sys.base_prefix, "lib"),
    "/usr/include",
    "/usr/local/include",
    "/usr/share/doc",
    "/usr/lib/python3",
    "/usr/share/perl5",
    "/usr/lib/node_modules",
    "/usr/local/lib/node_modules",
    "/usr/share/javascript",
    "/usr/share/cmake",
  ]
  roots = []
  for root in candidates:
    real = os.path.realpath(root)
    if os.path.isdir(real) and not any(real == r or real.startswith(r + os.sep) for r in roots):
      roots = [r for r in roots if not r.startswith(real + os.sep)] + [real]
  return sorted(roots)


@dataclasses.dataclass(frozen=True)
class CorpusOptions:
  max_bytes: int = 48 * 2**20  # the whole corpus (UTF-8 bytes of documents kept)
  pl_fraction: float = 0.75  # share of max_bytes for PL; NL gets the rest
  max_file_bytes: int = 200_000  # larger files are 'oversized'
  max_line_chars: int = 1000  # a PL file with a longer line is 'minified' (or generated)
  max_mean_line_chars: float = 200.0
  validation_percent: int = 2  # by content hash, so a document's split never changes
  train_shards: int = 8
  validation_shards: int = 2


def _path_order(path: str) -> str:
  return hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()


def list_candidates(roots, exclude: str | None = None):
  """(order_key, path, class, language) for every readable-looking file, and skip counts."""
  skipped = collections.Counter()
  found = []
  exclude = os.path.realpath(exclude) if exclude else None
  for root in roots:
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: skipped.update(["unreadable"])):
      dirnames[:] = sorted(
        d for d in dirnames if d not in SKIP_DIRS and not (exclude and os.path.join(dirpath, d) == exclude)
      )
      for name in filenames:
        path = os.path.join(dirpath, name)
        kind = classify(pathlib.Path(name))
        if kind is None or os.path.islink(path):
          continue
        found.append((_path_order(path), path, kind[0], kind[1]))
  found.sort()
  return found, skipped


def read_document(path: str, kind: str, options: CorpusOptions) -> tuple[str | None, str | None]:
  """(text, None) for a usable document, else (None, reason)."""
  try:
    size = os.path.getsize(path)
    if size == 0:
      return None, "empty"
    if size > options.max_file_bytes:
      return None, "oversized"
    with open(path, "rb") as f:
      raw = f.read()
    if path.endswith(".gz"):
      raw = gzip.decompress(raw)
      if len(raw) > options.max_file_bytes:
        return None, "oversized"
  except (OSError, EOFError, gzip.BadGzipFile):
    return None, "unreadable"
  if b"\x00" in raw:
    return None, "binary"
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError:
    return None, "non_utf8"
  if not text.strip():
    return None, "empty"
  if kind == "pl":
    lines = text.splitlines() or [""]
    if max(map(len, lines)) > options.max_line_chars or len(text) / len(lines) > options.max_mean_line_chars:
      return None, "minified"
  return text, None


def split_of(digest: str, validation_percent: int) -> str:
  return "validation" if int(digest[:8], 16) % 100 < validation_percent else "train"


def validation_shards(num_shards: int) -> int:
  """Validation shards of a converted folder with num_shards train shards: a quarter, at least one."""
  return max(1, num_shards // 4)


def shard_paths(output_dir, kind: str, split: str, num_shards: int) -> list[str]:
  return [os.path.join(output_dir, kind, f"{split}-{i:05d}-of-{num_shards:05d}.tfrecord") for i in range(num_shards)]


def _example(text: str, path: str, lang: str) -> bytes:
  import tensorflow as tf

  feature = lambda s: tf.train.Feature(bytes_list=tf.train.BytesList(value=[s.encode("utf-8", "surrogateescape")]))
  return tf.train.Example(
    features=tf.train.Features(feature={"text": feature(text), "path": feature(path), "lang": feature(lang)})
  ).SerializeToString()


def build_local_corpus(
  output_dir, roots=None, options: CorpusOptions = CorpusOptions(), progress=None, overwrite: bool = False
) -> dict:
  """Gathers, filters, deduplicates and writes the corpus; returns the stats it wrote.

  The corpus is built beside output_dir and moved into place only when complete; an existing corpus
  is replaced only with overwrite=True. Raises ValueError (nothing written) when a root is missing or
  no document survives the filters.
  """
  output_dir = os.path.abspath(output_dir)
  roots = default_roots() if roots is None else [os.path.realpath(r) for r in roots]
  missing = [r for r in roots if not os.path.isdir(r)]
  if missing:
    raise ValueError(f"--roots: {', '.join(missing)} is not a folder")
  fs.check_replaceable(output_dir, overwrite)  # refuse before the long scan, not after it
  return _build(output_dir, roots, options, progress, overwrite)


def _build(output_dir: str, roots: list[str], options: CorpusOptions, progress, overwrite: bool) -> dict:
  import tensorflow as tf

  candidates, skipped = list_candidates(roots, exclude=output_dir)
  budget = {"pl": int(options.max_bytes * options.pl_fraction)}
  budget["nl"] = options.max_bytes - budget["pl"]
  used = collections.Counter()
  seen = set()
  kept = {(k, s): [] for k in CLASSES for s in SPLITS}
  for _, path, kind, lang in candidates:
    if used[kind] >= budget[kind]:
      if all(used[k] >= budget[k] for k in CLASSES):
        break
      continue
    text, reason = read_document(path, kind, options)
    if reason:
      skipped[reason] += 1
      continue
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if digest in seen:
      skipped["duplicate"] += 1
      continue
    seen.add(digest)
    size = len(text.encode("utf-8"))
    used[kind] += size
    kept[(kind, split_of(digest, options.validation_percent))].append((text, path, lang, size))
    if progress:
      progress(sum(used.values()), options.max_bytes)

  if not any(kept.values()):
    raise ValueError(
      f"found no documents to keep under {', '.join(roots)} (skipped: {dict(skipped) or 'none'}); "
      f"{output_dir} is unchanged"
    )
  stats = {
    "roots": roots,
    "options": dataclasses.asdict(options),
    "skipped": dict(sorted(skipped.items())),
    "classes": {},
  }
  with runlock.building(output_dir, overwrite, "data build-local") as partial:
    for (kind, split), docs in kept.items():
      num_shards = options.train_shards if split == "train" else options.validation_shards
      paths = shard_paths(partial, kind, split, num_shards)
      os.makedirs(os.path.dirname(paths[0]), exist_ok=True)
      writers = [tf.io.TFRecordWriter(p) for p in paths]
      languages = collections.defaultdict(lambda: {"documents": 0, "bytes": 0})
      for i, (text, path, lang, size) in enumerate(docs):
        writers[i % num_shards].write(_example(text, path, lang))
        languages[lang]["documents"] += 1
        languages[lang]["bytes"] += size
      for writer in writers:
        writer.close()
      stats["classes"].setdefault(kind, {})[split] = {
        "documents": len(docs),
        "bytes": sum(d[3] for d in docs),
        "shards": num_shards,
        "languages": dict(sorted(languages.items(), key=lambda kv: -kv[1]["bytes"])),
      }
    with open(os.path.join(partial, "stats.json"), "w") as f:
      json.dump(stats, f, indent=1)
  return stats


def check_corpus(corpus_dir) -> dict:
  """The corpus's stats, or a FileNotFoundError that says how to build it."""
  stats_path = os.path.join(os.path.expanduser(str(corpus_dir)), "stats.json")
  if not os.path.exists(stats_path):
    raise FileNotFoundError(
      f"no local corpus at {corpus_dir} ({stats_path} is missing); build it with "
      f"`jaxformer data build-local --output_dir={corpus_dir}`"
    )
  with open(stats_path) as f:
    stats = json.load(f)
  if "classes" not in stats:  # a `data convert` output: its stats.json counts written documents
    raise ValueError(
      f"{corpus_dir} is a `jaxformer data convert` folder, not a local corpus (pl/, nl/ from "
      f"`jaxformer data build-local`); gather the raw files with `jaxformer data build-local "
      f"--output_dir=DIR --roots=...` and train the tokenizer on DIR"
    )
  return stats
