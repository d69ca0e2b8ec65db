"""Drops third-party C++ chatter from stderr when it goes to a file.

TF-Text's SentencePiece op logs "normalizer.cc(51) LOG(INFO) ..." straight to file descriptor 2 each
time a dataset loads the model; no Python or TF log level reaches it. When stderr is not a terminal,
`jaxformer` routes fd 2 through a pipe and a thread that forwards every line except those.
"""

import atexit
import os
import sys
import threading

# Lines (bytes) that never reach the log unless --verbose.
DROPPED = (b"LOG(INFO)",)


class StderrFilter:
  """Forwards fd 2 line by line to the original stderr, minus lines holding any of `drop`."""

  def __init__(self, drop=DROPPED):
    self._drop = drop
    sys.stderr.flush()
    self._original = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)
    self._thread = threading.Thread(target=self._pump, args=(read,), daemon=True)
    self._thread.start()
    atexit.register(self.close)

  def _pump(self, read: int) -> None:
    with os.fdopen(read, "rb") as lines:
      for line in lines:
        if not any(d in line for d in self._drop):
          os.write(self._original, line)

  def close(self) -> None:
    """Restores fd 2; the pump drains what is left in the pipe and ends."""
    sys.stderr.flush()
    os.dup2(self._original, 2)  # the pipe's last write end closes: the pump sees end of file
    self._thread.join(timeout=5)


def quiet_stderr() -> StderrFilter | None:
  """Installs the filter when stderr is a file or pipe (a terminal keeps its progress bar as is)."""
  if os.isatty(2):
    return None
  return StderrFilter()
