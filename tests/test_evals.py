"""HumanEval scoring, single-line infill, pass@k, and the sandbox against hostile completions."""

import collections
import json
import os
import shutil
import time
import uuid

import numpy as np
import pytest
from model_util import init, tiny

from jaxformer import cli
from jaxformer.evals import humaneval, infilling, passk, sandbox
from jaxformer.infer.sample import complete


def test_pass_at_k_matches_its_closed_form():
  from math import comb

  for n, c, k in [(10, 3, 1), (10, 2, 5), (20, 7, 10), (5, 0, 1), (5, 5, 5), (100, 1, 100)]:
    expected = 1 - comb(n - c, k) / comb(n, k)
    assert np.isclose(passk.pass_at_k(n, c, k), expected)
  assert passk.pass_at_k(10, 3, 1) == pytest.approx(0.3)
  assert passk.mean_pass_at_k([(10, 3), (10, 0)], (1, 10, 100)) == {"pass@1": pytest.approx(0.15), "pass@10": 0.5}


@pytest.mark.slow
def test_canonical_solutions_pass_and_empty_completions_fail(tmp_path, capsys, monkeypatch):
  problems = humaneval.read_problems()
  assert len(problems) == 164
  canonical = tmp_path / "canonical.jsonl"
  humaneval.write_jsonl(
    str(canonical), [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems.items()]
  )
  out = tmp_path / "results.jsonl"
  assert cli.main(["eval", "humaneval", f"--completions={canonical}", "--k=1", f"--output={out}", "--json"]) == 0
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pass@1"] == 1.0
  assert len(humaneval.read_jsonl(str(out))) == 164
  empty = tmp_path / "empty.jsonl"
  humaneval.write_jsonl(str(empty), [{"task_id": t, "completion": ""} for t in list(problems)[:20]])
  # Run from an empty folder without --output: the results go beside the completions, the folder stays empty.
  workdir = tmp_path / "workdir"
  workdir.mkdir()
  monkeypatch.chdir(workdir)
  assert cli.main(["eval", "humaneval", f"--completions={empty}", "--limit=20", "--k=1", "--json"]) == 0
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pass@1"] == 0.0
  assert os.listdir(workdir) == []
  assert len(humaneval.read_jsonl(str(empty) + "_results.jsonl")) == 20


def test_hostile_completions_are_stopped_and_counted_failed(tmp_path):
  problems = humaneval.read_problems()
  task = "HumanEval/0"
  good = problems[task]["canonical_solution"]
  marker = f"/tmp/jaxformer-escape-{uuid.uuid4().hex}"
  hostile = {
    "loops": "    while True:\n        pass\n",
    "allocates_60_gb": "    x = bytearray(60 * 2**30)\n" + good,
    "writes_outside": f"    open({str(tmp_path / 'escaped')!r}, 'w').write('x')\n" + good,
    "writes_tmp": f"    open({marker!r}, 'w').write('x')\n    assert False\n",
  }
  if sandbox.namespaces_available() or os.geteuid() != 0:  # root without namespaces has no process limit
    hostile["fork_bomb"] = "    import os\n    while True:\n        os.fork()\n"
  samples = [{"task_id": task, "completion": c} for c in hostile.values()] + [{"task_id": task, "completion": good}]
  start = time.time()
  scored, scores = humaneval.score(samples, problems, ks=(1,), limits=sandbox.Limits(wall_seconds=5, cpu_seconds=5))
  assert time.time() - start < 60
  by_name = dict(zip(list(hostile) + ["good"], scored))
  assert by_name["good"]["passed"]
  assert not any(by_name[name]["passed"] for name in hostile)
  assert by_name["loops"]["status"] == "timeout"
  assert not (tmp_path / "escaped").exists() and not os.path.exists(marker)
  assert np.isclose(scores["pass@1"], 1 / len(samples))  # one problem, one correct sample
  assert "fork_bomb" in hostile, "root without namespaces cannot stop a fork bomb: not run, and not passed"


def test_sandbox_has_no_network_and_a_private_home_when_namespaces_work():
  result = sandbox.run_program(
    "import os\nprint(os.environ['HOME'] == os.getcwd(), os.environ['TMPDIR'] == os.getcwd())"
  )
  assert result.passed and "True True" in result.output
  if sandbox.namespaces_available():
    net = sandbox.run_program("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=2)")
    assert not net.passed and "unreachable" in net.output


def test_single_line_infill_tasks_rebuild_the_canonical_solution():
  problems = humaneval.read_problems()
  tasks = infilling.infill_tasks(problems, ("single_line",))
  assert len(tasks) > 1000  # Bavarian et al. report 1033
  for t in tasks[:200]:
    problem = problems[t["problem"]]
    assert t["prefix"] + t["target"] + t["suffix"] == problem["prompt"] + problem["canonical_solution"]
  rows, scores = infilling.score_infill(tasks[:12], [t["target"] for t in tasks[:12]], problems)
  assert scores["exact_match"] == 1.0 and scores["pass@1"] == 1.0


@pytest.mark.slow
def test_infilling_tasks_of_every_kind_cannot_be_fooled():
  problems = dict(list(humaneval.read_problems().items())[:2])
  tasks = infilling.infill_tasks(problems, infilling.KINDS)
  kinds = collections.Counter(t["kind"] for t in tasks)
  assert kinds["random_span"] == 20 and kinds["multi_line"] > kinds["single_line"] > 0
  assert tasks[0]["task_id"] == "SingleLineInfilling/HumanEval/0/L0"
  assert "MultiLineInfilling/HumanEval/0/L0_L1" in {t["task_id"] for t in tasks}
  for t in tasks:
    problem = problems[t["problem"]]
    assert t["prefix"] + t["target"] + t["suffix"] == problem["prompt"] + problem["canonical_solution"] and t["target"]
  _, canonical = infilling.score_infill(tasks, [t["target"] for t in tasks], problems)
  assert all(canonical[f"{kind}/pass@1"] == canonical[f"{kind}/exact_match"] == 1.0 for kind in infilling.KINDS)
  rows, empty = infilling.score_infill(tasks, [""] * len(tasks), problems)
  assert empty["exact_match"] == 0.0 and empty["pass@1"] <= 0.05, [r["task_id"] for r in rows if r["passed"]]
  blocks = [t for t in tasks if t["kind"] == "multi_line" and "\n" in t["target"]][::2]
  _, dropped = infilling.score_infill(blocks, [t["target"].split("\n", 1)[1] for t in blocks], problems)
  assert len(blocks) > 50 and dropped["pass@1"] <= 0.05  # a middle without its first line fails
  assert infilling.human_eval_samples(rows[:1]) == [{"task_id": tasks[0]["task_id"], "completion": ""}]
  assert infilling.bigcode_generations(rows[:1]) == [[tasks[0]["prefix"] + tasks[0]["suffix"]]]


def test_infill_generation_stops_at_eom(local_tasks):
  vocab = local_tasks
  config = tiny(vocab_size=1024)
  model, params = init(config)
  always = params["lm_head"]["bias"].copy()
  always[vocab.encode("x")[0]] = 1e4  # the model always says "x" ...
  params["lm_head"]["bias"] = always
  texts = complete(model, params, vocab, ["def f(a):\n    return "], 8, suffixes=["\n"])
  assert texts == ["x" * 8] or texts[0].startswith("x")
  stops = always.copy()
  stops[vocab.special.eom] = 2e4  # ... unless <eom> wins: then the infill is empty
  params["lm_head"]["bias"] = stops
  assert complete(model, params, vocab, ["def f(a):\n    return "], 8, suffixes=["\n"]) == [""]


@pytest.mark.slow
def test_eval_and_sample_verbs_on_a_trained_run(tiny_run, tmp_path, capsys):
  run = str(tmp_path / "run")
  shutil.copytree(tiny_run, run)  # the evals write into the run: a copy of the shared one
  assert cli.main(["eval", "loss", f"--model_dir={run}", "--json"]) == 0
  losses = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert losses["step"] == 4 and set(losses) >= {"local_pl", "local_nl"} and losses["local_pl"]["loss"] > 0
  assert (
    cli.main(
      [
        "sample",
        f"--model_dir={run}",
        "--prompt=def add(a, b):\n",
        "--suffix=\n\nprint(add(1, 2))\n",
        "--max_new_tokens=8",
        "--json",
      ]
    )
    == 0
  )
  infill = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert "<eom>" not in infill["completion"] and len(infill["tokens"]) <= 8
  assert (
    cli.main(
      [
        "eval",
        "humaneval",
        f"--model_dir={run}",
        "--limit=2",
        "--num_samples=2",
        "--k=1,2",
        "--max_new_tokens=16",
        "--json",
      ]
    )
    == 0
  )
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert result["samples"] == 4 and 0.0 <= result["pass@2"] <= 1.0
  assert len(humaneval.read_jsonl(os.path.join(run, "evals", "humaneval_results.jsonl"))) == 4
  assert cli.main(["eval", "infill", f"--model_dir={run}", "--limit=1", "--max_new_tokens=8", "--json"]) == 0
  infill_scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  first = dict(list(humaneval.read_problems().items())[:1])
  assert infill_scores["tasks"] == len(infilling.infill_tasks(first, infilling.KINDS))
  assert all(f"{kind}/pass@1" in infill_scores for kind in infilling.KINDS)
  samples = humaneval.read_jsonl(os.path.join(run, "evals", "infill_samples.jsonl"))  # human-eval-infilling's layout
  assert samples and set(samples[0]) == {"task_id", "completion"} and len(samples) == infill_scores["tasks"]
  with open(os.path.join(run, "evals", "infill_generations.json")) as f:  # bigcode-evaluation-harness's
    assert len(json.load(f)) == infill_scores["tasks"]


def test_root_without_namespaces_is_refused_and_the_fallback_still_limits_time_and_memory(monkeypatch, tmp_path):
  monkeypatch.setattr(sandbox, "namespaces_available", lambda: False)
  marker = tmp_path / "ran"
  if os.geteuid() == 0:  # untrusted code never runs as root with rlimits alone
    with pytest.raises(sandbox.SandboxRefused, match="never runs untrusted code as root"):
      sandbox.run_program(f"open({str(marker)!r}, 'w').write('x')\n")
    assert not marker.exists() and "no namespaces" in sandbox.isolation()
  # The fallback's limits (what an unprivileged user gets), run here as root for this test only.
  run = lambda program: sandbox.run_program(program, sandbox.Limits(wall_seconds=3, cpu_seconds=3), True)
  assert run("print('ok')").passed
  assert run("while True:\n    pass\n").status == "timeout"
  memory = run("x = bytearray(60 * 2**30)\n")
  assert not memory.passed and "MemoryError" in memory.output
