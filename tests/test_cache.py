"""seqio's offline cache (`jaxformer data cache`): what it stores equals online tokenisation, training
reads it and resumes exactly, and a cache that no longer matches its task is refused."""

import collections
import json
import logging
import os

import pytest
import seqio
import train_util

from jaxformer import cli
from jaxformer.data import pipeline
from jaxformer.data.pipeline import cache


@pytest.fixture(scope="session")
def local_cache(local_corpus, once):
  """The session corpus's local_pl and local_nl, cached by `jaxformer data cache` (DirectRunner)."""

  def build(folder):
    out = folder / "cache"
    args = ["data", "cache", "--gin_file=data/local.gin", f"--gin.CORPUS_DIR='{local_corpus}'", f"--output_dir={out}"]
    assert cli.main(args) == 0
    return str(out)

  return once("local_cache", build)


def _register(local_corpus):
  from jaxformer.tasks import local

  return local.register_local_tasks(corpus_dir=local_corpus)


def _sources(name, split, **kwargs):
  ds = pipeline.examples_dataset(name, {"targets": 256}, split=split, shuffle=False, **kwargs)
  return collections.Counter(tuple(e["source"].tolist()) for e in ds.as_numpy_iterator())


@pytest.mark.slow
def test_the_cache_holds_exactly_what_online_tokenisation_gives(local_corpus, local_cache):
  _register(local_corpus)
  for name in ("local_pl", "local_nl"):
    layout = sorted(os.listdir(os.path.join(local_cache, name)))
    assert {"COMPLETED", "info.train.json", "stats.validation.json", cache.FINGERPRINT} <= set(layout)
    with open(os.path.join(local_cache, name, "stats.train.json")) as f:
      assert json.load(f)["targets_tokens"] > 10_000
  assert cache.resolve("local_pl_nl", local_cache, None) is True
  task = seqio.get_mixture_or_task("local_pl")
  # the objective (causal LM by default) runs after the cache, on the cached ids: same chunks either way
  cached = task.get_dataset({"targets": 256}, split="validation", shuffle=False, use_cached=True)
  cached = collections.Counter(tuple(e["source"].tolist()) for e in cached.as_numpy_iterator())
  seqio.set_global_cache_dirs([])
  assert cached == _sources("local_pl", "validation") and sum(cached.values()) > 5


def test_a_cache_built_with_another_vocabulary_or_missing_is_refused(local_corpus, local_cache, tmp_path, caplog):
  _register(local_corpus)
  config = pipeline.DataConfig(mixture_or_task_name="local_pl_nl", cache_dir=local_cache, use_cached=True)
  stale = tmp_path / "stale"
  for name in ("local_pl", "local_nl"):
    (stale / name).mkdir(parents=True)
    for f in os.listdir(os.path.join(local_cache, name)):
      (stale / name / f).write_bytes(open(os.path.join(local_cache, name, f), "rb").read())
  fingerprint = json.loads((stale / "local_nl" / cache.FINGERPRINT).read_text())
  fingerprint["vocabulary_sha256"] = "0" * 64
  (stale / "local_nl" / cache.FINGERPRINT).write_text(json.dumps(fingerprint))
  for use_cached in (None, True):  # auto mode refuses it too: a stale cache is never silently read
    with pytest.raises(ValueError, match="local_nl.*another vocabulary_sha256.*--overwrite"):
      pipeline.get_dataset(
        pipeline.DataConfig(mixture_or_task_name="local_pl_nl", cache_dir=str(stale), use_cached=use_cached),
        shard_info=seqio.ShardInfo(0, 1),
      )
  with pytest.raises(ValueError, match=r"\['local_nl', 'local_pl'\] have no cache.*jaxformer data cache"):
    pipeline.get_dataset(
      pipeline.DataConfig(mixture_or_task_name="local_pl_nl", cache_dir=str(tmp_path / "none"), use_cached=True),
      shard_info=seqio.ShardInfo(0, 1),
    )
  assert pipeline.get_dataset(config, shard_info=seqio.ShardInfo(0, 1)) is not None
  # a CACHE_DIR that holds none of the tasks (a typo) reads online, and says so
  logging.getLogger("jaxformer").addHandler(caplog.handler)
  try:
    assert cache.resolve("local_pl_nl", str(tmp_path / "typo"), None) is False
  finally:
    logging.getLogger("jaxformer").removeHandler(caplog.handler)
  assert "holds no cache of ['local_nl', 'local_pl']: tokenising online" in caplog.text
  # an existing cache is not replaced unasked, and the refused run leaves it as it was
  before = sorted(os.listdir(os.path.join(local_cache, "local_pl")))
  args = ["data", "cache", "--gin_file=data/local.gin", f"--gin.CORPUS_DIR='{local_corpus}'"]
  assert cli.main([*args, f"--output_dir={local_cache}", "--tasks=local_pl"]) == 2
  assert sorted(os.listdir(os.path.join(local_cache, "local_pl"))) == before


@pytest.mark.slow
def test_training_on_a_cached_task_is_killed_and_resumes_with_the_same_losses(
  local_corpus, local_cache, online_reference_16, tmp_path
):
  flags = train_util.small_run_flags(local_corpus, steps=16, checkpoint_period=4)
  flags += [f"--gin.CACHE_DIR='{local_cache}'", "--gin.DataConfig.use_cached=True"]
  # Against the online run's losses: the cache holds the same tokens, so a run that reads it, is killed
  # and resumes, trains on the same batches to the bit.
  log = train_util.assert_sigkill_then_restart_matches(tmp_path, flags, 16, kill_after=4, expected=online_reference_16)
  assert "reading local_pl_nl from the seqio cache" in log


@pytest.mark.slow
def test_data_bench_reports_throughput_fill_and_start_up_online_and_from_the_cache(local_corpus, local_cache, capsys):
  args = ["data", "bench", "--gin_file=data/local.gin", "--gin_file=objectives/codegen2.gin"]
  args += [
    f"--gin.CORPUS_DIR='{local_corpus}'",
    "--gin.TASK_FEATURE_LENGTHS={'targets': 256}",
    "--num_batches=5",
    "--json",
  ]
  for extra, cached in (([], False), ([f"--gin.CACHE_DIR='{local_cache}'"], True)):
    assert cli.main(args + extra) == 0
    line, report = capsys.readouterr().out.splitlines()[-2:]
    report = json.loads(report)
    assert report["cached"] is cached and ("from the seqio cache" if cached else "tokenised online") in line
    tokens = report["batches"] * report["batch_size"] * report["length"]
    assert report["length"] == 256 and report["tokens_per_second"] * report["seconds"] == pytest.approx(tokens)
    assert 0.5 < report["packing_fill"] <= 1
    assert report["startup_seconds"] > 0 and f"first batch {report['startup_seconds']:.2f} s after" in line
