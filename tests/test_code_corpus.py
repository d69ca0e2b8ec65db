"""The corpus recipe (gin/data/code_corpus.gin): Stack-style Parquet converted with a language field
becomes one task per language, mixed with NL by size and temperature; cached tasks mix by tokens."""

import collections
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import seqio

from jaxformer import cli, tasks
from jaxformer import config as config_lib
from jaxformer.data import pipeline
from jaxformer.data.pipeline import cache

PYTHON = "def f{i}(x):\n    return x + {i}\n\n\nclass K{i}:\n    value = {i}\n"
C = "int g{i}(int y) {{ return y * {i}; }}\n"
NL = "The quick brown fox {i} jumps over the lazy dog and keeps on running far away.\n"


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
  """A two-language Parquet corpus (Python ~4x the bytes of C, copies across shards) and an NL
  JSONL, both through `jaxformer data convert`."""
  root = tmp_path_factory.mktemp("stack")
  raw = root / "raw"
  raw.mkdir()
  for shard in range(2):
    rows = [(PYTHON.format(i=i), "Python") for i in range(shard * 150, shard * 150 + 200)]  # 50 repeated
    rows += [(C.format(i=i), "C") for i in range(shard * 100, shard * 100 + 100)]
    pq.write_table(
      pa.table({"content": [r[0] for r in rows], "lang": [r[1] for r in rows]}), raw / f"stack-{shard}.parquet"
    )
  (raw / "nl.jsonl").write_text("\n".join(json.dumps({"text": NL.format(i=i)}) for i in range(200)))
  common = ["--num_shards=2"]
  args = ["data", "convert", f"--input={raw}/stack-*.parquet", "--text_field=content", "--language_field=lang"]
  assert cli.main([*args, f"--output_dir={root}/stack", *common]) == 0
  nl_filters = ["--max_line_chars=0", "--max_mean_line_chars=0", "--min_alnum_fraction=0"]
  assert cli.main(["data", "convert", f"--input={raw}/nl.jsonl", f"--output_dir={root}/nl", *common, *nl_filters]) == 0
  return str(root)


def _parse(converted, local_corpus, *extra):
  bindings = [
    f"PL_DIR = '{converted}/stack'",
    f"NL_DIRS = {{'nl_docs': '{converted}/nl'}}",
    f"VOCABULARY = '{os.path.join(local_corpus, 'spm.model')}'",
    "TASK_FEATURE_LENGTHS = {'targets': 128}",
    *extra,
  ]
  config_lib.parse_gin(["objectives/causal_lm.gin", "data/code_corpus.gin"], bindings, finalize=False)


def _rates():
  mixture = seqio.get_mixture_or_task("code_corpus")
  return {t.name: mixture.get_rate(t) / mixture.total_rate for t in mixture.tasks}


@pytest.mark.slow
def test_languages_become_tasks_mixed_by_bytes_then_flattened_by_temperature(converted, local_corpus):
  with open(os.path.join(converted, "stack", "stats.json")) as f:
    stats = json.load(f)
  assert stats["languages"] == {"Python": 350, "C": 200} and stats["duplicates"] == 50
  _parse(converted, local_corpus)
  tasks.ensure_registered("code_corpus")
  rates = _rates()
  assert sorted(rates) == ["code_c", "code_python", "nl_docs"]
  python_bytes, c_bytes = stats["language_bytes"]["Python"], stats["language_bytes"]["C"]
  assert rates["nl_docs"] == pytest.approx(0.2)
  assert rates["code_python"] == pytest.approx(0.8 * python_bytes / (python_bytes + c_bytes))
  # drawn examples follow the rates: the first token tells the language apart
  config = pipeline.DataConfig(mixture_or_task_name="code_corpus", task_feature_lengths={"targets": 128})
  vocab = seqio.get_mixture_or_task("code_corpus").output_features["targets"].vocabulary
  ds = pipeline.examples_dataset("code_corpus", config.task_feature_lengths, num_epochs=None).take(1000)
  kinds = collections.Counter(vocab.decode(e["source"][:3].tolist()).split()[0] for e in ds.as_numpy_iterator())
  assert abs(kinds["def"] / 1000 - rates["code_python"]) < 0.06, kinds
  assert abs(kinds["The"] / 1000 - 0.2) < 0.05, kinds

  _parse(converted, local_corpus, "MIX_TEMPERATURE = 1000.0", "PL_SHARE = 0.5")
  tasks.ensure_registered("code_corpus")
  flat = _rates()
  assert flat["code_python"] == pytest.approx(0.25, abs=0.01) and flat["nl_docs"] == pytest.approx(0.5)

  with pytest.raises(ValueError, match=r"\['Rust'\] are not in .*stats.json \(it has \['C', 'Python'\]\)"):
    _parse(converted, local_corpus, "tasks.register_code_corpus.languages = ['Python', 'Rust']")
    tasks.ensure_registered("code_corpus")


def test_pl_alone_and_first_shards_for_the_pod_lessons(converted, local_corpus):
  # PL_SHARE 1.0 keeps NL's tasks (evals score them) at rate 0; train_shards reads each language's first
  # train shards only, a fixed subset for epoch studies, and leaves validation whole
  _parse(converted, local_corpus, "PL_SHARE = 1.0", "tasks.register_code_corpus.train_shards = 1")
  tasks.ensure_registered("code_corpus")
  assert _rates()["nl_docs"] == 0.0 and sum(_rates().values()) == pytest.approx(1.0)
  vocab = seqio.get_mixture_or_task("code_corpus").output_features["targets"].vocabulary

  def documents(task, split, **kw):
    ds = pipeline.examples_dataset(task, {"targets": 128}, split=split, num_epochs=1, shuffle=False, **kw)
    return {vocab.decode(e["source"].tolist()) for e in ds.as_numpy_iterator()}

  first = documents("code_python", "train")
  drawn = pipeline.examples_dataset("code_corpus", {"targets": 128}, num_epochs=None).take(300)
  assert not any(vocab.decode(e["source"][:3].tolist()).startswith("The") for e in drawn.as_numpy_iterator())
  validation = documents("code_python", "validation")
  _parse(converted, local_corpus)
  tasks.ensure_registered("code_corpus")
  every = documents("code_python", "train")
  assert first < every and 0.3 < len(first) / len(every) < 0.7  # one of two shards
  assert documents("code_python", "validation") == validation
  with pytest.raises(ValueError, match=r"train_shards=1 reads the first shards .* bind CACHE_DIR = None"):
    _parse(converted, local_corpus, "tasks.register_code_corpus.train_shards = 1", f"CACHE_DIR = '{converted}'")
    tasks.ensure_registered("code_corpus")


def _write_stack(raw, offset=0):
  raw.mkdir(exist_ok=True)
  # A deeply indented comment: Python here has far more bytes per token than C (~2.5 vs ~1.8 with the
  # session tokenizer), so mixing by tokens and by bytes give clearly different rates.
  python = PYTHON + "                                # the value {i} of the table\n"
  rows = [(python.format(i=i + offset), "Python") for i in range(120)] + [(C.format(i=i), "C") for i in range(80)]
  pq.write_table(pa.table({"content": [r[0] for r in rows], "lang": [r[1] for r in rows]}), raw / "stack.parquet")
  return ["data", "convert", f"--input={raw}/stack.parquet", "--text_field=content", "--language_field=lang"]


@pytest.mark.slow
def test_a_cache_built_on_two_workers_mixes_by_tokens_and_is_refused_after_a_reconversion(
  converted, local_corpus, tmp_path, caplog
):
  convert = _write_stack(tmp_path / "raw")
  assert cli.main([*convert, f"--output_dir={tmp_path}/stack", "--num_shards=2"]) == 0
  gin_flags = [
    "--gin_file=objectives/causal_lm.gin",
    "--gin_file=data/code_corpus.gin",
    f"--gin.PL_DIR='{tmp_path}/stack'",
    f"--gin.NL_DIRS={{'nl_docs': '{converted}/nl'}}",
    f"--gin.VOCABULARY='{os.path.join(local_corpus, 'spm.model')}'",
  ]
  # worker processes register the recipe's tasks from the gin config the command parsed
  assert cli.main(["data", "cache", *gin_flags, f"--output_dir={tmp_path}/cache", "--num_workers=2"]) == 0
  assert cli.main(["data", "cache", *gin_flags, f"--output_dir={tmp_path}/cache1", "--tasks=nl_docs"]) == 0
  for name in sorted(os.listdir(tmp_path / "cache1" / "nl_docs")):  # the same bytes on 1 and 2 workers
    assert (tmp_path / "cache1" / "nl_docs" / name).read_bytes() == (tmp_path / "cache" / "nl_docs" / name).read_bytes()
  tokens = {}
  for task in ("code_c", "code_python"):
    with open(os.path.join(tmp_path, "cache", task, "stats.train.json")) as f:
      tokens[task] = json.load(f)["targets_tokens"]
  _parse(converted, local_corpus, f"PL_DIR = '{tmp_path}/stack'", f"CACHE_DIR = '{tmp_path}/cache'")
  tasks.ensure_registered("code_corpus")
  rates = _rates()
  assert rates["code_c"] == pytest.approx(0.8 * tokens["code_c"] / (tokens["code_c"] + tokens["code_python"]))
  with open(os.path.join(tmp_path, "stack", "stats.json")) as f:
    size = json.load(f)["language_bytes"]
  bytes_rate = 0.8 * size["C"] / (size["C"] + size["Python"])
  assert rates["code_c"] > 1.1 * bytes_rate  # by tokens, not bytes: C's denser tokens weigh more

  # other Python documents, the same shard counts: the cache no longer matches and is never read
  assert cli.main([*_write_stack(tmp_path / "raw", offset=1000), f"--output_dir={tmp_path}/stack", "--overwrite"]) == 0
  with pytest.raises(ValueError, match="code_python.*another source_stats_sha256.*--overwrite"):
    cache.resolve("code_corpus", str(tmp_path / "cache"), None)
  _parse(converted, local_corpus, f"PL_DIR = '{tmp_path}/stack'", f"CACHE_DIR = '{tmp_path}/cache'")
  tasks.ensure_registered("code_corpus")  # registering still works (rates by bytes), so it can be recached
  assert "mixing code_c by bytes" in caplog.text or "mixing code_python by bytes" in caplog.text
