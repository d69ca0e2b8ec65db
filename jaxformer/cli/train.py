"""`jaxformer train` and `jaxformer bench`: training runs and their speed."""

import json
import sys

import gin

from jaxformer import config as config_lib
from jaxformer.cli import common


def train_args(parser):
  parser.add_argument("--model_dir", default=None, help="sets the MODEL_DIR macro")
  parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
  parser.add_argument(
    "--profile_steps",
    default=None,
    help="START,STOP: a jax.profiler trace of steps START..STOP-1 into MODEL_DIR/profile "
    "(sets train.train.profile_steps)",
  )
  common.add_distributed_flags(parser)


def train_run(args, bindings):
  from jaxformer import distributed

  distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
  extra = [config_lib.binding_from_flag("MODEL_DIR", repr(args.model_dir))] if args.model_dir else []
  if args.profile_steps:
    extra.append(config_lib.binding_from_flag("train.train.profile_steps", f"({args.profile_steps},)"))
  common.parse_gin(args, bindings + extra)
  import jax

  from jaxformer.train import loop

  result = common.user_errors(loop.train, periodic_evals=_code_eval())
  if jax.process_index() == 0:
    for task, values in result["eval"].items():
      if "loss" in values:
        print(
          f"eval {task}: loss {values['loss']:.4f}, accuracy {values['accuracy']:.3f} ({values['tokens']:.0f} tokens)"
        )
      else:
        print(f"eval {task}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
    if result.get("sample") is not None:
      print("sample:", json.dumps(gin.query_parameter("train.train.sample_prompt")), "->")
      print(result["sample"])
    print(
      f"{'preempted' if result['preempted'] else 'stopped'} at step {result['step']}, train loss {result['train_loss']}"
    )
    if args.json:
      print(json.dumps({k: v for k, v in result.items()}))
  if result["preempted"]:  # saved and stopped before the end: never "finished" (exit 0) to a supervisor
    signal_name = result.get("signal", "SIGTERM")
    print(
      f"jaxformer: stopped ({signal_name}) at step {result['step']}: checkpoint saved; the same command resumes",
      file=sys.stderr,
    )
    return EXIT_CODES.get(signal_name, EXIT_CODES["SIGTERM"])
  return 0


# Exit codes of a run that saved and stopped before TRAIN_STEPS: 128 + the signal, as shells report it
# (jaxformer/tpu/supervise.sh relaunches on 143 unless stop.sh marked the run stopped).
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


def _code_eval() -> list:
  """The in-training code eval (train.CodeEvalConfig) as the loop's periodic eval, when its period is set."""
  from jaxformer.evals import during_training
  from jaxformer.train.loop import PeriodicEval

  config = config_lib.call_configurable(during_training.CodeEvalConfig)
  if not config.period:
    return []
  from jaxformer.evals import sandbox

  sandbox.check_usable()  # before training starts, not at the first eval

  def run(model, params, vocabulary, mesh, rules):
    from jaxformer import objectives

    try:  # the format the run trains (or its vocabulary writes); none: the infill part is skipped
      infill_format = objectives.choose_infill_format(common.bound("%OBJECTIVE_RATES"), vocabulary.special)
    except (ValueError, AttributeError):
      infill_format = None
    return during_training.code_eval(model, params, vocabulary, config, mesh, rules, infill_format)

  return [PeriodicEval("code", config.period, run)]


def bench_args(parser):
  parser.add_argument("--decode", action="store_true", help="time KV-cache decoding instead of train steps")
  parser.add_argument("--compare_hf", action="store_true", help="with --decode: also HF generate on the same weights")
  parser.add_argument("--decode_batch_sizes", default="1,8,32")
  parser.add_argument("--prompt_length", type=int, default=64)
  parser.add_argument("--max_new_tokens", type=int, default=128, help="with --decode: tokens generated per prompt")
  common.add_renamed(parser, "--new_tokens", "--max_new_tokens", type=int)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--length", type=int, default=512)
  parser.add_argument("--profile_dir", default=None, help="also trace --steps more steps with jax.profiler into DIR")
  parser.add_argument("--json", action="store_true")


def bench_run(args, bindings):
  for name in ("steps", "batch_size", "length", "prompt_length", "max_new_tokens"):
    common.check_positive(f"--{name}", getattr(args, name))
  common.parse_gin(args, bindings)
  if args.decode:
    from jaxformer.infer import bench as decode

    sizes = [int(b) for b in args.decode_batch_sizes.split(",") if b]
    r = config_lib.call_configurable(
      decode.decode_bench, sizes, args.prompt_length, args.max_new_tokens, args.compare_hf
    )
    print(
      f"greedy decoding on {r['device_kind']}, prompt {r['prompt_length']} tokens, {r['new_tokens']} new "
      "tokens, float32, generated tokens/s:"
    )
    for batch in sizes:
      hf = f", HF generate {r['hf'][batch]:,.0f}" if batch in r["hf"] else ""
      print(f"  batch {batch}: jaxformer {r['jaxformer'][batch]:,.0f}{hf}")
    if args.json:
      print(json.dumps(r))
    return
  from jaxformer.train import bench, mfu

  r = config_lib.call_configurable(bench.bench, args.steps, args.batch_size, args.length, profile_dir=args.profile_dir)
  print(
    f"{r['devices']} x {r['device_kind']}, batch {r['batch_size']} x {r['length']}, {r['steps']} steps "
    f"(after {r['warmup_seconds']:.1f} s of compile and warm-up)"
  )
  print(
    f"step time {r['step_seconds'] * 1000:.1f} ms, {r['tokens_per_second']:,.0f} tokens/s, "
    f"{r['model_tflops_per_second_6n']:.3f} model TFLOP/s (6N)"
  )
  print(f"MFU: 6N {mfu.format_mfu(r['mfu_6n'])}, 6N + causal attention {mfu.format_mfu(r['mfu_6n_attention'])}")
  print(f"peak memory {r['peak_memory_bytes'] / 2**20:,.0f} MiB ({r['peak_memory_source']})")
  b = {k: v / 2**20 for k, v in r["state_bytes"].items()}
  print(
    f"train state: parameters trained {b['params']:,.1f} MiB, optimizer {b['optimizer']:,.1f} MiB, "
    f"frozen {b['frozen']:,.1f} MiB"
  )
  print(
    f"host overhead {r['host_overhead_share']:.1%} of a step as train runs it (batch copied in, metrics read "
    f"one step late: {r['loop_step_seconds'] * 1000:.1f} ms against {r['step_seconds'] * 1000:.1f} ms back to back)"
  )
  if r.get("profile_dir"):
    print(f"profile of {r['steps']} more steps in {r['profile_dir']} (tensorboard --logdir={r['profile_dir']})")
  if args.json:
    print(json.dumps(r))
