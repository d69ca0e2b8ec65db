"""The one exception type for errors a user can fix: the CLI prints its message as one line and exits 2."""


class UserError(ValueError):
  """Bad input, a missing file or a binding that cannot work; the message says what and where."""


def one_line(message: str) -> str:
  """A multi-line message folded onto one line (continuation lines joined with '; ')."""
  return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())
