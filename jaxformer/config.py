"""gin plumbing in the t5x manner: --gin_file (repeatable), --gin.NAME=VALUE, --gin_search_paths.

Files are found on the search paths ('' (the working directory, or absolute paths), $JAXFORMER_GIN_PATH,
then the gin files that ship inside the package), read with their places (config_files.py), checked for
settings bound twice, and handed to gin piece by piece. Every error in a gin file or binding is raised as
GinConfigError naming the file (or the --gin. flag), the line and the binding, so the CLI can print it
and exit.
"""

import difflib
import functools
import os
import pathlib
import tokenize
from collections.abc import Iterable, Sequence

import gin

from jaxformer import config_files
from jaxformer.errors import GinConfigError, UserError, call_configurable, require_int  # noqa: F401 (the CLI's names)

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
# The gin files that ship inside the package (models/, objectives/, data/, runs/, sweeps/).
GIN_DIR = PACKAGE_DIR / "gin"
# Folders of the package that hold no Python (package data).
_DATA_DIRS = ("gin", "tpu")


def default_search_paths() -> list[str]:
  """'' (the working directory, or absolute paths), then $JAXFORMER_GIN_PATH, then the package's gin/."""
  paths = [""]
  paths += [p for p in os.environ.get("JAXFORMER_GIN_PATH", "").split(os.pathsep) if p]
  paths.append(str(GIN_DIR))
  return paths


@functools.cache
def configurable_modules() -> tuple[str, ...]:
  """Every jaxformer module that registers a gin configurable, found by reading the package's sources
  (so a new configurable needs no list kept by hand)."""
  found = []
  for path in sorted(PACKAGE_DIR.rglob("*.py")):
    relative = path.relative_to(PACKAGE_DIR)
    if relative.parts[0] in _DATA_DIRS:
      continue
    if "gin.configurable" in path.read_text(encoding="utf-8"):
      parts = ("jaxformer", *relative.with_suffix("").parts)
      found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
  return tuple(found)


def import_configurables():
  """Registers every gin configurable, so files can name them without `import` lines."""
  for module in configurable_modules():
    __import__(module)


def _describe(error: Exception, where: str) -> str:
  message = str(error)
  if isinstance(error, tokenize.TokenError):
    line = error.args[1][0] if len(error.args) > 1 else "?"
    return f"{where}, near line {line}: gin syntax error ({error.args[0]})"
  if isinstance(error, SyntaxError) and error.lineno:
    message = f"{error.msg} (line {error.lineno}: {error.text!r})"
  return message if where in message else f"{where}: {message}"


def binding_from_flag(name: str, value: str) -> str:
  """--gin.TRAIN_STEPS=100 -> 'TRAIN_STEPS = 100' (values are gin expressions, as in t5x)."""
  return f"{name} = {value}"


def clear() -> None:
  """Clears every gin binding and unlocks the config (also after a finalized parse in the same process)."""
  gin.clear_config(clear_constants=True)


def parse_gin(
  gin_files: Sequence[str] = (),
  bindings: Iterable[str] = (),
  search_paths: Sequence[str] | None = None,
  finalize: bool = True,
  base_files: Sequence[str] = (),
  unread_macros_allowed: Iterable[str] = (),
) -> config_files.Program:
  """Clears gin, then parses base_files, gin_files and bindings in order (config_files.py's rule decides
  which of two bindings of one setting may win).

  Args:
    gin_files: names found on the search paths (absolute or gs:// paths as they are).
    bindings: 'NAME = VALUE' strings (the --gin. flags).
    search_paths: folders searched for gin files and includes (default: default_search_paths()).
    finalize: gin.finalize() at the end, which requires every %gin.REQUIRED macro to be bound.
    base_files: paths of a run's own config.gin, parsed first; anything after may override them.
    unread_macros_allowed: macros among the bindings that need not be read (a sweep run's bindings under
      an eval that overrides what reads them: the run's config.gin holds them as file bindings).
  Returns:
    the parsed Program (every binding with its place).
  Raises:
    GinConfigError naming the file and line, or the binding, that failed.
  """
  import_configurables()
  clear()
  paths = default_search_paths() if search_paths is None else [""] + list(search_paths)
  bindings = list(bindings)
  program = config_files.read_program(gin_files, bindings, paths, base_files)
  config_files.check_bound_once(program)
  for piece in program.pieces:
    where = f"In gin file {piece.file!r}" if piece.file else f"In binding --gin.{piece.text.replace(' = ', '=', 1)}"
    try:
      gin.parse_config(piece.text)
    except Exception as e:  # gin raises ValueError, SyntaxError, TokenError, ...
      hint = ""
      if piece.file is None and isinstance(e, (SyntaxError, tokenize.TokenError)):
        hint = " (gin values are expressions: quote strings, e.g. --gin.MODEL_DIR=\"'/tmp/run'\")"
      raise GinConfigError(_describe(e, where) + hint) from e
  _check_flag_macros_are_read(program, set(unread_macros_allowed))
  if finalize:
    missing = program.unbound_required()
    if missing:
      raise GinConfigError(
        f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required (%gin.REQUIRED): bind "
        f"{'it' if len(missing) == 1 else 'each'}, e.g. --gin.{missing[0]}=..."
      )
    try:
      gin.finalize()
    except ValueError as e:
      raise GinConfigError(f"gin: {e}") from e
  return program


def _check_flag_macros_are_read(program: config_files.Program, allowed: set) -> None:
  """A --gin.MACRO=V flag that no binding reads (a typo such as TRIAN_STEPS) would silently train
  the default: stop and name it, with the closest macro that is read."""
  read = program.macros_read()
  bound_in_files = {b.key for b in program.bindings if b.file is not None}
  for binding in program.bindings:
    if binding.file is None and binding.is_macro and binding.key not in read and binding.key not in allowed:
      close = difflib.get_close_matches(binding.key, sorted(read | bound_in_files), n=1)
      hint = f"; did you mean {close[0]}?" if close else f" (macros read: {', '.join(sorted(read)) or 'none'})"
      raise GinConfigError(f"--gin.{binding.key}: no binding reads the macro {binding.key}{hint}")
