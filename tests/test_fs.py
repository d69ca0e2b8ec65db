"""Run files on a remote filesystem (TF's ram:// stands in for gs://): metrics, config.gin, plot, sweep results."""

import json

import tensorflow as tf

from jaxformer import config as config_lib
from jaxformer import fs, sweep
from jaxformer.train import metrics
from jaxformer.train.trainer import write_operative_config


def test_remote_paths_are_not_made_absolute():
  assert fs.resolve("gs://bucket/run") == "gs://bucket/run"
  assert fs.resolve("runs/x").startswith("/")


def test_metrics_config_and_plot_are_written_to_a_remote_model_dir():
  model_dir = "ram://jaxformer-test/run"
  log = metrics.MetricsLog(model_dir)
  log.write(1, {"loss": 5.0}, split="train")
  log.close()
  log = metrics.MetricsLog(model_dir)  # a resumed run keeps the earlier lines
  log.write(2, {"loss": 4.0}, split="train")
  log.write(2, {"loss": 4.5}, split="eval", task="local_pl")
  log.close()
  assert [r["step"] for r in metrics.read_metrics(model_dir)] == [1, 2, 2]
  assert sweep.final_train_eval(model_dir) == {"local_pl": 4.5}
  assert metrics.plot_losses(model_dir) == f"{model_dir}/loss.png"
  with tf.io.gfile.GFile(f"{model_dir}/loss.png", "rb") as f:
    assert f.read(4) == b"\x89PNG"
  config_lib.parse_gin([], ["ModelConfig.num_layers = 3"])
  path = write_operative_config(model_dir)
  assert fs.exists(path)
  fs.write(f"{model_dir}/{sweep.RESULT_FILE}", json.dumps({"name": "x"}))
  assert sweep.read_json(f"{model_dir}/{sweep.RESULT_FILE}") == {"name": "x"}


def test_remote_metrics_writes_grow_linearly_and_restarts_continue(monkeypatch):
  """10,000 log lines on ram://: bytes written grow linearly (not quadratically, as a file rewritten
  whole at every line would); a restarted log starts a new chunk and the reader stitches all in order."""
  written = []
  real_write = fs.write
  monkeypatch.setattr(
    fs, "write", lambda path, data, mode="w": (written.append(len(data)), real_write(path, data, mode))
  )
  model_dir = "ram://jaxformer-test/long_run"
  log = metrics.RecordLog(model_dir)
  record = {"split": "train", "loss": 2.123456, "accuracy": 0.5, "learning_rate": 3e-4, "tokens_per_s": 12345.6}
  at_half = None
  for step in range(10_000):
    if step == 5_000:
      at_half = sum(written)
      log = metrics.RecordLog(model_dir)  # a restart halfway: a new chunk, nothing reread
      assert log.path.endswith("/metrics/000050.jsonl")
    log.append({"step": step, **record})
  total = sum(written)
  assert 1.9 < total / at_half < 2.1  # linear: rewriting one growing file would give 4x
  assert max(written) <= 100 * (len(json.dumps({"step": 9999, **record})) + 1)  # one chunk at most
  assert [r["step"] for r in metrics.read_metrics(model_dir)] == list(range(10_000))
  assert not fs.exists(f"{model_dir}/metrics.jsonl")


def test_remote_runs_with_the_old_single_file_still_read_whole():
  model_dir = "ram://jaxformer-test/old_layout"
  fs.write(f"{model_dir}/metrics.jsonl", json.dumps({"step": 1, "loss": 3.0}) + "\n")
  metrics.RecordLog(model_dir).append({"step": 2, "loss": 2.0})
  assert [r["step"] for r in metrics.read_metrics(model_dir)] == [1, 2]
