"""`jaxformer sweep`: expansion and naming, and a real 2-run sweep that is interrupted and restarted."""

import csv
import dataclasses
import json
import re
import signal
import subprocess
import time

import pytest
import train_util

from jaxformer import cli, sweep, sweep_results
from jaxformer import config as config_lib


def test_expansion_names_runs_and_later_bindings_win():
  definition = sweep.define(
    base_gin_files=["runs/local_tiny.gin"],
    bindings={"TRAIN_STEPS": 100, "SEED": 0},
    variants={"causal": {"OBJECTIVE_RATES": {"causal_lm": 1.0}}, "short": {"TRAIN_STEPS": 10, "gin_file": "extra.gin"}},
    grid={
      "lr": {
        "low": {"optimizer.learning_rate_schedule.peak": 1e-4},
        "high": {"optimizer.learning_rate_schedule.peak": 1e-3},
      },
      "optimizer.make_optimizer.weight_decay": [0.0, 0.1],
    },
  )
  runs = sweep.expand(definition)
  assert [r.name for r in runs] == [
    "causal.lr-low.weight_decay-0.0",
    "causal.lr-low.weight_decay-0.1",
    "causal.lr-high.weight_decay-0.0",
    "causal.lr-high.weight_decay-0.1",
    "short.lr-low.weight_decay-0.0",
    "short.lr-low.weight_decay-0.1",
    "short.lr-high.weight_decay-0.0",
    "short.lr-high.weight_decay-0.1",
  ]
  short = dict(runs[-1].bindings)
  assert short["TRAIN_STEPS"] == 10 and short["SEED"] == 0
  assert short["optimizer.learning_rate_schedule.peak"] == 1e-3
  assert short["optimizer.make_optimizer.weight_decay"] == 0.1
  assert runs[-1].gin_files == ("runs/local_tiny.gin", "extra.gin")
  assert "--gin.OBJECTIVE_RATES={'causal_lm': 1.0}" in sweep.train_argv(runs[0], "/out")
  assert sweep.train_argv(runs[0], "gs://b/s")[-1] == "--gin.MODEL_DIR='gs://b/s/causal.lr-low.weight_decay-0.0'"


def test_seeds_repeat_each_arm_with_its_seed_and_a_sweep_that_binds_seed_itself_is_refused():
  definition = sweep.define(variants={"a": {"TRAIN_STEPS": 5}, "b": {}}, seeds=3)
  runs = sweep.seeded(definition)
  assert [r.name for r in runs] == [f"{arm}.seed-{k}" for arm in "ab" for k in range(3)]
  assert [dict(r.bindings)["SEED"] for r in runs] == [0, 1, 2, 0, 1, 2] and {r.arm_name for r in runs} == {"a", "b"}
  assert dict(runs[1].bindings)["TRAIN_STEPS"] == 5
  assert [r.name for r in sweep.seeded(sweep.define(variants={"a": {}}, seeds=1))] == ["a"]  # one seed: the arm
  with pytest.raises(ValueError, match="binds SEED, which the sweep sets"):
    sweep.seeded(sweep.define(variants={"a": {"SEED": 4}}))
  with pytest.raises(ValueError, match=r"seeds \(--seeds\) = 0 must be an integer >= 1"):
    sweep.define(variants={"a": {}}, seeds=0)
  # between table entries the t of fewer degrees of freedom (larger: the interval errs wide)
  assert sweep_results.t_975(12) == sweep_results.T_975[10] > sweep_results.T_975[15]


def _write_results(out, losses: dict):
  """sweep_result.json files as run_sweep writes them, one per (arm, seed): l2r/local_pl = the loss."""
  for arm, values in losses.items():
    for k, value in enumerate(values):
      name = f"{arm}.seed-{k}" if len(values) > 1 else arm
      (out / name).mkdir(parents=True)
      record = {"name": name, "arm": arm, "final": {"local_pl": value + 1}, "evals": {"l2r": {"local_pl": value}}}
      (out / name / sweep.RESULT_FILE).write_text(json.dumps(record))


@pytest.mark.parametrize(
  "losses, verdict",
  [
    ({"a": [4.00, 4.02, 4.01], "b": [4.30, 4.31, 4.29]}, "agrees"),  # far apart against a spread of 0.01
    ({"a": [4.30, 4.31, 4.29], "b": [4.00, 4.02, 4.01]}, "disagrees"),
    ({"a": [4.00, 4.20, 4.10], "b": [4.05, 4.25, 4.15]}, "within noise"),  # 0.05 apart, spread 0.1
  ],
)
def test_seeds_give_mean_spread_and_a_verdict_by_the_written_rule(tmp_path, losses, verdict):
  definition = sweep.define(
    variants={"a": {}, "b": {}},
    evals={"l2r": {"OBJECTIVE_RATES": {"causal_lm": 1.0}}},
    comparisons=[{"lesson": "x", "metric": "l2r/local_pl", "lower": "a", "than": "b"}],
    seeds=3,
  )
  _write_results(tmp_path, losses)
  results = sweep_results.collect(definition, str(tmp_path))
  arm_a = {a["arm"]: a for a in results["arms"]}["a"]["l2r/local_pl"]
  mean_a = sum(losses["a"]) / 3
  assert arm_a["n"] == 3 and arm_a["mean"] == pytest.approx(mean_a)
  assert arm_a["std"] == pytest.approx((sum((v - mean_a) ** 2 for v in losses["a"]) / 2) ** 0.5)
  (c,) = results["comparisons"]
  assert c["verdict"] == verdict
  d = mean_a - sum(losses["b"]) / 3
  assert c["difference"] == pytest.approx(d)
  low, high = c["interval"]
  assert low < d < high and (high - d) == pytest.approx(d - low)
  assert (high - d) == pytest.approx(
    4.303 * ((arm_a["std"] ** 2 + results["arms"][1]["l2r/local_pl"]["std"] ** 2) / 3) ** 0.5
  )
  table = (tmp_path / "results.md").read_text()
  assert "| x | l2r/local_pl | a < b |" in table and f"| {verdict} |" in table and "±" in table
  assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"
  assert len(list(csv.DictReader(open(tmp_path / "results.csv")))) == 6  # every seed's row kept


def test_report_puts_the_results_into_a_document_between_its_markers(tmp_path):
  definition = sweep.define(
    variants={"a": {}, "b": {}},
    evals={"l2r": {"OBJECTIVE_RATES": {"causal_lm": 1.0}}},
    comparisons=[{"lesson": "x", "metric": "l2r/local_pl", "lower": "a", "than": "b"}],
    seeds=3,
  )
  out = tmp_path / "out"
  _write_results(out, {"a": [4.00, 4.02, 4.01], "b": [4.30, 4.31, 4.29]})
  results = sweep_results.collect(definition, str(out))
  doc = tmp_path / "docs" / "LESSONS.md"
  doc.parent.mkdir()
  doc.write_text("intro\n<!-- results of my_sweep -->\nold table\n<!-- end of results -->\nprose\n")
  image = sweep_results.write_report(str(doc), "sweeps/my_sweep.gin", results)
  text = doc.read_text()
  assert text.startswith("intro\n<!-- results of my_sweep -->\n") and text.endswith("<!-- end of results -->\nprose\n")
  assert "old table" not in text and (out / "results.md").read_text() in text
  # the sweep's own evals score every arm alike: the trainer's final/* stay in results.csv only
  assert "final/local_pl" not in text and "final/local_pl" in (out / "results.csv").read_text()
  assert "| x | l2r/local_pl | a < b |" in text and "](my_sweep_results.png)" in text
  assert image == str(tmp_path / "docs" / "my_sweep_results.png")
  assert (tmp_path / "docs" / "my_sweep_results.png").read_bytes() == (out / "results.png").read_bytes()
  doc.write_text("no markers\n")
  with pytest.raises(ValueError, match=r"LESSONS.md: no '<!-- results of my_sweep -->' line"):
    sweep_results.write_report(str(doc), "sweeps/my_sweep.gin", results)


def test_report_is_checked_before_any_run_and_a_missing_metric_is_named(tmp_path, capsys):
  sweep_file = tmp_path / "s.gin"
  sweep_file.write_text("sweep.define.variants = {'a': {'TRAIN_STEPS': 5}}\nsweep.define.seeds = 1\n")
  doc = tmp_path / "doc.md"
  doc.write_text("no markers\n")
  args = ["sweep", f"--sweep_file={sweep_file}", f"--output_dir={tmp_path / 'out'}", f"--report={doc}"]
  assert cli.main(args) == 2  # nothing trained: the document is refused first
  assert "doc.md: no '<!-- results of s -->' line" in capsys.readouterr().err
  assert not (tmp_path / "out").exists()
  assert cli.main([*args[:3], f"--report={tmp_path / 'missing.md'}"]) == 2
  assert "missing.md: no such document" in capsys.readouterr().err
  by_arm = {"a": {"l2r/local_pl": {"mean": 4.0, "std": 0.1, "n": 3}}, "b": {}}
  spec = {"lesson": "x", "metric": "l2r/local_pl", "lower": "a", "than": "b"}
  assert sweep_results._compare(spec, by_arm)["verdict"] == "metric missing for b"
  assert sweep_results._compare({**spec, "than": "c"}, by_arm)["verdict"] == "not run"


def test_an_arm_whose_runs_recorded_no_metrics_is_tabulated_not_a_crash(tmp_path):
  definition = sweep.define(variants={"a": {}, "b": {}}, evals={"l2r": {}}, seeds=1)
  _write_results(tmp_path, {"a": [4.0]})
  (tmp_path / "b").mkdir()
  (tmp_path / "b" / sweep.RESULT_FILE).write_text(json.dumps({"name": "b", "arm": "b", "final": {}, "evals": {}}))
  results = sweep_results.collect(definition, str(tmp_path))
  assert "| b | 0 |" in (tmp_path / "results.md").read_text() and len(results["rows"]) == 2


def test_bindings_and_variants_may_be_lists_merged_in_order():
  definition = sweep.define(
    bindings=[{"TRAIN_STEPS": 10, "SEED": 1}, {"TRAIN_STEPS": 20}],
    variants={"a": [{"BATCH_SIZE": 4, "TRAIN_STEPS": 30}, {"BATCH_SIZE": 8}], "b": {}},
    seeds=1,
  )
  runs = {r.name: dict(r.bindings) for r in sweep.expand(definition)}
  assert runs == {"a": {"TRAIN_STEPS": 30, "SEED": 1, "BATCH_SIZE": 8}, "b": {"TRAIN_STEPS": 20, "SEED": 1}}
  with pytest.raises(ValueError, match=r"variants\['a'\] must be a dict of bindings \(or a list of them\)"):
    sweep.define(variants={"a": [{"X": 1}, 3]})


def test_supervised_tokens_are_counted_from_the_train_records(tmp_path):
  from jaxformer.train import metrics

  records = [{"step": s, "split": "train", "loss_tokens": 100.0 * s} for s in (1, 2, 3, 4)]
  records += [{"step": 2, "split": "train", "loss_tokens": 200.0}]  # a resumed run logs a step again
  records += [{"step": 4, "split": "eval", "task": "local_pl", "loss": 4.5}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  assert metrics.train_totals(str(tmp_path)) == {"steps": 4, "supervised_tokens": 1000.0}
  record = {"final": metrics.final_train_eval(str(tmp_path)), "train": metrics.train_totals(str(tmp_path))}
  assert sweep.flatten_metrics(record) == {"final/local_pl": 4.5, "train/steps": 4, "train/supervised_tokens": 1000.0}
  # windows of log_period 3: steps 1-3 then 4-6, the second logged twice (a resumed run)
  windows = [
    {"step": 3, "split": "train", "loss_tokens": 90.0, "loss_tokens_window": 300.0, "window_steps": 3},
    {"step": 6, "split": "train", "loss_tokens": 10.0, "loss_tokens_window": 999.0, "window_steps": 3},
    {"step": 6, "split": "train", "loss_tokens": 10.0, "loss_tokens_window": 330.0, "window_steps": 3},
  ]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in windows))
  assert metrics.train_totals(str(tmp_path)) == {"steps": 6, "supervised_tokens": 630.0}


def test_bad_sweep_definitions_are_named():
  with pytest.raises(ValueError, match="nothing to run"):
    sweep.define(base_gin_files=["x.gin"])
  with pytest.raises(ValueError, match=r"variants\['a'\] must be a dict"):
    sweep.define(variants={"a": 3})
  with pytest.raises(ValueError, match="both named 'x-a_b'"):
    sweep.expand(sweep.define(grid={"x": ["a b", "a_b"]}))


@pytest.mark.parametrize(
  "variants, grid, match",
  [
    ({"../../x": {}}, {}, "run name '../../x'"),
    ({"": {}}, {}, "run name ''"),
    ({"a b": {}}, {}, "run name 'a b'"),
    ({"a": {}}, {"x": {"y;z": {}}}, "run name 'a.x-y;z'"),
  ],
)
def test_run_names_that_are_not_plain_folder_names_are_refused(variants, grid, match):
  with pytest.raises(ValueError, match=match):
    sweep.expand(sweep.define(variants=variants, grid=grid))


def test_a_dry_run_parses_every_run_and_names_what_cannot_work(tmp_path, capsys):
  from jaxformer import cli

  def sweep_file(variants: str, comparisons: str = "[]") -> str:
    path = tmp_path / "s.gin"
    path.write_text(
      "sweep.define.base_gin_files = ['runs/local_tiny.gin']\n"
      f"sweep.define.variants = {variants}\n"
      "sweep.define.evals = {'l2r': {'OBJECTIVE_RATES': {'causal_lm': 1.0}}}\n"
      f"sweep.define.comparisons = {comparisons}\n"
    )
    return f"--sweep_file={path}"

  out = f"--output_dir={tmp_path / 'out'}"
  cases = [
    ("{'a': {'optimizer.make_optimizer.weight_dacay': 0.1}}", "[]", "sweep run 'a': .*weight_dacay"),
    ("{'a': {'TRAIN_STEPS': -5}}", "[]", r"sweep run 'a': TRAIN_STEPS=-5 must be an integer >= 1"),
    ("{'a': {'TRAIN_STEPS': '10'}}", "[]", r"sweep run 'a': TRAIN_STEPS='10' must be an integer"),
    (
      "{'a': {'TRAIN_STEPS': 5}}",
      "[]",
      r"sweep run 'a': optimizer.learning_rate_schedule: decay_steps=5 must exceed warmup_steps=30",
    ),
    ("{'a': {}}", "[{'lesson': 'x', 'metric': 'l2r/local_pl', 'lower': 'a', 'than': 'b'}]", r"no run named \['b'\]"),
    ("{'a': {}, 'b': {}}", "[{'lesson': 'x', 'metric': 'nope/local_pl', 'lower': 'a', 'than': 'b'}]", "names no eval"),
  ]
  for variants, comparisons, match in cases:
    assert cli.main(["sweep", sweep_file(variants, comparisons), out, "--dry_run"]) == 2, variants
    assert re.search(match, capsys.readouterr().err), (variants, match)
  assert not (tmp_path / "out").exists()  # nothing ran, nothing was written
  assert cli.main(["sweep", sweep_file("{'a': {'TRAIN_STEPS': 50}}"), out, "--dry_run"]) == 0


def test_the_lessons_sweep_file_expands_to_its_ablations():
  config_lib.parse_gin(["sweeps/codegen2_lessons.gin"])
  definition = sweep.define()
  assert definition.seeds == 3
  names = [r.name for r in sweep.expand(definition)]
  assert names == [
    "causal",
    "prefix_lm",
    "causal_half",
    "causal_span",
    "causal_span_seq",
    "fim",
    "pl_only",
    "nl_only",
    "pl_small_1epoch",
    "pl_small_5epochs",
  ]
  runs = {r.name: dict(r.bindings) for r in sweep.expand(definition)}
  # each pair a claim compares differs only in the ablated setting
  differ = lambda a, b: sorted(k for k in set(runs[a]) | set(runs[b]) if runs[a].get(k) != runs[b].get(k))
  assert differ("causal", "prefix_lm") == ["OBJECTIVE_RATES"]
  warmup = "optimizer.learning_rate_schedule.warmup_steps"
  assert differ("causal_half", "prefix_lm") == ["OBJECTIVE_RATES", "TRAIN_STEPS", warmup]
  assert runs["causal_half"]["TRAIN_STEPS"] * 2 == runs["prefix_lm"]["TRAIN_STEPS"]  # its supervised tokens
  # the shorter arms warm up for the same share of their steps as runs/local.gin's 30 of 200
  for arm in ("causal_half", "pl_small_1epoch"):
    assert runs[arm][warmup] / runs[arm]["TRAIN_STEPS"] == 30 / runs["causal"]["TRAIN_STEPS"]
  assert differ("causal", "causal_span") == ["LOSS_PLACEMENT", "OBJECTIVE_RATES"]
  assert differ("causal_span", "causal_span_seq") == ["LOSS_PLACEMENT"]
  assert differ("causal", "pl_only") == differ("causal", "nl_only") == ["MIXTURE_OR_TASK_NAME"]
  assert differ("pl_small_1epoch", "pl_small_5epochs") == ["TRAIN_STEPS", warmup]
  assert differ("pl_only", "pl_small_5epochs") == ["MIXTURE_OR_TASK_NAME"]  # equal compute
  # five epochs: the small set holds about a fifth of the arm's tokens (within 10% of 40 batches)
  tokens = runs["pl_small_5epochs"]["tasks.register_local_tasks.small_pl_tokens"]
  assert abs(tokens / (8 * 512) / runs["pl_small_1epoch"]["TRAIN_STEPS"] - 1) < 0.1
  assert runs["pl_small_5epochs"]["TRAIN_STEPS"] == 5 * runs["pl_small_1epoch"]["TRAIN_STEPS"]
  assert set(definition.evals) == {"l2r", "infill"}
  compared = {(c["lower"], c["than"]) for c in definition.comparisons}
  assert ("causal_span", "causal") not in compared  # infill against a model that never saw a sentinel: by construction
  assert {("causal", "pl_only"), ("causal", "nl_only"), ("pl_small_5epochs", "pl_only")} <= compared


def _micro_sweep(path, corpus_dir: str):
  path.write_text(f"""
sweep.define.base_gin_files = ['runs/local_tiny.gin']
sweep.define.bindings = {{
    'CORPUS_DIR': '{corpus_dir}', 'TASK_FEATURE_LENGTHS': {{'targets': 128}}, 'CHECKPOINT_PERIOD': 2,
    'EVAL_PERIOD': 0, 'train.evaluate.eval_batches': 1, 'train.train.sample_prompt': None,
    'train.train.progress': False, 'optimizer.learning_rate_schedule.warmup_steps': 1,
}}
sweep.define.variants = {{
    'causal': {{'OBJECTIVE_RATES': {{'causal_lm': 1.0}}, 'TRAIN_STEPS': 4}},
    'mixture': {{'OBJECTIVE_RATES': {{'causal_lm': 0.5, 'span_corruption': 0.5}}, 'TRAIN_STEPS': 40}},
}}
sweep.define.evals = {{'l2r': {{'OBJECTIVE_RATES': {{'causal_lm': 1.0}}}}}}
sweep.define.comparisons = [
    {{'lesson': 'toy', 'metric': 'l2r/local_pl', 'lower': 'causal', 'than': 'mixture'}},
]
sweep.define.seeds = 1  # the seeds' statistics are test_seeds_*'s; here one run per arm keeps it short
""")


def _start_sweep(sweep_file, output_dir, log_path):
  log = open(log_path, "ab")
  return subprocess.Popen(
    [train_util.JAXFORMER, "sweep", f"--sweep_file={sweep_file}", f"--output_dir={output_dir}"],
    stdout=log,
    stderr=subprocess.STDOUT,
    env=train_util.env(),
  )


@pytest.mark.slow
def test_micro_sweep_is_interrupted_restarted_and_collected(local_corpus, tmp_path):
  sweep_file, out, log_path = tmp_path / "micro.gin", tmp_path / "out", tmp_path / "sweep.log"
  _micro_sweep(sweep_file, local_corpus)
  process = _start_sweep(sweep_file, out, log_path)
  mixture = str(out / "mixture")
  deadline = time.time() + 900  # generous: on a loaded 2-core machine the first run alone took 256 s
  while not train_util.committed_steps(mixture):  # the first run is done; the second is training
    assert process.poll() is None, log_path.read_text()[-3000:]
    assert time.time() < deadline, log_path.read_text()[-3000:]
    time.sleep(0.2)
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=120) == 2
  first = log_path.read_text()
  assert "[1/2] causal: done" in first and "interrupted during mixture" in first
  assert (out / "causal" / sweep.RESULT_FILE).exists() and not (out / "mixture" / sweep.RESULT_FILE).exists()
  interrupted_at = max(train_util.committed_steps(mixture))
  assert interrupted_at < 40
  causal_metrics = (out / "causal" / "metrics.jsonl").read_text()

  code, stdout, stderr = train_util.cli_streams(["sweep", f"--sweep_file={sweep_file}", f"--output_dir={out}"])
  second = stdout + stderr  # restarted in this process: the runs are its children as before
  assert code == 0, second[-3000:]
  assert "[1/2] causal: finished before, skipped" in second and "[2/2] mixture: done" in second
  assert (out / "causal" / "metrics.jsonl").read_text() == causal_metrics  # not run again
  assert f"restored step {interrupted_at}" in (out / "mixture" / "sweep.log").read_text()

  with open(out / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["run"] for r in rows] == ["causal", "mixture"]
  assert {"final/local_pl", "final/local_nl", "l2r/local_pl", "l2r/local_nl"} <= set(rows[0])
  assert all(0 < float(r["l2r/local_pl"]) < 20 for r in rows)
  # supervised tokens from the trainer's windows (log_period 10: the causal run's one window of 4 steps;
  # the mixture's windows across its interruption): causal LM supervises nearly every token of 8 x 128
  causal, mixture = rows
  assert float(causal["train/steps"]) == 4 and 0.9 * 4 * 1024 < float(causal["train/supervised_tokens"]) <= 4 * 1024
  assert float(mixture["train/steps"]) == 40 and 0.3 * 40 * 1024 < float(mixture["train/supervised_tokens"]) < 40 * 1024
  table = (out / "results.md").read_text()
  assert "2 of 2 runs finished" in table and "| causal |" in table and "| toy | l2r/local_pl |" in table
  assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
  assert "toy: l2r/local_pl causal < mixture:" in second


def test_tpu_launcher_dry_run_goes_through_tpu_launch(local_corpus, tmp_path):
  sweep_file = tmp_path / "micro.gin"
  _micro_sweep(sweep_file, local_corpus)
  code, stdout, err = train_util.cli(
    "sweep", f"--sweep_file={sweep_file}", "--output_dir=gs://b/sweep", "--launcher=tpu", "--tpu_flag=--name=my-v4",
    "--dry_run",
  )  # fmt: skip
  assert code == 0, err
  assert "[1/2] causal" in stdout and "[2/2] mixture" in stdout
  assert "  TRAIN_STEPS = 40" in stdout and "  OBJECTIVE_RATES = {'causal_lm': 1.0}" in stdout
  assert stdout.count("jaxformer/tpu/launch.sh --foreground --run_name=mixture --name=my-v4 -- jaxformer train") == 1
  assert "gs://b/sweep/mixture" in stdout and "eval loss --model_dir=gs://b/sweep/causal" in stdout


def test_a_sweep_takes_the_model_family_as_an_axis(tmp_path, capsys):
  from jaxformer import cli

  path = tmp_path / "families.gin"
  path.write_text(
    "sweep.define.base_gin_files = ['runs/local.gin']\n"
    "sweep.define.variants = {'causal': {'OBJECTIVE_RATES': {'causal_lm': 1.0}}}\n"
    "sweep.define.grid = {'model': {'codegen': {'gin_file': 'models/tiny.gin'},"
    " 'llama': {'gin_file': 'models/llama_tiny.gin'}}}\n"
  )
  assert cli.main(["sweep", f"--sweep_file={path}", f"--output_dir={tmp_path / 'out'}", "--dry_run", "--seeds=1"]) == 0
  out = capsys.readouterr().out
  assert "[1/2] causal.model-codegen" in out and "[2/2] causal.model-llama" in out
  assert "--gin_file=models/llama_tiny.gin" in out  # each run's gin was parsed before the dry run printed it


def test_the_fim_ablation_trains_four_objectives_at_equal_tokens_and_tabulates_code_evals(tmp_path, capsys):
  from jaxformer import cli

  config_lib.parse_gin(["sweeps/fim_ablation.gin"])
  definition = sweep.define()
  runs = {r.name: dict(r.bindings) for r in sweep.expand(definition)}
  assert list(runs) == ["causal", "span_50", "fim_psm", "fim_psm_spm"]
  assert len({r["TRAIN_STEPS"] for r in runs.values()}) == 1  # the same batches, as many tokens
  differ = lambda a, b: sorted(k for k in set(runs[a]) | set(runs[b]) if runs[a].get(k) != runs[b].get(k))
  assert differ("causal", "span_50") == ["OBJECTIVE_RATES"]
  assert differ("fim_psm", "fim_psm_spm") == ["objectives.FIM.spm_rate"]
  run = sweep.expand(definition)[3]
  argv = sweep.eval_argv(run, "/out", definition.evals["infill"])
  assert argv == ["eval", "infill", "--model_dir=/out/fim_psm_spm", "--limit=10", "--max_new_tokens=64", "--json"]
  assert sweep.eval_argv(run, "/out", definition.evals["humaneval"])[:2] == ["eval", "humaneval"]
  infill_json = {"pass@1": 0.25, "single_line/pass@1": 0.5, "single_line/tasks": 65, "results": "/x", "sandbox": "s"}
  assert sweep.eval_metrics(definition.evals["infill"], infill_json) == {"pass@1": 0.25, "single_line/pass@1": 0.5}
  with pytest.raises(ValueError, match="eval verb 'bleu' is not one of"):
    sweep.eval_argv(run, "/out", {"verb": "bleu"})
  with pytest.raises(ValueError, match="takes 'flags', not gin bindings"):
    sweep.eval_argv(run, "/out", {"verb": "infill", "OBJECTIVE_RATES": {}})

  # Every run's gin (and each eval's) parses as the runs will, before anything trains.
  out = tmp_path / "out"
  assert cli.main(["sweep", "--sweep_file=sweeps/fim_ablation.gin", f"--output_dir={out}", "--dry_run"]) == 0
  assert "[12/12] fim_psm_spm.seed-2" in capsys.readouterr().out  # 3 seeds per arm unless told

  # The table and plot carry losses and pass@1 side by side (one seed per arm here).
  definition = dataclasses.replace(definition, seeds=1)
  for i, name in enumerate(runs):
    record = {
      "name": name,
      "final": {},
      "evals": {
        "l2r": {"local_pl": 4.0 + i / 10},
        "humaneval": {"pass@1": 0.0},
        "infill": {"single_line/pass@1": i / 8},
      },
    }
    sweep.fs.write(str(out / name / sweep.RESULT_FILE), json.dumps(record))
  results = sweep_results.collect(definition, str(out))
  table = (out / "results.md").read_text()
  assert "| humaneval/pass@1 | infill/single_line/pass@1 | l2r/local_pl |" in table and "| fim_psm_spm |" in table
  assert {c["lesson"]: c["agrees"] for c in results["comparisons"]}["span corruption costs left-to-right"] is True
  assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
