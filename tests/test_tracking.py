"""Weights & Biases logging through MetricsLog (offline), and the code eval run during training."""

import glob
import json
import os
import subprocess
import sys

import gin
import pytest
from model_util import init, tiny

from jaxformer import objectives, sharding
from jaxformer.data.pipeline import vocabulary
from jaxformer.evals import during_training, generation, humaneval, infilling
from jaxformer.train import metrics, tracking


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
  """W&B offline and quiet, with its files under tmp_path."""
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_SILENT", "true")
  monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
  return tracking.WandbConfig(enabled=True, mode="offline", project="jaxformer-test")


def _offline_runs(model_dir: str) -> list[str]:
  return sorted(glob.glob(os.path.join(model_dir, "wandb", "offline-run-*", "run-*.wandb")))


def _inspect(path: str, *flags: str) -> str:
  # wandb's own reader of the .wandb transaction log (the records W&B would sync).
  out = subprocess.run(
    [sys.executable, "-m", "wandb", "leet", "inspect", "--json", *flags, path],
    capture_output=True,
    text=True,
    timeout=60,
    check=True,
  )
  return out.stdout


def _history(path: str) -> list[dict]:
  records = [json.loads(line) for line in _inspect(path).splitlines() if line.strip().startswith("{")]
  return [r["history"]["item"] for r in records if r.get("type") == "history"]


def test_metrics_log_sends_every_scalar_to_an_offline_wandb_run(tmp_path, offline_wandb):
  model_dir = str(tmp_path / "run")
  log = metrics.MetricsLog(model_dir, wandb=offline_wandb, run_config={"train.train_steps": 30})
  for step, loss in ((10, 2.5), (20, 2.0), (30, 1.25)):
    log.write(step, {"loss": loss, "learning_rate": 0.001 * step}, prefix="train/", split="train")
  log.write(30, {"loss": 1.5, "accuracy": 0.25}, prefix="eval/local_pl/", split="eval", task="local_pl")
  log.write(30, {"humaneval_pass@1": 0.5}, prefix="eval/code/", split="eval", task="code")
  log.close()

  (path,) = _offline_runs(model_dir)
  history = _history(path)
  train = [h for h in history if "train/loss" in h]
  assert [h["_step"] for h in train] == [10, 20, 30]
  assert [h["train/loss"] for h in train] == [2.5, 2.0, 1.25]
  assert train[-1]["train/learning_rate"] == pytest.approx(0.03)
  summary = json.loads(_inspect(path, "--summary"))
  assert summary["run_id"] == tracking.run_id(model_dir)
  assert summary["name"] == "run" and summary["project"] == "jaxformer-test"
  assert summary["config"]["train.train_steps"] == 30
  assert summary["summary"]["train/loss"] == 1.25 and summary["summary"]["_step"] == 30
  assert summary["summary"]["eval/local_pl/loss"] == 1.5 and summary["summary"]["eval/local_pl/accuracy"] == 0.25
  assert summary["summary"]["eval/code/humaneval_pass@1"] == 0.5
  assert "eval/local_pl/task" not in summary["summary"]  # strings stay in metrics.jsonl only
  # everything MetricsLog did before is still there
  assert [r.get("loss") for r in metrics.read_metrics(model_dir)] == [2.5, 2.0, 1.25, 1.5, None]
  assert os.listdir(os.path.join(model_dir, "tensorboard"))


def test_a_resumed_run_continues_the_same_wandb_run(tmp_path, offline_wandb):
  model_dir = str(tmp_path / "run")
  first = metrics.MetricsLog(model_dir, wandb=offline_wandb)
  first.write(1, {"loss": 3.0}, prefix="train/")
  first.close()
  run_id = (tmp_path / "run" / "wandb_run_id").read_text().strip()
  second = metrics.MetricsLog(model_dir, wandb=offline_wandb)
  second.write(2, {"loss": 2.0}, prefix="train/")
  second.close()
  assert (tmp_path / "run" / "wandb_run_id").read_text().strip() == run_id
  runs = _offline_runs(model_dir)
  assert len(runs) == 2 and all(p.endswith(f"run-{run_id}.wandb") for p in runs)
  # one offline folder per process lifetime (names may tie within a second): compare as a set
  assert sorted([h["train/loss"] for h in _history(p)] for p in runs) == [[2.0], [3.0]]


def test_wandb_is_off_by_default_and_its_config_is_checked(tmp_path, monkeypatch):
  model_dir = str(tmp_path / "run")
  log = metrics.MetricsLog(model_dir, wandb=tracking.WandbConfig())
  log.write(1, {"loss": 1.0}, prefix="train/")
  log.close()
  assert not os.path.exists(os.path.join(model_dir, "wandb")) and not os.path.exists(
    os.path.join(model_dir, "wandb_run_id")
  )
  with pytest.raises(ValueError, match="train.WandbConfig.mode"):
    tracking.WandbConfig(mode="online-ish")
  gin.parse_config(
    ["train.WandbConfig.enabled = True", "train.WandbConfig.mode = 'offline'", "train.WandbConfig.tags = ['a', 'b']"]
  )
  config = tracking.WandbConfig()
  assert config.enabled and config.mode == "offline" and config.tags == ("a", "b")
  monkeypatch.setitem(sys.modules, "wandb", None)  # as if the package were not installed
  with pytest.raises(ValueError, match=r'pip install -e "\.\[wandb\]"'):
    tracking.WandbWriter(config, model_dir, {})


def test_code_eval_scoring_counts_right_and_wrong_completions():
  problems = humaneval.read_problems()
  config = during_training.CodeEvalConfig(humaneval_problems=3, infill_tasks=4)
  subset, tasks = during_training.subsets(config)
  assert list(subset) == list(problems)[:3] and tasks == infilling.infill_tasks(problems)[:4]
  right = [{"task_id": t, "completion": p["canonical_solution"]} for t, p in subset.items()]
  targets = [t["target"] for t in tasks]
  scores = during_training.score_code_eval(subset, right, tasks, targets, config)
  assert scores == {
    "humaneval_problems": 3.0,
    "humaneval_pass@1": 1.0,
    "infill_tasks": 4.0,
    "infill_exact_match": 1.0,
    "infill_pass@1": 1.0,
    "infill_single_line_tasks": 4.0,
    "infill_single_line_exact_match": 1.0,
    "infill_single_line_pass@1": 1.0,
  }
  wrong = right[:2] + [{"task_id": right[2]["task_id"], "completion": "    return None\n"}]
  broken = targets[:3] + ["    return ("]  # a syntax error: neither matches nor runs
  scores = during_training.score_code_eval(subset, wrong, tasks, broken, config)
  assert scores["humaneval_pass@1"] == pytest.approx(2 / 3)
  assert scores["infill_exact_match"] == 0.75 and scores["infill_pass@1"] == 0.75
  assert set(during_training.score_code_eval(subset, right, tasks, None, config)) == {
    "humaneval_problems",
    "humaneval_pass@1",
  }


def test_code_eval_config_is_checked_and_gin_bound():
  for binding, value in (("period", -1), ("batch_size", 0), ("max_new_tokens", 1.5), ("timeout", 0)):
    with pytest.raises(ValueError, match=f"train.CodeEvalConfig.{binding}"):
      during_training.CodeEvalConfig(**{binding: value})
  gin.parse_config(["train.CodeEvalConfig.period = 100", "train.CodeEvalConfig.humaneval_problems = 4"])
  config = during_training.CodeEvalConfig()
  assert config.period == 100 and config.humaneval_problems == 4
  assert config.due(200) and not config.due(150) and not config.due(0)
  assert not during_training.CodeEvalConfig(period=0).due(100)


def test_infill_needs_a_vocabulary_with_the_formats_tokens(local_tasks):
  class Plain:
    path = "/models/tokenizer.json"

  codegen2, psm = (objectives.choose_infill_format(None, local_tasks.special, name) for name in ("codegen2", "psm"))
  task = [{"prefix": "a", "suffix": "b"}]
  with pytest.raises(ValueError, match="infill: Plain has no special tokens"):
    generation.infill_completions(None, None, Plain(), task, 4, 1, None, (), codegen2)
  no_fim = vocabulary.SpecialTokens("/models/spm.model", 1, 0, {"<sep>": 3})
  with pytest.raises(ValueError, match="infill format 'psm' needs <fim_prefix>, <fim_middle>, <fim_suffix>"):
    generation.infill_completions(None, None, type("V", (), {"special": no_fim})(), task, 4, 1, None, (), psm)


def test_code_eval_end_to_end_on_a_tiny_random_model(local_tasks):
  vocabulary = local_tasks
  model, params = init(tiny(vocab_size=1024))
  config = during_training.CodeEvalConfig(humaneval_problems=2, infill_tasks=2, max_new_tokens=8)
  mesh, rules = sharding.make_mesh(), sharding.logical_axis_rules()
  infill_format = objectives.choose_infill_format({"fim": 1.0}, vocabulary.special)
  assert infill_format.name == "psm"  # FIM's default: StarCoder's PSM (spm_rate 0.5 trains both)
  result = during_training.code_eval(model, params, vocabulary, config, mesh, rules, infill_format)
  assert set(result) == {
    "humaneval_problems",
    "humaneval_pass@1",
    "infill_tasks",
    "infill_exact_match",
    "infill_pass@1",
    "infill_single_line_tasks",
    "infill_single_line_exact_match",
    "infill_single_line_pass@1",
  }
  assert result["humaneval_problems"] == 2.0 and result["infill_tasks"] == 2.0
  assert all(
    isinstance(v, float) and 0.0 <= v <= 1.0 for k, v in result.items() if not k.endswith(("problems", "tasks"))
  )
