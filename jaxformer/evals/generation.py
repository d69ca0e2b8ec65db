"""Generation for the code evals: HumanEval completions and infills from a loaded model.

Shared by `jaxformer eval humaneval` / `eval infill` and the code eval during training; scoring
(execution in the sandbox) is humaneval.score / infilling.score_infill.
"""

from jaxformer import sharding
from jaxformer.evals import humaneval
from jaxformer.infer.sample import complete


def humaneval_samples(
  model,
  params,
  vocabulary,
  problems: dict,
  num_samples: int,
  temperature: float,
  top_p: float,
  max_new_tokens: int,
  batch_size: int,
  seed: int,
  mesh,
  rules,
) -> list[dict]:
  """num_samples completions of each HumanEval problem's prompt, cut at the HumanEval stop sequences.

  Args:
    model, params: the model (config.module()) and its parameters.
    vocabulary: the run's vocabulary (encodes prompts, decodes completions).
    problems: task_id -> problem (humaneval.read_problems, or a subset of it).
    num_samples: completions per problem.
    temperature: 0 is greedy; above 0 samples, with nucleus top_p.
    top_p: nucleus mass, used only when temperature > 0.
    max_new_tokens: tokens generated per completion at most.
    batch_size: prompts per generate call.
    seed: the sampling seed (the same seed gives the same samples).
    mesh, rules: the device mesh and logical axis rules the model runs under.
  Returns:
    [{task_id, completion}], num_samples rows per problem, in the problems' order.
  """
  prompts = [p["prompt"] for p in problems.values() for _ in range(num_samples)]
  with sharding.activation_sharding(mesh, rules):
    texts = complete(
      model,
      params,
      vocabulary,
      prompts,
      max_new_tokens,
      batch_size=batch_size,
      stop_sequences=humaneval.STOP_SEQUENCES,
      temperature=temperature,
      top_p=top_p if temperature > 0 else 1.0,
      seed=seed,
    )
  task_ids = [t for t in problems for _ in range(num_samples)]
  return [{"task_id": t, "completion": c} for t, c in zip(task_ids, texts)]


def infill_completions(
  model, params, vocabulary, tasks: list[dict], max_new_tokens: int, batch_size: int, mesh, rules, infill_format
) -> list[str]:
  """Greedy infills of each task, prompted in infill_format and stopped at its end tokens.

  Args:
    model, params: the model (config.module()) and its parameters.
    vocabulary: the run's vocabulary; needs the format's special tokens.
    tasks: dicts with prefix and suffix (infilling.infill_tasks).
    max_new_tokens: tokens generated per infill at most.
    batch_size: tasks per generate call.
    mesh, rules: the device mesh and logical axis rules the model runs under.
    infill_format: an objectives.InfillFormat (the run's: objectives.choose_infill_format).
  Returns:
    One completion per task, in order (score with infilling.score_infill).
  Raises:
    ValueError: the vocabulary lacks one of the format's tokens (the message names which).
  """
  special = getattr(vocabulary, "special", None)
  if special is None:
    raise ValueError(f"infill: {type(vocabulary).__name__} has no special tokens")
  special.require(infill_format.needs, f"infill format {infill_format.name!r}")
  with sharding.activation_sharding(mesh, rules):
    return complete(
      model,
      params,
      vocabulary,
      [t["prefix"] for t in tasks],
      max_new_tokens,
      suffixes=[t["suffix"] for t in tasks],
      batch_size=batch_size,
      infill_format=infill_format,
    )
