"""Code evaluation while a run trains: greedy HumanEval pass@1 and HumanEval-Infilling on fixed subsets.

The train loop calls `code_eval` every train.CodeEvalConfig.period steps and logs its flat metrics
(e.g. under eval/code/). The subsets are the first N HumanEval problems and the first N infill tasks
of each kind, the same at every step, so the numbers are comparable along a run.
"""

import functools

from jaxformer.evals import generation, humaneval, infilling, sandbox
from jaxformer.train.code_eval import CodeEvalConfig


@functools.lru_cache(maxsize=1)
def _problems() -> dict:
  # Read once per process: the eval runs many times in a run.
  return humaneval.read_problems()


def subsets(config: CodeEvalConfig) -> tuple[dict, list[dict]]:
  """The fixed HumanEval problems and infill tasks the eval uses.

  Args:
    config: the CodeEvalConfig (humaneval_problems, infill_tasks).
  Returns:
    (task_id -> problem for the first humaneval_problems problems, the first infill_tasks infill tasks).
  """
  problems = _problems()
  subset = dict(list(problems.items())[: config.humaneval_problems])
  tasks = []
  for kind in config.infill_kinds if config.infill_tasks else ():
    tasks += infilling.infill_tasks(problems, (kind,))[: config.infill_tasks]
  return subset, tasks


def score_code_eval(
  problems: dict,
  humaneval_samples: list[dict],
  infill_tasks: list[dict],
  infill_completions: list[str] | None,
  config: CodeEvalConfig,
) -> dict:
  """Runs the completions in the sandbox and reduces them to flat metrics.

  Args:
    problems: task_id -> problem, holding every task_id the samples and infill tasks name.
    humaneval_samples: [{task_id, completion}], one per problem (generation.humaneval_samples).
    infill_tasks: the infill tasks (infilling.infill_tasks); may be empty.
    infill_completions: one completion per infill task; None skips the infill metrics.
    config: the CodeEvalConfig (its timeout limits each program).
  Returns:
    {'humaneval_problems', 'humaneval_pass@1'} when there are samples, and {'infill_tasks',
    'infill_exact_match', 'infill_pass@1', and 'infill_{kind}_pass@1' etc. per kind} when there are infill
    completions; all floats.
  """
  limits = sandbox.Limits(wall_seconds=config.timeout, cpu_seconds=int(config.timeout) + 1)
  result = {}
  if humaneval_samples:
    _, scores = humaneval.score(humaneval_samples, problems, ks=(1,), limits=limits)
    result["humaneval_problems"] = float(len({s["task_id"] for s in humaneval_samples}))
    result["humaneval_pass@1"] = float(scores["pass@1"])
  if infill_completions is not None and infill_tasks:
    _, scores = infilling.score_infill(infill_tasks, infill_completions, problems, limits)
    for key, value in scores.items():  # 'pass@1' -> infill_pass@1, 'multi_line/pass@1' -> infill_multi_line_pass@1
      result["infill_" + key.replace("/", "_")] = float(value)
  return result


def code_eval(model, params, vocabulary, config: CodeEvalConfig, mesh, rules, infill_format=None) -> dict:
  """Greedy HumanEval pass@1 and single-line infill on the config's fixed subsets.

  Every process must call it (generation runs over the whole mesh); each scores the same
  completions, so all return the same metrics.

  Args:
    model, params: the model (config.module()) and its (possibly sharded) parameters.
    vocabulary: the run's vocabulary.
    infill_format: the run's infill format (objectives.choose_infill_format); None skips the infill part.
    config: the CodeEvalConfig.
    mesh, rules: the device mesh and logical axis rules the model runs under.
  Returns:
    Flat float metrics: humaneval_pass@1 and humaneval_problems; infill_exact_match, infill_pass@1
    and infill_tasks when the vocabulary has masks (see score_code_eval).
  """
  problems, tasks = subsets(config)
  samples = []
  if problems:
    samples = generation.humaneval_samples(
      model,
      params,
      vocabulary,
      problems,
      num_samples=1,
      temperature=0.0,
      top_p=1.0,
      max_new_tokens=config.max_new_tokens,
      batch_size=config.batch_size,
      seed=0,
      mesh=mesh,
      rules=rules,
    )
  infills = None
  if tasks and infill_format is not None:
    infills = generation.infill_completions(
      model, params, vocabulary, tasks, config.max_new_tokens, config.batch_size, mesh, rules, infill_format
    )
  return score_code_eval(_problems(), samples, tasks, infills, config)
