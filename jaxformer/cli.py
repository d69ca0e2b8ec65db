"""`jaxformer VERB [flags]`: the one command, and the only place that parses flags.

Every verb takes the t5x gin flags: --gin_file=F (repeatable), --gin.NAME=VALUE (repeatable),
--gin_search_paths=A,B. Errors a user can act on are printed as one message (exit code 2).
"""

import argparse
import glob
import json
import os
import sys

from jaxformer import config as config_lib


def _choose_platform():
  # libtpu (the tpu extra) makes jax probe for TPUs and print errors on machines without one.
  if "JAX_PLATFORMS" in os.environ:
    return
  has_tpu = glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")
  has_gpu = os.path.exists("/dev/nvidia0")
  if not has_tpu and not has_gpu:
    os.environ["JAX_PLATFORMS"] = "cpu"


def _add_gin_flags(parser: argparse.ArgumentParser):
  parser.add_argument("--gin_file", action="append", default=[],
                      help="gin file, relative to the working directory or a gin search path")
  parser.add_argument("--gin_search_paths", default=None,
                      help="comma-separated folders searched for gin files (default: ., $JAXFORMER_GIN_PATH, the repo's gin/)")


def split_gin_bindings(argv: list[str]) -> tuple[list[str], list[str]]:
  """Pulls --gin.NAME=VALUE (or --gin.NAME VALUE) out of argv; returns (rest, bindings)."""
  rest, bindings = [], []
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--gin."):
      name, sep, value = arg[len("--gin."):].partition("=")
      if not sep:
        if i + 1 >= len(argv):
          raise config_lib.GinConfigError(f"{arg}: needs a value, as --gin.{name}=VALUE")
        value = argv[i + 1]
        i += 1
      bindings.append(config_lib.binding_from_flag(name, value))
    else:
      rest.append(arg)
    i += 1
  return rest, bindings


def _parse_gin(args, bindings, extra_bindings=()):
  search_paths = None
  if args.gin_search_paths:
    search_paths = [p for p in args.gin_search_paths.split(",") if p] + [str(config_lib.REPO_GIN_DIR)]
  config_lib.parse_gin(args.gin_file, list(extra_bindings) + bindings, search_paths)


# --- verbs -------------------------------------------------------------------------------


def _plan_args(parser):
  parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
  parser.add_argument("--length", type=int, default=None,
                      help="sequence length for the attention FLOPs (default: ModelConfig.max_length)")


def _plan_run(args, bindings):
  _parse_gin(args, bindings)
  from jaxformer import plan  # pylint: disable=import-outside-toplevel
  report = config_lib.call_configurable(plan.plan_report, length=args.length)
  gib = 2**30
  print(f"parameters                      {report['params']:,}")
  print(f"matmul parameters (N)           {report['matmul_params']:,}")
  print(f"FLOPs/token, 6N                 {report['flops_per_token_6n']:.4g}")
  print(f"FLOPs/token, 6N + causal attn   {report['flops_per_token_with_attention']:.4g}"
        f"  (length {report['sequence_length']})")
  print(f"parameter bytes                 {report['param_bytes'] / gib:.2f} GiB")
  print(f"Adam state bytes                {report['adam_state_bytes'] / gib:.2f} GiB")
  if args.json:
    print(json.dumps(report))


VERBS = {
    "plan": ("parameter count, FLOPs per token and state bytes of a model config", _plan_args, _plan_run),
}


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="jaxformer", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
  for name, (help_text, add_args, _) in VERBS.items():
    verb_parser = sub.add_parser(name, help=help_text, description=help_text)
    _add_gin_flags(verb_parser)
    add_args(verb_parser)
  return parser


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  _choose_platform()
  try:
    rest, bindings = split_gin_bindings(argv)
    args = build_parser().parse_args(rest)
    VERBS[args.verb][2](args, bindings)
  except config_lib.GinConfigError as e:
    print(f"jaxformer: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
