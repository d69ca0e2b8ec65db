"""`jaxformer data convert`: JSONL, JSONL.gz or Parquet files (local or gs://) -> TFRecord shards,
as an Apache Beam pipeline (DirectRunner here, Dataflow or any Beam runner for large corpora).

Why a conversion step: training resumes from a saved tf.data iterator, and only native TF
readers (TFRecord) can be checkpointed; Python generators over JSON or Parquet cannot. Real
corpora (The Stack, The Pile) are converted once: filtered (jaxformer/data/ingest/filters.py), kept
by licence (an allow-list, with --license_field), decontaminated against the shipped benchmarks
(decontaminate.py), exactly and then near-deduplicated (MinHash LSH, minhash.py) across all inputs,
split by content hash and sharded by it, so the output does not depend on how many workers ran. The
pipeline itself is jaxformer/data/ingest/convert_beam.py.

Layout (shards: SSSSS-of-NNNNN; validation gets corpus.validation_shards, a quarter):
  without a language field  DIR/text/{train,validation}-SSSSS-of-NNNNN.tfrecord
  with --language_field     DIR/<language_dir(language)>/{train,validation}-SSSSS-of-NNNNN.tfrecord
  DIR/stats.json            counts (see convert_files)
"""

import dataclasses
import hashlib
import json
import os
import time

from jaxformer import fs, runlock
from jaxformer.data.ingest.beam_options import pipeline_options
from jaxformer.data.ingest.corpus import validation_shards
from jaxformer.data.ingest.decontaminate import Decontamination
from jaxformer.data.ingest.filters import Filters
from jaxformer.data.ingest.languages import language_dir
from jaxformer.data.ingest.minhash import NearDedup
from jaxformer.data.ingest.records import SUFFIXES, check_parquet_license_column

COUNTS_FILE = ".convert-counts.json"
DEFAULT_NEAR_DEDUP = NearDedup()


def _input_paths(file_pattern: str) -> list[str]:
  import tensorflow as tf

  pattern = fs.resolve(file_pattern)
  paths = sorted(tf.io.gfile.glob(pattern))
  if not paths:
    raise FileNotFoundError(f"--input={file_pattern} matches no files")
  bad = [p for p in paths if not p.endswith(SUFFIXES)]
  if bad:
    raise ValueError(f"--input={file_pattern}: {bad[:3]} are not .jsonl, .jsonl.gz, .json(.gz) or .parquet")
  return paths


@dataclasses.dataclass(frozen=True)
class Settings:
  """What decides which documents a conversion writes (the cache's fingerprint covers all of it)."""

  text_field: str = "text"
  language_field: str | None = None
  filters: Filters = Filters()
  license_field: str | None = None
  allowed_licenses: frozenset | None = None  # lowercase names; None keeps every licence
  decontamination: Decontamination = Decontamination()
  near_dedup: NearDedup | None = NearDedup()  # None: exact dedup only

  def check(self) -> None:
    self.filters.check()
    self.decontamination.check()
    if self.near_dedup is not None:
      self.near_dedup.check()
    if self.allowed_licenses is not None and self.license_field is None:
      raise ValueError("--allowed_licenses needs --license_field (the field or column that names each licence)")
    if self.allowed_licenses is not None and not self.allowed_licenses:
      raise ValueError("--allowed_licenses is empty: name the licences to keep (e.g. mit,apache-2.0)")

  def record(self) -> dict:
    """The settings as stats.json records them; `settings_digest` is their sha256."""
    out = {
      "text_field": self.text_field,
      "language_field": self.language_field,
      **dataclasses.asdict(self.filters),
      "license_field": self.license_field,
      "allowed_licenses": sorted(self.allowed_licenses) if self.allowed_licenses is not None else None,
      "decontamination": {**dataclasses.asdict(self.decontamination), "benchmark": "HumanEval prompts + solutions"},
      "near_dedup": None,
    }
    if self.near_dedup is not None:
      bands, rows = self.near_dedup.bands
      out["near_dedup"] = {**dataclasses.asdict(self.near_dedup), "bands": bands, "rows": rows}
    out["settings_digest"] = hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest()
    return out


def convert_files(
  file_pattern: str,
  output_dir: str,
  text_field: str = "text",
  language_field: str | None = None,
  validation_percent: int = 1,
  num_shards: int = 8,
  filters: Filters | None = None,
  overwrite: bool = False,
  options=None,
  license_field: str | None = None,
  allowed_licenses=None,
  decontamination: Decontamination | None = None,
  near_dedup: NearDedup | None = DEFAULT_NEAR_DEDUP,
) -> dict:
  """Converts every file matching file_pattern with a Beam pipeline; returns the stats it wrote.

  options: Beam PipelineOptions (default: pipeline_options(), the in-process DirectRunner).
  Inputs and flags are checked before anything runs; the output is built in a temporary folder
  beside output_dir (fs.replaced_on_success) and moved into place only when complete: an existing
  output is replaced only with overwrite=True, and none of its old shards remain. A pipeline that
  fails, or converts no document, raises ValueError and leaves output_dir as it was.

  near_dedup=None keeps exact deduplication only; allowed_licenses (names, any case) keeps the
  documents whose every licence is allowed (a record without one is 'unknown').

  stats.json: written {train, validation}, duplicates (exact copies), near_duplicates {language: n}
  (removed documents, with their exact copies), near_dedup_too_short {language: n} (fewer word tokens
  than a shingle: exact dedup only), near_duplicate_pairs [{removed, kept, jaccard}, up to 20],
  contaminated {HumanEval task: documents}, contaminated_documents [{where, task_id}] (dropped with
  --decontaminate=drop, kept and listed with list), licenses {name: {written, dropped}}, skipped
  {reason: n}, skipped_examples {reason: [where, ... up to 5, smallest first]}, languages {language:
  documents}, language_bytes {language: UTF-8 bytes}, language_dirs {language: folder} (the three
  empty without a language field), documents_read (written + duplicates + near duplicates +
  skipped), input, the settings (Settings.record, with settings_digest), num_shards,
  validation_shards, validation_percent, seconds, documents_per_second.
  """
  import apache_beam as beam

  from jaxformer.data.ingest import convert_beam

  start = time.time()
  if num_shards < 1:
    raise ValueError(f"--num_shards={num_shards} must be positive")
  if not 0 <= validation_percent <= 100:
    raise ValueError(f"--validation_percent={validation_percent} must be within 0..100")
  allowed = None if allowed_licenses is None else frozenset(n.strip().lower() for n in allowed_licenses if n.strip())
  settings = Settings(
    text_field,
    language_field,
    filters or Filters(),
    license_field,
    allowed,
    decontamination or Decontamination(),
    near_dedup,
  )
  settings.check()
  paths = _input_paths(file_pattern)
  if license_field is not None:
    for path in paths:
      if path.endswith(".parquet"):
        check_parquet_license_column(path, license_field)
  options = options if options is not None else pipeline_options()
  output_dir = fs.check_replaceable(output_dir, overwrite)
  with runlock.building(output_dir, overwrite, "data convert") as partial:
    counts_path = os.path.join(partial, COUNTS_FILE)
    try:
      with beam.Pipeline(options=options) as pipeline:
        convert_beam.build(
          pipeline,
          paths,
          partial,
          counts_path,
          settings=settings,
          validation_percent=validation_percent,
          num_shards=num_shards,
        )
    except Exception as e:
      first = str(e).strip().splitlines()[-1:] or [""]
      raise ValueError(
        f"--input={file_pattern}: the conversion pipeline failed ({type(e).__name__}: {first[0][:300]}); "
        f"{output_dir} is unchanged"
      ) from e
    with fs.open(counts_path) as f:
      collected = json.load(f)
    fs.remove(counts_path)
    stats = _stats(collected, file_pattern, settings, num_shards, validation_percent)
    short = sum(stats["near_dedup_too_short"].values())
    # A shingle chosen larger than every document is a mistake; tiny documents under the default are not.
    chosen = near_dedup is not None and near_dedup.ngram > DEFAULT_NEAR_DEDUP.ngram
    if chosen and short and short >= sum(stats["written"].values()):
      raise ValueError(
        f"--near_dedup_ngram={near_dedup.ngram}: no document converted has that many words, so none could be "
        f"near-deduplicated; lower it or pass --near_dedup=none; {output_dir} is unchanged"
      )
    if not sum(stats["written"].values()):
      raise ValueError(
        f"--input={file_pattern}: no document converted (skipped: {stats['skipped'] or 'none'}); "
        f"{output_dir} is unchanged"
      )
    stats["seconds"] = round(time.time() - start, 3)
    stats["documents_per_second"] = round(stats["documents_read"] / max(stats["seconds"], 1e-9), 1)
    fs.write(os.path.join(partial, "stats.json"), json.dumps(stats, indent=1))
  return stats


def _stats(collected, file_pattern, settings: Settings, num_shards, validation_percent) -> dict:
  counts = collected["counts"]
  written = {split: counts.get("written", {}).get(split, 0) for split in ("train", "validation")}
  duplicates = counts.get("duplicates", {}).get("", 0)
  near = {language or "all": n for language, n in sorted(counts.get("near_duplicates", {}).items())}
  skipped = dict(sorted(counts.get("skipped", {}).items()))
  languages = dict(sorted(counts.get("languages", {}).items()))
  licenses = {}
  for kind in ("written", "dropped"):
    for name, n in counts.get(f"license_{kind}", {}).items():
      licenses.setdefault(name, {"written": 0, "dropped": 0})[kind] = n
  return {
    "input": file_pattern,
    **settings.record(),
    "num_shards": num_shards,
    "validation_shards": validation_shards(num_shards),
    "validation_percent": validation_percent,
    "written": written,
    "duplicates": duplicates,
    "near_duplicates": near,
    "near_dedup_too_short": {k or "all": v for k, v in sorted(counts.get("near_dedup_too_short", {}).items())},
    "near_duplicate_pairs": collected["near_duplicate_pairs"],
    "contaminated": dict(sorted(counts.get("contaminated", {}).items())),
    "contaminated_documents": collected["contaminated_documents"],
    "licenses": dict(sorted(licenses.items())),
    "skipped": skipped,
    "skipped_examples": dict(sorted(collected["examples"].items())),
    "languages": languages,
    "language_bytes": dict(sorted(counts.get("language_bytes", {}).items())),
    "language_dirs": {language: language_dir(language) for language in languages},
    "bytes": {split: counts.get("bytes", {}).get(split, 0) for split in ("train", "validation")},
    "content_digest": {folder: f"{total % 2**256:064x}" for folder, total in sorted(counts.get("content", {}).items())},
    "documents_read": sum(written.values()) + duplicates + sum(near.values()) + sum(skipped.values()),
  }


def summary(stats: dict) -> str:
  """The one line `data convert` prints."""
  listed = lambda counts: ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"
  top = dict(sorted(stats["languages"].items(), key=lambda kv: -kv[1])[:8])
  more = len(stats["languages"]) - len(top)
  return (
    f"written: {listed(stats['written'])}; duplicates: {stats['duplicates']}; "
    f"near duplicates: {listed(stats['near_duplicates']) if stats['near_dedup'] else 'off'}; "
    f"contaminated: {sum(stats['contaminated'].values())} ({stats['decontamination']['mode']}); "
    f"skipped: {listed(stats['skipped'])}; "
    f"languages: {listed(top)}{f' (+{more} more)' if more > 0 else ''}; "
    f"{stats['seconds']:.1f} s, {stats['documents_per_second']:,.0f} documents/s"
  )
