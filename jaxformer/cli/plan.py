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
  fit = parser.add_argument_group("--fit: search mesh, microbatches, remat and attention, compiled for --topology")
  fit.add_argument("--fit", action="store_true", help="search for the fastest configuration that fits")
  fit.add_argument("--batch_sizes", default=None, help="comma-separated global batches to try (default: BATCH_SIZE)")
  fit.add_argument("--max_compiles", type=int, default=8, help="candidates compiled at most (default 8)")
  fit.add_argument("--time_budget", type=float, default=1200, help="seconds of compiling at most (default 1200)")
  fit.add_argument("--fit_gin", default="plan_fit.gin", help="where the winner's run gin is written")


def plan_run(args, bindings):
  common.parse_gin(args, bindings, finalize=False)  # a run gin's MODEL_DIR and data may stay unbound
  from jaxformer import plan

  report = config_lib.call_configurable(plan.plan_report, length=args.length)
  if args.fit:
    return _fit(args, bindings, report)
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


def _fit(args, bindings, report):
  from jaxformer import models, sharding
  from jaxformer.data import pipeline
  from jaxformer.plan import fit, tpu
  from jaxformer.train.step import StepConfig

  topology = args.topology or common.bound("plan.tpu_plan.topology")
  if not topology:
    raise common.UserError("plan --fit needs --topology (a TPU slice such as v4-32) or plan.tpu_plan.topology")
  if topology.split("-")[0].lower() in ("gpu", "h100", "h200", "a100", "cuda"):
    raise common.UserError(
      f"--topology={topology}: plan --fit compiles ahead of time for TPU only; jax compiles for a GPU only "
      "on a machine that has one (docs/TPU.md, 'GPU hosts'), so run `jaxformer bench` there instead"
    )
  if args.max_compiles < 1 or args.time_budget < 30:
    raise common.UserError(
      f"--max_compiles={args.max_compiles} --time_budget={args.time_budget:.0f}: one compile needs at least one "
      "candidate and 30 s (minutes at 1B)"
    )
  num_slices = args.num_slices or 1
  devices, info = common.user_errors(tpu.topology_devices, topology, num_slices)
  model_config, data_config, step_config = models.bound(), pipeline.DataConfig(), StepConfig()
  batches = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else [data_config.batch_size]
  own = sharding.make_mesh(devices=devices, dcn_mesh_shape=(num_slices, 1, 1) if num_slices > 1 else None)
  baseline = fit.Candidate(
    data_config.batch_size,
    (own.shape["data"] // num_slices, own.shape["fsdp"], own.shape["tensor"]),
    step_config.microbatches,
    model_config.remat_policy,
    model_config.attention,
  )
  found = common.user_errors(
    fit.search,
    model_config,
    step_config,
    batches,
    data_config.length,
    devices,
    info,
    topology,
    num_slices,
    max_compiles=args.max_compiles,
    time_budget=args.time_budget,
    baseline=baseline,
  )
  print(fit.table(found["rows"]))
  winner = found["winner"]
  if winner is None:
    raise common.UserError(f"plan --fit: none of the {len(found['rows'])} compiled candidates fits {topology}")
  text = fit.run_gin(winner, args.gin_file or [], [b for b in bindings], topology, num_slices, model_config.gin_name)
  with open(args.fit_gin, "w") as f:
    f.write(text)
  print(f"fastest that fits: {winner['candidate']}; wrote {args.fit_gin}")
  if args.json:
    print(json.dumps({**report, "fit": found}))
