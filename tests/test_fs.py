"""Run files on a remote filesystem (TF's ram:// stands in for gs://): metrics, config.gin, plot, sweep results."""

import json

import tensorflow as tf

from jaxformer import config as config_lib
from jaxformer import fs, sweep
from jaxformer.train import metrics


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
  path = config_lib.write_operative_config(model_dir)
  assert fs.exists(path)
  fs.write(f"{model_dir}/{sweep.RESULT_FILE}", json.dumps({"name": "x"}))
  assert sweep._read_json(f"{model_dir}/{sweep.RESULT_FILE}") == {"name": "x"}
