"""`jaxformer data convert`: JSONL, JSONL.gz or Parquet files (local or gs://) -> TFRecord shards.

Why a conversion step: training resumes from a saved tf.data iterator, and only native TF
readers (TFRecord) can be checkpointed; Python generators over JSON or Parquet cannot. Real
corpora (The Stack, The Pile) are converted once, in parallel per input file, and then read
like the local corpus.
"""

import collections
import dataclasses
import gzip
import hashlib
import io
import json
import os

import tensorflow as tf

from jaxformer import fs
from jaxformer.data.corpus import _example, shard_paths, split_of

SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")


@dataclasses.dataclass
class ConvertReport:
  documents: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  problems: list = dataclasses.field(default_factory=list)  # "file:line: reason", first 20

  def skip(self, reason: str, where: str):
    self.skipped[reason] += 1
    if len(self.problems) < 20:
      self.problems.append(f"{where}: {reason}")


def _records(path: str, text_field: str, report: ConvertReport):
  """(text, where) of each usable record of one input file; bad records are skipped and counted."""
  with tf.io.gfile.GFile(path, "rb") as f:
    raw = f.read()
  if path.endswith(".parquet"):
    import pyarrow.parquet as pq

    try:
      table = pq.read_table(io.BytesIO(raw))
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for truncated or foreign files
      report.skip("unreadable Parquet", f"{path} ({type(e).__name__}: {str(e)[:200]})")
      return
    if text_field not in table.column_names:
      report.skip(f"no column {text_field!r} (columns: {table.column_names})", path)
      return
    for row, text in enumerate(table.column(text_field).to_pylist()):
      if isinstance(text, str) and text.strip():
        if _encodable(text, f"{path}:row {row}", report):
          yield text, f"{path}:row {row}"
      else:
        report.skip("empty or not a string", f"{path}:row {row}")
    return
  if path.endswith(".gz"):
    raw = gzip.decompress(raw)
  for number, line in enumerate(raw.split(b"\n"), start=1):
    if not line.strip():
      continue
    where = f"{path}:{number}"
    try:
      record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
      report.skip("not JSON", where)
      continue
    text = record.get(text_field) if isinstance(record, dict) else None
    if not isinstance(text, str) or not text.strip():
      report.skip(f"no text in field {text_field!r}", where)
      continue
    if _encodable(text, where, report):
      yield text, where


def _encodable(text: str, where: str, report: ConvertReport) -> bool:
  """JSON may hold lone surrogates (\\ud800) that no UTF-8 file can: skip such a record, named."""
  try:
    text.encode("utf-8")
  except UnicodeEncodeError as e:
    report.skip("not valid Unicode (a lone surrogate)", f"{where} (character {e.start})")
    return False
  return True


def convert_files(
  file_pattern: str,
  output_dir: str,
  text_field: str = "text",
  validation_percent: int = 1,
  num_shards: int = 8,
  overwrite: bool = False,
) -> ConvertReport:
  """Converts every file matching file_pattern; writes DIR/text/{train,validation}-*.tfrecord and stats.json.

  Inputs are checked before anything is written; the output is built beside output_dir and moved into
  place only when complete (an existing output is replaced only with overwrite=True, and none of its
  old shards remain). Raises ValueError when no document converts.
  """
  paths = sorted(tf.io.gfile.glob(file_pattern))
  if not paths:
    raise FileNotFoundError(f"--input={file_pattern} matches no files")
  bad = [p for p in paths if not p.endswith(SUFFIXES)]
  if bad:
    raise ValueError(f"--input={file_pattern}: {bad[:3]} are not .jsonl, .jsonl.gz or .parquet")
  fs.check_replaceable(output_dir, overwrite)
  report = ConvertReport()
  with fs.replaced_on_success(output_dir, overwrite) as partial:
    tf.io.gfile.makedirs(os.path.join(partial, "text"))
    writers = {
      split: [tf.io.TFRecordWriter(p) for p in shard_paths(partial, "text", split, n)]
      for split, n in (("train", num_shards), ("validation", max(1, num_shards // 4)))
    }
    for path in paths:
      try:
        for text, where in _records(path, text_field, report):
          digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
          split = split_of(digest, validation_percent)
          shard = writers[split][int(digest[8:16], 16) % len(writers[split])]
          shard.write(_example(text, where, "text"))
          report.documents[split] += 1
      except (OSError, EOFError, gzip.BadGzipFile) as e:
        report.skip(f"unreadable ({e.__class__.__name__}: {e})", path)
    for shards in writers.values():
      for writer in shards:
        writer.close()
    if not sum(report.documents.values()):
      raise ValueError(
        f"--input={file_pattern}: no document converted (skipped: {dict(report.skipped) or 'none'}); "
        f"{output_dir} is unchanged"
      )
    stats = {
      "input": file_pattern,
      "text_field": text_field,
      "documents": dict(report.documents),
      "skipped": dict(report.skipped),
      "problems": report.problems,
    }
    with tf.io.gfile.GFile(os.path.join(partial, "stats.json"), "w") as f:
      f.write(json.dumps(stats, indent=1))
  return report
