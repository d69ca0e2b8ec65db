"""Apache Beam pipeline options from jaxformer's flags, shared by `data convert` and `data cache`.

--runner=direct (default) runs on this machine, with --num_workers processes; --runner=dataflow
runs on Google Cloud Dataflow (`pip install -e '.[dataflow]'`) with --project, --region and
--temp_location; --beam_option=KEY=VALUE passes any other Beam option (max_num_workers,
machine_type, staging_location, ...).
"""

import logging
import os

# The checkout this file is in (jaxformer/data/ingest/ inside it): its setup.py installs jaxformer on Dataflow workers.
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
RUNNERS = {
  "direct": "DirectRunner",
  "dataflow": "DataflowRunner",
  "flink": "FlinkRunner",
  "spark": "SparkRunner",
  "portable": "PortableRunner",
  "prism": "PrismRunner",
}


def add_flags(parser) -> None:
  beam = parser.add_argument_group("Apache Beam")
  beam.add_argument("--runner", default="direct", help="direct (default), dataflow, or any Beam runner name")
  beam.add_argument(
    "--num_workers",
    type=int,
    default=1,
    help="processes of the direct runner (default 1); Dataflow: its initial workers",
  )
  beam.add_argument("--project", default=None, help="Google Cloud project (Dataflow)")
  beam.add_argument("--region", default=None, help="Dataflow region")
  beam.add_argument("--temp_location", default=None, help="gs:// folder for Dataflow's temporary files")
  beam.add_argument(
    "--beam_option", action="append", default=[], help="KEY=VALUE for any other Beam option (repeatable)"
  )


def from_args(args):
  """pipeline_options for the parsed add_flags flags (and --verbose)."""
  quiet = not getattr(args, "verbose", False)
  if quiet:  # Beam logs every worker's start and stop at INFO and harmless WARNINGs
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # importing Beam warns on the root logger that GCP's clients are missing
    try:
      import apache_beam  # noqa: F401
    finally:
      root.setLevel(level)
  return pipeline_options(
    args.runner,
    args.num_workers,
    project=args.project,
    region=args.region,
    temp_location=args.temp_location,
    beam_options=args.beam_option,
    quiet=quiet,
  )


def pipeline_options(
  runner: str = "direct",
  num_workers: int = 1,
  project=None,
  region=None,
  temp_location=None,
  beam_options=(),
  quiet: bool = False,
):
  """Beam PipelineOptions from the CLI's runner flags; beam_options are 'KEY=VALUE' strings; quiet:
  the direct runner's worker processes log errors only (Dataflow's logs go to Cloud Logging as set)."""
  from apache_beam.options.pipeline_options import PipelineOptions

  name = RUNNERS.get(runner.lower(), runner)
  flags = [f"--runner={name}"]
  if name == "DirectRunner":
    if num_workers < 1:
      raise ValueError(f"--num_workers={num_workers} must be positive")
    if num_workers > 1:
      flags += ["--direct_running_mode=multi_processing", f"--direct_num_workers={num_workers}"]
  elif name == "DataflowRunner" and num_workers > 1:
    flags.append(f"--num_workers={num_workers}")  # Dataflow's initial worker count
  for key, value in (("project", project), ("region", region), ("temp_location", temp_location)):
    if value:
      flags.append(f"--{key}={value}")
  for option in beam_options:
    key, sep, value = option.partition("=")
    if not sep or not key:
      raise ValueError(f"--beam_option={option}: write KEY=VALUE, e.g. --beam_option=max_num_workers=32")
    flags.append(f"--{key.lstrip('-')}={value}")
  if (
    quiet
    and name == "DirectRunner"
    and not any(o.lstrip("-").startswith("default_sdk_harness_log_level=") for o in beam_options)
  ):
    flags.append("--default_sdk_harness_log_level=ERROR")
  if name == "DataflowRunner" and not any(o.lstrip("-").startswith("setup_file=") for o in beam_options):
    if os.path.exists(os.path.join(REPO, "setup.py")):  # so workers install jaxformer
      flags.append(f"--setup_file={os.path.join(REPO, 'setup.py')}")
  return PipelineOptions(flags)
