"""`jaxformer sample`: left-to-right or infill generation from a checkpoint."""

import json

from jaxformer.cli import common
from jaxformer.errors import UserError


def infill_format_arg(parser):
  parser.add_argument(
    "--infill_format",
    choices=("codegen2", "psm", "spm"),
    default=None,
    help="the infill prompt: CodeGen2's masks, FIM PSM or SPM (default: the first the run trained)",
  )


def sample_args(parser):
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--prompt", required=True)
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--num_samples", type=int, default=1)
  parser.add_argument("--max_new_tokens", type=int, default=64)
  parser.add_argument("--temperature", type=float, default=0.0)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--suffix", default=None, help="infill between --prompt and --suffix, in the run's format")
  infill_format_arg(parser)
  parser.add_argument("--top_k", type=int, default=0)
  parser.add_argument("--top_p", type=float, default=1.0)
  parser.add_argument("--stop", action="append", default=[], help="stop sequence (repeatable)")
  parser.add_argument(
    "--prefix_lm",
    choices=("auto", "yes", "no"),
    default="auto",
    help="prompt as a bidirectional prefix (auto: if the run trained prefix-LM)",
  )
  parser.add_argument("--json", action="store_true", help="last line: one JSON object with the completion(s)")


def sample_run(args, bindings):
  common.check_positive("--max_new_tokens", args.max_new_tokens)
  common.check_positive("--num_samples", args.num_samples)
  common.check_positive("--temperature", args.temperature, allow_zero=True)
  common.check_positive("--top_k", args.top_k, allow_zero=True)
  if not 0 < args.top_p <= 1:
    raise UserError(f"--top_p={args.top_p} must be in (0, 1]")
  run = common.load_run(args, bindings)
  from jaxformer import sharding
  from jaxformer.infer.sample import bos_of, cut_at_stop_sequences, generate, prompt_ids

  prefix_lm = run.prefix_lm if args.prefix_lm == "auto" else args.prefix_lm == "yes"
  if args.infill_format is not None and args.suffix is None:
    raise UserError("--infill_format needs --suffix (it chooses how an infill is prompted)")
  fmt = common.infill_format(run.vocabulary, args.infill_format) if args.suffix is not None else None
  ids, stops = common.user_errors(prompt_ids, run.vocabulary, args.prompt, args.suffix, fmt)
  bos = bos_of(run.vocabulary)
  if not ids and bos is None:
    raise UserError(f"--prompt is empty, and {run.vocabulary_path} has no BOS for the model to start from")
  if len(ids) + (bos is not None) + args.max_new_tokens > run.config.max_length:
    raise UserError(
      f"prompt ({len(ids)} tokens) + --max_new_tokens={args.max_new_tokens} exceed the "
      f"model's context ModelConfig.max_length={run.config.max_length}"
    )
  with sharding.activation_sharding(run.mesh, run.rules):
    outs = generate(
      run.model,
      run.params,
      [ids] * args.num_samples,
      args.max_new_tokens,
      stop_ids=stops,
      temperature=args.temperature,
      seed=args.seed,
      prefix_lm=prefix_lm,
      top_k=args.top_k,
      top_p=args.top_p,
      bos_id=bos,
    )
  completions = [cut_at_stop_sequences(run.vocabulary.decode(o), args.stop) for o in outs]
  for i, text in enumerate(completions):
    if args.num_samples > 1:
      print(f"--- sample {i} ---")
    print(args.prompt + text + (args.suffix or ""))
  if args.json:
    record = {"step": run.step, "prompt": args.prompt}
    if fmt is not None:
      record["infill_format"] = fmt.name
    record.update({"completion": completions[0]} if args.num_samples == 1 else {"completions": completions})
    record["tokens"] = outs[0] if args.num_samples == 1 else outs
    print(json.dumps(record))
