"""The usual code-corpus filters of `data convert`; each is a setting, and 0 turns it off.

For natural-language corpora pass max_line_chars=0, max_mean_line_chars=0, min_alnum_fraction=0
(paragraphs are long lines, and prose has many spaces).
"""

import dataclasses
import re

# Unicode letters and digits: word characters without the underscore.
_NOT_ALPHANUMERIC = re.compile(r"[\W_]+")
_ASCII_ALPHANUMERIC = bytes(c for c in range(128) if chr(c).isalnum())


def alphanumeric_count(text: str) -> int:
  """Letters and digits in text; ASCII text (most code) by bytes.translate, which is far faster than the regex."""
  if text.isascii():
    raw = text.encode("ascii")
    return len(raw) - len(raw.translate(None, _ASCII_ALPHANUMERIC))
  return len(_NOT_ALPHANUMERIC.sub("", text))


REASONS = ("empty", "too large", "long line", "long mean line", "low alphanumeric")


@dataclasses.dataclass(frozen=True)
class Filters:
  max_file_bytes: int = 1_000_000  # UTF-8 bytes of the whole document
  max_line_chars: int = 1000  # its longest line (minified or generated code)
  max_mean_line_chars: float = 100  # characters per line on average
  min_alnum_fraction: float = 0.25  # share of letters and digits among all characters (data blobs)

  def check(self) -> None:
    for name, value in dataclasses.asdict(self).items():
      if value < 0:
        raise ValueError(f"--{name}={value} must be non-negative (0 turns the filter off)")
    if self.min_alnum_fraction > 1:
      raise ValueError(f"--min_alnum_fraction={self.min_alnum_fraction} is a fraction, at most 1")

  def reason(self, text: str) -> str | None:
    """Why the document is dropped (one of REASONS, the first that applies), or None to keep it."""
    if not text.strip():
      return "empty"
    if self.max_file_bytes and len(text.encode("utf-8")) > self.max_file_bytes:
      return "too large"
    lines = text.splitlines() or [""]
    if self.max_line_chars and max(map(len, lines)) > self.max_line_chars:
      return "long line"
    if self.max_mean_line_chars and len(text) / len(lines) > self.max_mean_line_chars:
      return "long mean line"
    if self.min_alnum_fraction and alphanumeric_count(text) / len(text) < self.min_alnum_fraction:
      return "low alphanumeric"
    return None
