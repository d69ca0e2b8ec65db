"""What every verb shares: gin flags, turning bad input into UserError, logging, loading a run."""

import argparse
import logging
import math
import os
import sys

import gin

from jaxformer import config as config_lib
from jaxformer.errors import UserError

# Third-party loggers that chatter at INFO; --verbose lets them through.
NOISY_LOGGERS = ("absl", "orbax", "jax", "tensorflow", "h5py", "matplotlib", "wandb", "urllib3")


def add_gin_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--gin_file", action="append", default=[], help="gin file, relative to the working directory or a gin search path"
  )
  parser.add_argument(
    "--gin_search_paths",
    default=None,
    help="comma-separated folders searched for gin files (default: ., $JAXFORMER_GIN_PATH, jaxformer's own gin/)",
  )
  parser.add_argument("--verbose", action="store_true", help="show third-party INFO logs (absl, orbax, TF, ...)")


class _Renamed(argparse.Action):
  """An old spelling of a flag: sets the new one's value and says so on stderr (kept for one release)."""

  def __init__(self, option_strings, dest, new: str = "", **kwargs):
    super().__init__(option_strings, dest, **kwargs)
    self.new = new

  def __call__(self, parser, namespace, values, option_string=None):
    print(
      f"jaxformer: warning: {option_string} is now {self.new}; the old spelling goes in the next release",
      file=sys.stderr,
    )
    setattr(namespace, self.dest, values)


def add_renamed(parser: argparse.ArgumentParser, old: str, new: str, **kwargs) -> None:
  """Accepts `old` as a deprecated spelling of the flag `new` (already added to parser), hidden from --help."""
  parser.add_argument(old, dest=new.lstrip("-"), action=_Renamed, new=new, help=argparse.SUPPRESS, **kwargs)


def require_flag(args, name: str) -> None:
  """A flag required under either spelling (argparse cannot require one of two)."""
  if getattr(args, name.lstrip("-")) is None:
    raise UserError(f"{name} is required")


def add_distributed_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--coordinator_address",
    default=None,
    help="host:port of process 0, for multi-host runs off TPU (or $JAXFORMER_COORDINATOR_ADDRESS)",
  )
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)


def split_gin_bindings(argv: list[str]) -> tuple[list[str], list[str]]:
  """Pulls --gin.NAME=VALUE (or --gin.NAME VALUE) out of argv; returns (rest, bindings)."""
  rest, bindings = [], []
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--gin."):
      name, sep, value = arg[len("--gin.") :].partition("=")
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


def parse_gin(args, bindings: list[str], extra_bindings=(), finalize: bool = True, base_files=()) -> None:
  """Parses --gin_file and --gin. flags (extra_bindings first, so the user's flags win).
  finalize=False leaves %gin.REQUIRED macros unbound (plan: shapes need no data or MODEL_DIR).
  base_files: a run's own config.gin, which the files and flags may override."""
  config_lib.parse_gin(args.gin_file, list(extra_bindings) + bindings, search_paths(args), finalize, base_files)


def search_paths(args) -> list[str] | None:
  """--gin_search_paths, then the package's gin/ (None: the default search paths)."""
  if not args.gin_search_paths:
    return None
  return [p for p in args.gin_search_paths.split(",") if p] + [str(config_lib.GIN_DIR)]


def parse_run_gin(model_dir: str, args, bindings: list[str]) -> None:
  """Parses MODEL_DIR/config.gin (what the run used) plus any --gin_file/--gin. overrides."""
  from jaxformer import fs

  path = os.path.join(fs.resolve(model_dir), "config.gin")
  if not fs.exists(path):
    raise UserError(
      f"--model_dir={model_dir}: {path} is missing; is this a jaxformer run "
      "(`jaxformer train`) or an import (`jaxformer import`)?"
    )
  parse_gin(args, bindings, base_files=[path])


def bound(name: str):
  """The value gin binds to `name` (a parameter or %MACRO), or None."""
  try:
    return gin.query_parameter(name)
  except (ValueError, KeyError):
    return None


def user_errors(fn, *args, **kwargs):
  """Runs fn; missing files and bad values become one clear UserError."""
  try:
    return fn(*args, **kwargs)
  except (FileNotFoundError, FileExistsError, ValueError) as e:  # UserError too: gin appends where it was called
    raise UserError(str(e).split("\n  In call to configurable")[0]) from e


class _StderrHandler(logging.Handler):
  """Writes to whatever sys.stderr is when a record comes (an in-process caller may have replaced it)."""

  def emit(self, record):
    try:
      sys.stderr.write(self.format(record) + "\n")
    except Exception:  # a closed or broken stream must not end the run
      self.handleError(record)


def setup_logging(verbose: bool) -> None:
  """jaxformer's own log lines (restores, preemption, skipped steps) go to stderr; third-party INFO
  chatter is hidden unless --verbose. absl owns the root logger, so 'jaxformer' gets its own handler."""
  logger = logging.getLogger("jaxformer")
  if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s jaxformer: %(message)s"))
    logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False
  for noisy in NOISY_LOGGERS:
    logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.WARNING)
  if not verbose:
    os.environ.setdefault("WANDB_SILENT", "true")


def load_run(args, bindings):
  """The run in --model_dir (its config.gin plus overrides), parameters restored for inference."""
  from jaxformer import distributed
  from jaxformer.infer.run import load_run as load

  distributed.initialize()  # every worker of a TPU slice runs the same eval (jaxformer tpu launch); a no-op here
  parse_run_gin(args.model_dir, args, bindings)
  from jaxformer import models

  config = config_lib.call_configurable(models.bound)
  return user_errors(load, args.model_dir, config, args.step, trained_as_prefix_lm())


def trained_as_prefix_lm() -> bool:
  """Whether the parsed run config trained bidirectional prefixes."""
  from jaxformer import objectives

  return objectives.trained_as_prefix_lm(bound("%OBJECTIVE_RATES"))


def infill_format(vocabulary, requested: str | None = None):
  """The infill format of the parsed run (objectives.choose_infill_format): --infill_format, else the
  first its objectives trained, else the first its vocabulary can write."""
  from jaxformer import objectives

  if getattr(vocabulary, "special", None) is None:
    raise UserError(f"infill: {type(vocabulary).__name__} has no special tokens")
  return user_errors(objectives.choose_infill_format, bound("%OBJECTIVE_RATES"), vocabulary.special, requested)


def check_positive(name: str, value, allow_zero: bool = False) -> None:
  """Rejects a negative (or zero), NaN or infinite numeric flag with a message naming it."""
  if value is not None and (not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero)):
    raise UserError(f"{name}={value} must be {'a non-negative' if allow_zero else 'a positive'} finite number")
