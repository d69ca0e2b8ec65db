"""Errors a user can fix, and the small checks that raise them: the bottom layer, imported anywhere.

The CLI prints a UserError as one line and exits 2.
"""


class UserError(ValueError):
  """Bad input, a missing file or a binding that cannot work; the message says what and where."""


class GinConfigError(UserError):
  """A gin file or binding that cannot be used; the message names the file and line, or the binding."""


def one_line(message: str) -> str:
  """A multi-line message folded onto one line (continuation lines joined with '; ')."""
  return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


def require_int(binding: str, value, minimum: int = 0, allow_none: bool = False) -> None:
  """A bound value that must be an integer >= minimum (a quoted string or 0 period stops here, named)."""
  if value is None and allow_none:
    return
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise GinConfigError(f"{binding}={value!r} must be an integer >= {minimum}")


def call_configurable(fn, *args, **kwargs):
  """Calls a gin-configured function, turning a bad bound value into GinConfigError."""
  try:
    return fn(*args, **kwargs)
  except (ValueError, TypeError) as e:
    if isinstance(e, GinConfigError):
      raise
    raise GinConfigError(f"{getattr(fn, '__name__', fn)}: {e}") from e
