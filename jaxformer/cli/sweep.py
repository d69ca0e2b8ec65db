"""`jaxformer sweep`: a gin sweep run one after another (here or on a slice), then tabulated."""

import os

from jaxformer import config as config_lib
from jaxformer.cli import common
from jaxformer.errors import UserError


def sweep_args(parser):
  parser.add_argument(
    "--sweep_file",
    required=True,
    help="a gin file binding sweep.define (e.g. sweeps/codegen2_lessons.gin, in jaxformer/gin/)",
  )
  parser.add_argument("--output_dir", required=True, help="one folder per run, and results.{csv,md,png}")
  parser.add_argument("--dry_run", action="store_true", help="print each run's name, bindings and commands")
  parser.add_argument(
    "--launcher",
    choices=("local", "tpu"),
    default="local",
    help="local: one after another here; tpu: on the slice jaxformer/tpu/common.sh's settings name",
  )
  parser.add_argument(
    "--tpu_flag",
    action="append",
    default=[],
    help="with --launcher=tpu: a flag for jaxformer/tpu/launch.sh, e.g. --tpu_flag=--name=my-v4 (repeatable)",
  )
  parser.add_argument("--collect_only", action="store_true", help="only gather finished runs into results.*")
  parser.add_argument(
    "--report",
    default=None,
    help="also put results.md (and results.png) into this document between its '<!-- results of STEM -->' "
    "(STEM: the sweep file's name without .gin) and '<!-- end of results -->' lines, e.g. docs/LESSONS.md",
  )
  parser.add_argument(
    "--seeds",
    type=int,
    default=None,
    help="runs per arm, SEED 0 .. N-1 (default: the sweep file's sweep.define.seeds, else 3); 1: no repeats",
  )


def sweep_run(args, bindings):
  args.gin_file = [args.sweep_file] + args.gin_file
  if args.seeds is not None:  # the flag is the binding; sweep.define checks it
    bindings = [*bindings, config_lib.binding_from_flag("sweep.define.seeds", str(args.seeds))]
  common.parse_gin(args, bindings)
  from jaxformer import sweep, sweep_results

  definition = common.user_errors(config_lib.call_configurable, sweep.define)
  if args.report:  # before any run: a document that cannot take the results stops the sweep now
    common.user_errors(sweep_results.report_markers, args.report, args.sweep_file)
  runs = common.user_errors(sweep.seeded, definition)
  output_dir = args.output_dir if "://" in args.output_dir else os.path.abspath(os.path.expanduser(args.output_dir))
  paths = common.search_paths(args)
  parse = lambda gin_files, run_bindings, unread=(): config_lib.parse_gin(
    gin_files, run_bindings, paths, finalize=False, unread_macros_allowed=unread
  )
  common.user_errors(sweep.check_runs, definition, output_dir, parse, common.bound)
  from jaxformer import sweep_launchers

  launcher = sweep_launchers.TpuLauncher(args.tpu_flag) if args.launcher == "tpu" else sweep_launchers.LocalLauncher()
  print(f"sweep {args.sweep_file}: {len(runs)} runs into {output_dir}", flush=True)
  summary = {"interrupted": False, "failed": []}
  if not args.collect_only:
    summary = sweep.run_sweep(definition, output_dir, launcher, dry_run=args.dry_run)
  if args.dry_run:
    return
  results = common.user_errors(sweep_results.collect, definition, output_dir)
  print(f"{len(results['rows'])} of {len(runs)} runs finished; wrote " + ", ".join(results["files"]))
  for c in results["comparisons"]:
    print(f"  {c['lesson']}: {c['metric']} {c['lower']} < {c['than']}: {c['verdict']}")
  if args.report and not summary["interrupted"] and not summary["failed"]:  # partial results stay in results.md
    image = common.user_errors(sweep_results.write_report, args.report, args.sweep_file, results)
    print(f"put the results into {args.report}" + (f" (and {image})" if image else ""))
  if summary["interrupted"]:
    raise UserError("sweep interrupted; run the same command again to resume")
  if summary["failed"]:
    raise UserError(f"runs failed: {', '.join(summary['failed'])} (their sweep.log says why)")
