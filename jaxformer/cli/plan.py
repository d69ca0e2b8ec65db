"""`jaxformer plan`: sizes, FLOPs and memory of a run, compiled for a TPU slice when asked."""

import json

from jaxformer import config as config_lib
from jaxformer.cli import common


def plan_args(parser):
  parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
  parser.add_argument(
    "--length", type=int, default=None, help="sequence length for the attention FLOPs (default: ModelConfig.max_length)"
  )
  parser.add_argument(
    "--topology",
    default=None,
    help="compile the train step for this TPU slice (v4-32, v5p-64, v6e-16, v4:2x2x4); "
    "default: plan.tpu_plan.topology if the run gin binds it",
  )
  parser.add_argument("--num_slices", type=int, default=None, help="slices over DCN (default 1)")
  parser.add_argument("--assumed_mfu", type=float, default=None, help="MFU the predicted step time assumes (0.4)")


def plan_run(args, bindings):
  common.parse_gin(args, bindings, finalize=False)  # a run gin's MODEL_DIR and data may stay unbound
  from jaxformer import plan

  report = config_lib.call_configurable(plan.plan_report, length=args.length)
  if args.topology or common.bound("plan.tpu_plan.topology"):
    overrides = {
      k: v
      for k, v in (("topology", args.topology), ("num_slices", args.num_slices), ("assumed_mfu", args.assumed_mfu))
      if v is not None
    }
    report["tpu"] = common.user_errors(plan.tpu_plan, **overrides)
  print(plan.format_report(report))
  if args.json:
    print(json.dumps(report))
