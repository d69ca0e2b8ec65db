"""Apache Beam pipeline options from jaxformer's flags, shared by `data convert` and `data cache`.

--runner=direct (default) runs on this machine, with --num_workers processes; --runner=dataflow
runs on Google Cloud Dataflow (`pip install -e '.[dataflow]'`) with --project, --region and
--temp_location; --beam_option=KEY=VALUE passes any other Beam option (max_num_workers,
machine_type, staging_location, ...).
"""

import os

RUNNERS = {"direct": "DirectRunner", "dataflow": "DataflowRunner"}


def add_flags(parser) -> None:
  parser.add_argument("--runner", default="direct", help="direct (this machine), dataflow, or a Beam runner class name")
  parser.add_argument("--num_workers", type=int, default=1, help="processes for the direct runner")
  parser.add_argument("--project", default=None, help="GCP project (Dataflow)")
  parser.add_argument("--region", default=None, help="GCP region (Dataflow)")
  parser.add_argument("--temp_location", default=None, help="gs:// folder for Dataflow's temporary files")
  parser.add_argument(
    "--beam_option", action="append", default=[], metavar="KEY=VALUE", help="any other Beam pipeline option"
  )


def pipeline_options(args):
  """beam PipelineOptions for the parsed flags; ValueError names a bad flag."""
  from apache_beam.options.pipeline_options import PipelineOptions

  if args.num_workers < 1:
    raise ValueError(f"--num_workers={args.num_workers} must be at least 1")
  runner = RUNNERS.get(args.runner.lower(), args.runner)
  options = {"runner": runner}
  if runner == "DirectRunner":
    options["direct_num_workers"] = args.num_workers
    options["direct_running_mode"] = "multi_processing" if args.num_workers > 1 else "in_memory"
  elif args.num_workers != 1:
    raise ValueError(f"--num_workers is for the direct runner; for {runner} pass --beam_option=max_num_workers=N")
  for key in ("project", "region", "temp_location"):
    if getattr(args, key):
      options[key] = getattr(args, key)
  if runner == "DataflowRunner":
    missing = [f"--{k}" for k in ("project", "region", "temp_location") if not getattr(args, k)]
    if missing:
      raise ValueError(f"--runner=dataflow needs {', '.join(missing)}")
    setup = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "setup.py")
    if os.path.exists(setup):  # workers install jaxformer from this checkout
      options["setup_file"] = setup
  for item in args.beam_option:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise ValueError(f"--beam_option={item!r} must be KEY=VALUE")
    options[key.lstrip("-")] = value
  return PipelineOptions.from_dictionary(options)
