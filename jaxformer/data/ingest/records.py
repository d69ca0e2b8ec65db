"""The records of one input file (.jsonl, .jsonl.gz, .json, .json.gz or .parquet; local or gs://),
read as a stream: Parquet by record batches, JSONL line by line (through gzip for .gz), so a
multi-GB file never sits in memory whole.

`read_records` yields Record(text, language, where, licenses) for usable records and Skip(reason,
where) for the others; `where` is "FILE:row N" (Parquet, 0-based row) or "FILE:LINE" (JSONL, 1-based).
A licence field (The Stack's `max_stars_repo_licenses` list, or a `license` string) becomes a sorted
tuple of lowercase names; a record without one has ("unknown",).
"""

import gzip
import json
import re
import typing

from jaxformer import fs

SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")
UNKNOWN_LANGUAGE = "unknown"
# A language name longer than this is not one (a misread column): the record is skipped and counted.
MAX_LANGUAGE_CHARS = 100
PARQUET_BATCH_ROWS = 1024


def natural_key(where: str):
  """'f:row 9' before 'f:row 10': digit runs compare as numbers (the pieces alternate str, int)."""
  return [int(piece) if i % 2 else piece for i, piece in enumerate(re.split(r"(\d+)", where))]


class Record(typing.NamedTuple):
  text: str
  language: str | None  # None without a language field; "unknown" where the record has none
  where: str
  licenses: tuple[str, ...] | None = None  # None without a licence field


class LicenseTypeError(ValueError):
  """A licence field that holds neither a string nor a list of strings."""


class Skip(typing.NamedTuple):
  reason: str
  where: str


def read_records(path: str, text_field: str, language_field: str | None = None, license_field: str | None = None):
  """Record or Skip for every record of one file; a file that cannot be read (or stops being
  readable half way) yields one Skip after the records read before the error."""
  if path.endswith(".parquet"):
    reader = _parquet
  elif path.endswith((".json", ".json.gz")) and _starts_an_array(path):
    reader = _json_array
  else:
    reader = _jsonl
  yield from reader(path, text_field, language_field, license_field)


def licenses(value, license_field: str | None) -> tuple[str, ...] | None:
  """A licence field's value as a sorted tuple of lowercase names; LicenseTypeError when it is neither
  a string nor a list of strings."""
  if license_field is None:
    return None
  if value is None or (isinstance(value, (list, tuple)) and not value):
    return ("unknown",)
  if isinstance(value, str):
    value = [value]
  if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
    raise LicenseTypeError(f"licence field {license_field!r} is not a string or a list of strings")
  names = sorted({v.strip().lower() for v in value if v.strip()})
  return tuple(names) or ("unknown",)


def check_parquet_license_column(path: str, license_field: str) -> None:
  """Raises ValueError naming the file and column when a Parquet file's licence column is of another
  type than string or list of strings (each record would otherwise be skipped for it)."""
  import pyarrow as pa
  import pyarrow.parquet as pq

  with fs.open(path, "rb") as f:
    schema = pq.ParquetFile(f).schema_arrow
  if license_field not in schema.names:
    return
  kind = schema.field(license_field).type
  stringy = lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)
  listy = (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and stringy(kind.value_type)
  if not (stringy(kind) or listy):
    raise ValueError(
      f"--license_field={license_field}: column {license_field!r} of {path} is {kind}, "
      "not a string or a list of strings"
    )


def _open_text(path):
  raw = fs.open(path, "rb")
  return gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw


def _starts_an_array(path) -> bool:
  """A .json file that holds one JSON array of records (not one record a line)."""
  try:
    with _open_text(path) as f:
      return f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[")
  except (OSError, EOFError, gzip.BadGzipFile):
    return False  # _jsonl names the problem


def _record(record, text_field, language_field, license_field, where):
  if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
    return Skip(f"no text in field {text_field!r}", where)
  try:
    found = licenses(record.get(license_field), license_field)
  except LicenseTypeError as e:
    return Skip(str(e), where)
  return _checked(record[text_field], _language(record.get(language_field), language_field), where, found)


def _json_array(path, text_field, language_field, license_field):
  """A .json array is parsed whole (such files are small; large corpora come as JSONL or Parquet)."""
  try:
    with _open_text(path) as f:
      records = json.load(f)
  except (OSError, EOFError, gzip.BadGzipFile, json.JSONDecodeError, UnicodeDecodeError) as e:
    yield Skip(f"unreadable ({e.__class__.__name__}: {str(e)[:200]})", path)
    return
  for index, record in enumerate(records):
    yield _record(record, text_field, language_field, license_field, f"{path}:item {index}")


def _language(value, language_field):
  if language_field is None:
    return None
  if value is None or (isinstance(value, str) and not value.strip()):
    return UNKNOWN_LANGUAGE
  value = value.strip() if isinstance(value, str) else str(value)
  return value.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate (JSON allows it) -> '?'


def _checked(text, language, where, found_licenses=None):
  """JSON may hold lone surrogates (\\ud800) that no UTF-8 file can: such a record is skipped, as is one
  whose language name is too long to be a language (it would become a folder name)."""
  try:
    text.encode("utf-8")
  except UnicodeEncodeError:
    return Skip("not valid Unicode (a lone surrogate)", where)
  if language is not None and len(language) > MAX_LANGUAGE_CHARS:
    return Skip(f"language name over {MAX_LANGUAGE_CHARS} characters", where)
  return Record(text, language, where, found_licenses)


def _parquet(path, text_field, language_field, license_field):
  import pyarrow.parquet as pq

  row = 0
  try:
    with fs.open(path, "rb") as f:
      parquet = pq.ParquetFile(f)
      names = parquet.schema_arrow.names
      if text_field not in names:
        yield Skip(f"no column {text_field!r} (columns: {names})", path)
        return
      optional = [f for f in (language_field, license_field) if f in names and f != text_field]
      columns = [text_field] + sorted(set(optional))
      for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
        texts = batch.column(text_field).to_pylist()
        languages, licences = (
          batch.column(field).to_pylist() if field in names else [None] * len(texts)
          for field in (language_field, license_field)
        )
        for text, language, licence in zip(texts, languages, licences):
          where = f"{path}:row {row}"
          row += 1
          if isinstance(text, str):
            yield _checked(text, _language(language, language_field), where, licenses(licence, license_field))
          else:
            yield Skip(f"no text in field {text_field!r}", where)
  except Exception as e:  # pyarrow raises ArrowInvalid / OSError for truncated or foreign files
    yield Skip("unreadable Parquet", f"{path}:row {row} ({type(e).__name__}: {str(e)[:200]})")


def _jsonl(path, text_field, language_field, license_field):
  number = 0
  try:
    with fs.open(path, "rb") as raw:
      lines = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
      for number, line in enumerate(lines, start=1):
        if not line.strip():
          continue
        where = f"{path}:{number}"
        try:
          record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
          yield Skip("not JSON", where)
          continue
        yield _record(record, text_field, language_field, license_field, where)
  except (OSError, EOFError, gzip.BadGzipFile) as e:
    yield Skip(f"unreadable ({e.__class__.__name__}: {e})", f"{path}:{number + 1}")
