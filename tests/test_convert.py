"""`data convert` as a Beam pipeline (the real DirectRunner, real Parquet and gzip files)."""

import gzip
import hashlib
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from jaxformer import cli
from jaxformer.data.ingest import beam_options, convert, languages
from jaxformer.data.ingest.filters import Filters
from jaxformer.data.pipeline import cache

TIMING = set(cache.TIMING_KEYS)  # the stats.json fields that change when nothing else does


def _python(i):
  return f"def f{i}(x):\n    return x + {i}\n"


def _java(i):
  return f"class C{i} {{\n  int get() {{ return {i}; }}\n}}\n"


def _tree(folder) -> dict:
  """relative path -> sha256 of every file under folder."""
  hashes = {}
  for dirpath, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(dirpath, name)
      with open(path, "rb") as f:
        hashes[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
  return hashes


def _documents(folder) -> list:
  """(text, lang, folder) of every record of every shard."""
  found = []
  for path in sorted(tf.io.gfile.glob(os.path.join(folder, "*", "*.tfrecord"))):
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
      feature = tf.train.Example.FromString(record).features.feature
      found.append(
        (
          feature["text"].bytes_list.value[0].decode(),
          feature["lang"].bytes_list.value[0].decode(),
          os.path.basename(os.path.dirname(path)),
        )
      )
  return found


@pytest.fixture
def parquet_shards(tmp_path):
  """Three Parquet files: 12 Python and 8 C++ documents, each in two files (20 duplicates), one empty
  record and one minified line per file."""
  raw = tmp_path / "raw"
  raw.mkdir()
  docs = [(_python(i), "Python") for i in range(12)] + [(_java(i), "C++") for i in range(8)]
  for s in range(3):
    chosen = [d for i, d in enumerate(docs) if i % 3 != s]  # each document in exactly two files
    chosen += [("  \n", "Python"), ("x = [" + "1, " * 600 + "]\n", "Python")]
    pq.write_table(
      pa.table({"content": [t for t, _ in chosen], "lang": [lang for _, lang in chosen]}), raw / f"part-{s}.parquet"
    )
  return raw, docs


def _convert(raw, out, *extra):
  return cli.main(
    [
      "data",
      "convert",
      f"--input={raw}/*.parquet",
      f"--output_dir={out}",
      "--text_field=content",
      "--language_field=lang",
      "--runner=direct",
      *extra,
    ]
  )


@pytest.mark.slow
def test_parquet_shards_dedup_filter_and_split_by_language_the_same_on_any_worker_count(parquet_shards, tmp_path):
  raw, docs = parquet_shards
  assert _convert(raw, tmp_path / "two", "--num_workers=2") == 0
  found = _documents(tmp_path / "two")
  expected_folder = {"Python": "python", "C++": "cpp"}
  assert sorted(found) == sorted((t, lang, expected_folder[lang]) for t, lang in docs)  # each exactly once
  with open(tmp_path / "two" / "stats.json") as f:
    stats = json.load(f)
  assert sum(stats["written"].values()) == 20 and set(stats["written"]) == {"train", "validation"}
  assert stats["duplicates"] == 20
  assert stats["skipped"] == {"empty": 3, "long line": 3}
  assert stats["skipped_examples"]["empty"] == [f"{raw}/part-{s}.parquet:row {14 - (s != 2)}" for s in range(3)]
  assert stats["languages"] == {"C++": 8, "Python": 12}
  assert stats["language_bytes"]["C++"] == sum(len(_java(i).encode()) for i in range(8))
  assert stats["language_dirs"] == {"C++": "cpp", "Python": "python"}
  for folder in ("cpp", "python"):
    names = sorted(os.listdir(tmp_path / "two" / folder))
    assert names == [f"train-{i:05d}-of-00008.tfrecord" for i in range(8)] + [
      f"validation-{i:05d}-of-00002.tfrecord" for i in range(2)
    ]

  assert _convert(raw, tmp_path / "one", "--num_workers=1") == 0
  assert _tree(tmp_path / "one").keys() == _tree(tmp_path / "two").keys()
  one, two = _tree(tmp_path / "one"), _tree(tmp_path / "two")
  assert {k: v for k, v in one.items() if k != "stats.json"} == {k: v for k, v in two.items() if k != "stats.json"}
  with open(tmp_path / "one" / "stats.json") as f:
    stats_one = json.load(f)
  assert {k: v for k, v in stats_one.items() if k not in TIMING} == {k: v for k, v in stats.items() if k not in TIMING}


class FailingFilters(Filters):
  def reason(self, text):
    if "return x + 7" in text:
      raise RuntimeError("a worker failed")
    return super().reason(text)


def test_failed_convert_leaves_the_existing_output_untouched(parquet_shards, tmp_path, capsys):
  raw, _ = parquet_shards
  out = tmp_path / "out"
  assert _convert(raw, out) == 0
  before = _tree(out)
  bad = tmp_path / "bad"
  bad.mkdir()
  with gzip.open(bad / "all-filtered.jsonl.gz", "wt") as f:
    f.write(json.dumps({"text": "   "}) + "\n" + json.dumps({"text": "@@@@ #### $$$$\n"}) + "\n")
  (bad / "corrupt.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
  for name in ("all-filtered.jsonl.gz", "corrupt.jsonl.gz"):
    code = cli.main(["data", "convert", f"--input={bad}/{name}", f"--output_dir={out}", "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2 and f"--input={bad}/{name}" in err and "unchanged" in err, err
    assert _tree(out) == before
    assert sorted(os.listdir(tmp_path)) == ["bad", "out", "raw"]  # no temporary folder left beside it
  # A pipeline that raises half way (here a filter that fails on one document) changes nothing either.
  with pytest.raises(ValueError, match=r"--input=.*part-\*\.parquet: the conversion pipeline failed.*unchanged"):
    convert.convert_files(
      f"{raw}/part-*.parquet", str(out), text_field="content", filters=FailingFilters(), overwrite=True
    )
  assert _tree(out) == before and sorted(os.listdir(tmp_path)) == ["bad", "out", "raw"]
  # Without --overwrite an existing output is refused before the pipeline reads anything.
  assert cli.main(["data", "convert", f"--input={bad}/missing-*.jsonl", f"--output_dir={out}"]) == 2
  assert "matches no files" in capsys.readouterr().err
  assert cli.main(["data", "convert", f"--input={raw}/*.parquet", f"--output_dir={out}", "--text_field=content"]) == 2
  assert "--overwrite" in capsys.readouterr().err
  assert _tree(out) == before
  # An output path that is a file is named as such, even with --overwrite, and the file is kept.
  (tmp_path / "a_file").write_text("keep me")
  args = ["data", "convert", f"--input={raw}/*.parquet", f"--output_dir={tmp_path}/a_file", "--overwrite"]
  assert cli.main(args) == 2 and "is a file, not a folder" in capsys.readouterr().err
  assert (tmp_path / "a_file").read_text() == "keep me"


def test_jsonl_gz_reader_and_filter_skips_name_file_and_line(tmp_path):
  path = tmp_path / "code.jsonl.gz"
  lines = [
    json.dumps({"content": _python(1)}),
    "{not json",
    json.dumps({"content": _python(2) + "\ud800"}),  # a lone surrogate: JSON can hold it, UTF-8 cannot
    json.dumps({"content": "var a=1;" * 200}),  # minified: one 1600-character line
    json.dumps({"content": "".join(chr(0x2500 + i % 64) for i in range(40)) + " = 1\n"}),  # box drawing
    json.dumps({"content": _python(3), "lang": "Python\ud800"}),  # a lone surrogate in the language only
    "",
    json.dumps({"content": "x" * 90 + "\n" + "y" * 150 + "\n"}),  # mean line of 121 characters
    json.dumps({"content": _python(4), "lang": "L" * 5000}),  # not a language: would be a 5,000-character folder
  ]
  with gzip.open(path, "wt") as f:
    f.write("\n".join(lines) + "\n")
  stats = convert.convert_files(str(path), str(tmp_path / "out"), text_field="content", language_field="lang")
  where = lambda line: [f"{path}:{line}"]
  assert stats["skipped_examples"] == {
    "not JSON": where(2),
    "not valid Unicode (a lone surrogate)": where(3),
    "long line": where(4),
    "low alphanumeric": where(5),
    "long mean line": where(8),
    "language name over 100 characters": where(9),
  }
  assert stats["skipped"] == {reason: 1 for reason in stats["skipped_examples"]}
  assert sum(stats["written"].values()) == 2 and stats["duplicates"] == 0
  assert stats["languages"] == {"Python?": 1, "unknown": 1}  # a record without the field is 'unknown'
  assert sorted(_documents(tmp_path / "out")) == [(_python(1), "unknown", "unknown"), (_python(3), "Python?", "python")]


def test_a_second_build_into_the_same_folder_stops_at_once_and_a_blocked_path_is_named(tmp_path, capsys):
  import socket
  import subprocess
  import sys

  raw = tmp_path / "code.jsonl"
  raw.write_text(json.dumps({"text": _python(1)}) + "\n")
  out = str(tmp_path / "out")
  # Another convert into `out` is running (a live jaxformer process holds its lock).
  other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "jaxformer", "data", "convert"])
  try:
    record = {"what": "data convert", "host": socket.gethostname(), "pid": other.pid, "since": "now", "token": "t"}
    (tmp_path / "out.lock").write_text(json.dumps(record))
    assert cli.main(["data", "convert", f"--input={raw}", f"--output_dir={out}"]) == 2
    assert f"is in use by data convert (pid {other.pid}" in capsys.readouterr().err
    assert not os.path.exists(out) and (tmp_path / "out.lock").exists()  # nothing written, the lock kept
  finally:
    other.kill()
    other.wait()
  assert cli.main(["data", "convert", f"--input={raw}", f"--output_dir={out}"]) == 0  # free again
  capsys.readouterr()
  (tmp_path / "file").write_text("in the way")
  assert cli.main(["data", "convert", f"--input={raw}", f"--output_dir={tmp_path}/file/out"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith("jaxformer: error:") and f"{tmp_path}/file/out" in err[-1] and "Traceback" not in err


def test_a_json_file_holding_one_array_reads_its_records(tmp_path):
  records = [{"content": _python(i), "lang": "Python"} for i in range(3)] + [{"other": 1}, "not a record"]
  with gzip.open(tmp_path / "a.json.gz", "wt") as f:
    f.write("\ufeff\n  " + json.dumps(records, indent=1))  # a BOM and an indented array
  stats = convert.convert_files(str(tmp_path / "a.json.gz"), str(tmp_path / "out"), text_field="content")
  assert sum(stats["written"].values()) == 3
  assert stats["skipped"] == {"no text in field 'content'": 2}
  assert stats["skipped_examples"]["no text in field 'content'"] == [f"{tmp_path}/a.json.gz:item {i}" for i in (3, 4)]
  assert sorted(t for t, _, _ in _documents(tmp_path / "out")) == sorted(_python(i) for i in range(3))


def test_language_dir_names_are_folder_and_task_safe():
  names = {
    "C++": "cpp",
    "c#": "csharp",
    "F#": "fsharp",
    "Objective-C++": "objective_cpp",
    "Jupyter Notebook": "jupyter_notebook",
    "Python": "python",
    " ": "unknown",
    "Emacs Lisp": "emacs_lisp",
  }
  assert {n: languages.language_dir(n) for n in names} == names
  # names with no ASCII letter or digit get a folder of their own, not 'unknown' (nor each other's)
  other = {n: languages.language_dir(n) for n in ("日本語", "Ελληνικά", "?")}
  assert len(set(other.values())) == 3 and all(f.startswith("lang_") and len(f) == 13 for f in other.values())
  assert languages.shared_folders({"C++": "cpp", "cpp": "cpp", "C": "c"}) == {"cpp": ["C++", "cpp"]}


def test_alphanumeric_count_is_the_same_for_ascii_and_unicode_text():
  from jaxformer.data.ingest.filters import _NOT_ALPHANUMERIC, Filters, alphanumeric_count

  for text in ("def f_1(x):\n  return x  # ok\n", "@@@@ #### $$$$ 1\n", "naïve = 'größe' + 'ñ_2'\n", "\t \n"):
    assert alphanumeric_count(text) == len(_NOT_ALPHANUMERIC.sub("", text)), text
  assert Filters().reason("@@@@ #### $$$$ 1\n") == "low alphanumeric"
  assert Filters(min_alnum_fraction=0).reason("@@@@ #### $$$$ 1\n") is None


def test_runner_flags_become_beam_options():
  direct = beam_options.pipeline_options("direct", 2).get_all_options(drop_default=True)
  assert direct["direct_running_mode"] == "multi_processing" and direct["direct_num_workers"] == 2
  dataflow = beam_options.pipeline_options(
    "dataflow", 4, project="p", region="r", temp_location="gs://b/tmp", beam_options=["max_num_workers=9"]
  ).get_all_options(drop_default=True)
  assert dataflow["runner"] == "DataflowRunner" and dataflow["num_workers"] == 4 and dataflow["max_num_workers"] == 9
  assert (dataflow["project"], dataflow["region"], dataflow["temp_location"]) == ("p", "r", "gs://b/tmp")
  assert dataflow["setup_file"] == os.path.join(beam_options.REPO, "setup.py")  # workers install jaxformer
  with pytest.raises(ValueError, match="KEY=VALUE"):
    beam_options.pipeline_options("direct", 1, beam_options=["no_value"])
