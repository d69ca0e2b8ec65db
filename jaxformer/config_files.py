"""gin files read with their places: every include resolved on jaxformer's search paths, every binding with
its file and line, and the rule for a setting bound twice. gin itself parses each piece (gin.parse_config);
this module decides the order and where each include comes from, through gin's public parser only.

The rule (docs/CLI.md, "gin files"): a setting (macro or parameter) bound to different values in two places
is an error naming both, unless the later place may override the earlier: the later file includes the
earlier one (directly or through other includes: a file overrides its bases, t5x's way), the earlier
place is a run's own config.gin read as a base (sample, eval and export on MODEL_DIR), or the later one
is a --gin. flag (the command line always may). Two files passed side by side with --gin_file that bind
a setting differently, or a file that binds a setting and then includes a base that binds it again (the
include order would decide silently), stop with both places named.
"""

import dataclasses
import os

from gin import config_parser

from jaxformer.errors import GinConfigError


@dataclasses.dataclass(frozen=True)
class Reference:
  """@name or @name() inside a bound value."""

  name: str
  evaluate: bool


@dataclasses.dataclass(frozen=True)
class Macro:
  """%name inside a bound value (gin.REQUIRED too)."""

  name: str


class _Recorder(config_parser.ParserDelegate):
  """Values as plain data: references and macros become comparable objects, nothing is looked up."""

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return Reference(scoped_configurable_name, evaluate)

  def macro(self, macro_name):
    return Macro(macro_name)


@dataclasses.dataclass(frozen=True)
class Binding:
  """One binding statement: key ('MODEL_DIR', 'train.train.seed', 'scope/ModelConfig.d_model'), its parsed
  value, where it is (file and line; file None for a --gin. flag) and the include chain of this occurrence
  (the top-level file first, this file last)."""

  key: str
  value: object
  text: str
  file: str | None
  line: int
  chain: tuple[str, ...]
  base: bool = False  # from a run's own config.gin, which anything after may override

  @property
  def is_macro(self) -> bool:
    return "." not in self.key.rsplit("/", 1)[-1]

  def where(self) -> str:
    return f"{self.file}:{self.line}" if self.file else f"--gin.{self.text.replace(' = ', '=', 1)}"

  def may_override(self, earlier: "Binding") -> bool:
    if self.file is None or earlier.base:
      return True
    inner = earlier.chain
    return len(self.chain) < len(inner) and inner[: len(self.chain)] == self.chain


@dataclasses.dataclass(frozen=True)
class Piece:
  """Text for one gin.parse_config call: a run of statements between includes, padded with blank lines
  so gin's line numbers are the file's."""

  text: str
  file: str | None


@dataclasses.dataclass
class Program:
  """What a set of gin files and flags binds, in the order gin applies it."""

  pieces: list[Piece] = dataclasses.field(default_factory=list)
  bindings: list[Binding] = dataclasses.field(default_factory=list)

  def final(self) -> dict[str, Binding]:
    """The binding that wins for each key (the last one)."""
    return {b.key: b for b in self.bindings}

  def macros_read(self) -> set[str]:
    """Macros that some winning binding's value names (%NAME)."""
    found = set()
    for binding in self.final().values():
      _macros_in(binding.value, found)
    return found

  def unbound_required(self) -> list[str]:
    """Macros whose winning value is still %gin.REQUIRED."""
    return sorted(k for k, b in self.final().items() if b.is_macro and b.value == Macro("gin.REQUIRED"))


def _macros_in(value, found: set) -> None:
  if isinstance(value, Macro):
    found.add(value.name)
  elif isinstance(value, (list, tuple, set)):
    for item in value:
      _macros_in(item, found)
  elif isinstance(value, dict):
    for item in list(value.keys()) + list(value.values()):
      _macros_in(item, found)


def resolve(name: str, search_paths, including: str | None = None) -> str:
  """The absolute path of gin file `name`: itself when absolute, else the first search path holding it.

  Raises GinConfigError naming the file (and the file that includes it) and the paths searched.
  """
  if os.path.isabs(name):
    if os.path.isfile(name):
      return name
    candidates = []
  else:
    candidates = [os.path.abspath(os.path.join(prefix, name)) for prefix in search_paths]
    for path in candidates:
      if os.path.isfile(path):
        return path
  where = f"include {name!r} in {including}" if including else f"--gin_file={name}"
  searched = [p or "." for p in search_paths] if not os.path.isabs(name) else []
  raise GinConfigError(f"{where}: not found" + (f" in the gin search paths {searched}" if searched else ""))


def _statements(text: str, path: str):
  try:
    return list(config_parser.ConfigParser(text, _Recorder()))
  except SyntaxError as e:
    detail = f"{e.msg} (line {e.lineno}: {(e.text or '').strip()!r})" if e.lineno else str(e)
    raise GinConfigError(f"In gin file {path!r}: {detail}") from e
  except Exception as e:  # tokenize.TokenError and the parser's own errors
    line = e.args[1][0] if len(getattr(e, "args", ())) > 1 and isinstance(e.args[1], tuple) else "?"
    raise GinConfigError(f"In gin file {path!r}, near line {line}: gin syntax error ({e.args[0]})") from e


def _key(statement) -> str:
  name = f"{statement.selector}.{statement.arg_name}" if statement.arg_name else statement.selector
  return f"{statement.scope}/{name}" if statement.scope else name


def _add_file(program: Program, path: str, text: str, search_paths, chain: tuple, base: bool) -> None:
  if path in chain:
    raise GinConfigError(f"gin file {chain[-1]} includes {path}, which includes it back: " + " -> ".join(chain))
  chain = (*chain, path)
  lines = text.splitlines(keepends=True)
  start = 0  # first line (0-based) of the current piece

  def flush(end: int) -> None:
    body = "".join(lines[start:end])
    if body.strip():
      program.pieces.append(Piece("\n" * start + body, path))

  for statement in _statements(text, path):
    if isinstance(statement, config_parser.IncludeStatement):
      line = statement.location.line_num  # 1-based; an include is one line
      flush(line - 1)
      start = line
      included = resolve(statement.filename, search_paths, including=f"{path}:{line}")
      _add_file(program, included, read_text(included), search_paths, chain, base)
    elif isinstance(statement, config_parser.BindingStatement):
      location = statement.location
      program.bindings.append(
        Binding(_key(statement), statement.value, location.line_content.strip(), path, location.line_num, chain, base)
      )
  flush(len(lines))


def read_text(path: str) -> str:
  from jaxformer import fs

  try:
    with fs.open(path) as f:
      return f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise GinConfigError(f"gin file {path}: cannot be read ({e})") from e


def read_program(gin_files, bindings, search_paths, base_files=()) -> Program:
  """The pieces and bindings of base_files (a run's config.gin, by path), then gin_files (resolved on
  search_paths), then the --gin. bindings ('NAME = VALUE' strings), in gin's order."""
  program = Program()
  for path in base_files:
    _add_file(program, path, read_text(path), search_paths, (), base=True)
  for name in gin_files:
    path = name if "://" in name else resolve(name, search_paths)
    _add_file(program, path, read_text(path), search_paths, (), base=False)
  for text in bindings:
    statements = _statements(text, f"--gin.{text}")
    for statement in statements:
      if isinstance(statement, config_parser.IncludeStatement):
        raise GinConfigError(f"--gin.{text}: use --gin_file for includes")
      if isinstance(statement, config_parser.BindingStatement):
        program.bindings.append(Binding(_key(statement), statement.value, text, None, 0, ()))
    program.pieces.append(Piece(text, None))
  return program


def check_bound_once(program: Program) -> None:
  """Raises GinConfigError for a setting two places bind differently where neither may override the other
  (module docstring), naming both places and values."""
  by_key: dict[str, list[Binding]] = {}
  for binding in program.bindings:
    by_key.setdefault(binding.key, []).append(binding)
  problems = []
  for key, sites in by_key.items():
    winner = sites[-1]
    for earlier in sites[:-1]:
      if earlier.value != winner.value and not winner.may_override(earlier):
        problems.append(
          f"{key} is bound in {earlier.where()} ({earlier.text}) and again in {winner.where()} ({winner.text})"
        )
        break
  if problems:
    raise GinConfigError(
      "; ".join(problems) + ": a setting bound in two files that do not include one another is ambiguous "
      "(the order decides silently); bind it once, in a file that includes both, or with --gin.NAME=VALUE"
    )
