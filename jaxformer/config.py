"""gin plumbing in the t5x manner: --gin_file (repeatable), --gin.NAME=VALUE, --gin_search_paths.

Every error in a gin file or binding is raised as GinConfigError naming the file (or the
--gin. flag), the line and the binding, so the CLI can print it and exit.
"""

import contextlib
import difflib
import logging
import os
import pathlib
import tokenize
from collections.abc import Iterable, Sequence

import gin

from jaxformer.errors import GinConfigError, UserError, call_configurable, require_int  # noqa: F401 (the CLI's names)

# The gin files that ship inside the package (models/, objectives/, data/, runs/, sweeps/).
GIN_DIR = pathlib.Path(__file__).resolve().parent / "gin"


# Modules whose gin configurables files may name without `import` lines.
CONFIGURABLE_MODULES = (
  "jaxformer.model",
  "jaxformer.plan",
  "jaxformer.sharding",
  "jaxformer.objectives",
  "jaxformer.objectives.mixture",
  "jaxformer.data.pipeline.dataset",
  "jaxformer.data.ingest.tokenizer",
  "jaxformer.tasks.local",
  "jaxformer.tasks.corpora",
  "jaxformer.tasks.code_corpus",
  "jaxformer.checkpoint",
  "jaxformer.train.optimizer",
  "jaxformer.train.step",
  "jaxformer.train.loop",
  "jaxformer.sweep",
  "jaxformer.evals.during_training",
)


def default_search_paths() -> list[str]:
  """'' (the working directory, or absolute paths), then $JAXFORMER_GIN_PATH, then the package's gin/."""
  paths = [""]
  paths += [p for p in os.environ.get("JAXFORMER_GIN_PATH", "").split(os.pathsep) if p]
  paths.append(str(GIN_DIR))
  return paths


def import_configurables():
  # Registers every gin configurable so files can name them without `import` lines.
  for module in CONFIGURABLE_MODULES:
    __import__(module)


def _describe(error: Exception, where: str, text: str | None = None) -> str:
  message = str(error)
  if isinstance(error, tokenize.TokenError):
    line = error.args[1][0] if len(error.args) > 1 else "?"
    return f"{where}, near line {line}: gin syntax error ({error.args[0]})"
  if isinstance(error, SyntaxError) and error.lineno:
    message = f"{error.msg} (line {error.lineno}: {error.text!r})"
  if where not in message:
    message = f"{where}: {message}"
  if text is not None and text not in message:
    message += f"\n  binding: {text}"
  return message


class _DropGinPathNoise(logging.Filter):
  """gin logs 'Path not found' for every search path it tries; we report the real failure."""

  def filter(self, record):
    return not str(record.msg).startswith("Path not found")


@contextlib.contextmanager
def _quiet_gin_search():
  root = logging.getLogger()
  noise = _DropGinPathNoise()
  root.addFilter(noise)
  try:
    yield
  finally:
    root.removeFilter(noise)


def _tolerate_namespace_packages():
  """gin also looks for 'runs/x.gin' as package 'runs' on sys.path; a plain folder named runs/ in
  the working directory (a namespace package, no origin) makes that lookup raise TypeError instead
  of answering 'not here'. Make it answer 'not here'."""

  def safe(check):
    if getattr(check, "tolerant", False):
      return check

    def exists(path):
      try:
        return check(path)
      except TypeError:
        return False

    exists.tolerant = True
    return exists

  readers = gin.config._FILE_READERS
  readers[:] = [(reader, safe(check)) for reader, check in readers]


def binding_from_flag(name: str, value: str) -> str:
  """--gin.TRAIN_STEPS=100 -> 'TRAIN_STEPS = 100' (values are gin expressions, as in t5x)."""
  return f"{name} = {value}"


def parse_gin(
  gin_files: Sequence[str] = (),
  bindings: Iterable[str] = (),
  search_paths: Sequence[str] | None = None,
  finalize: bool = True,
) -> None:
  """Clears gin, then parses files in order and bindings in order (later wins).

  Raises:
    GinConfigError naming the file and line, or the binding, that failed.
  """
  import_configurables()
  _tolerate_namespace_packages()
  gin.config._set_config_is_locked(False)  # a second parse in one process
  gin.clear_config(clear_constants=True)
  gin.config._LOCATION_PREFIXES[:] = [""]
  for path in default_search_paths() if search_paths is None else [""] + list(search_paths):
    if path:
      gin.add_config_file_search_path(path)
  for gin_file in gin_files:
    try:
      with _quiet_gin_search():
        gin.parse_config_file(gin_file)
    except OSError as e:
      raise GinConfigError(
        f"--gin_file={gin_file}: not found in the gin search paths {gin.config._LOCATION_PREFIXES}"
      ) from e
    except Exception as e:  # gin raises ValueError, SyntaxError, TokenError, ...
      raise GinConfigError(_describe(e, f"In gin file {gin_file!r}")) from e
  for binding in bindings:
    try:
      gin.parse_config(binding)
    except Exception as e:
      hint = ""
      if isinstance(e, (SyntaxError, tokenize.TokenError)):
        hint = " (gin values are expressions: quote strings, e.g. --gin.MODEL_DIR=\"'/tmp/run'\")"
      raise GinConfigError(_describe(e, f"In binding --gin.{binding.replace(' = ', '=', 1)}") + hint) from e
  _check_flag_macros_are_read(bindings)
  if finalize:
    try:
      gin.finalize()
    except ValueError as e:  # a %gin.REQUIRED macro (runs/pretrain.gin: MODEL_DIR, TRAIN_STEPS) left unbound
      first = str(e).split("/")[0].split()[-1]
      missing = [first] + [m for m in unbound_required_macros() if m != first]
      raise GinConfigError(
        f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required (%gin.REQUIRED): bind "
        f"{'it' if len(missing) == 1 else 'each'}, e.g. --gin.{first}=..."
      ) from e


def unbound_required_macros() -> list[str]:
  """Macros still bound to %gin.REQUIRED (all of them, where gin's own error names the first)."""
  return sorted(
    name
    for (name, selector), params in gin.config._CONFIG.items()
    if selector == "gin.macro" and str(params.get("value")) == "%gin.REQUIRED"
  )


def _references(value, found: set) -> set:
  if isinstance(value, gin.config.ConfigurableReference):
    found.add(value.scoped_selector)
  elif isinstance(value, (list, tuple, set)):
    for item in value:
      _references(item, found)
  elif isinstance(value, dict):
    for item in value.values():
      _references(item, found)
  return found


def _check_flag_macros_are_read(bindings: Iterable[str]) -> None:
  """A --gin.MACRO=V flag that no binding reads (a typo such as TRIAN_STEPS) would silently train
  the default: stop and name it, with the closest macro that is read."""
  config = gin.config._CONFIG
  read = set()
  for params in config.values():
    for value in params.values():
      _references(value, read)
  read_macros = sorted(s.split("/")[0] for s in read if s.endswith("/gin.macro"))
  for binding in bindings:
    name = binding.split("=", 1)[0].strip()
    if (name, "gin.macro") in config and f"{name}/gin.macro" not in read:
      close = difflib.get_close_matches(name, read_macros, n=1)
      hint = f"; did you mean {close[0]}?" if close else f" (macros read: {', '.join(read_macros) or 'none'})"
      raise GinConfigError(f"--gin.{name}: no binding reads the macro {name}{hint}")
