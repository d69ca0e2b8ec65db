"""Drops third-party C++ chatter from stderr when it goes to a file.

TF-Text's SentencePiece op logs "normalizer.cc(51) LOG(INFO) ..." straight to file descriptor 2 each
time a dataset loads the model; no Python or TF log level reaches it. When stderr is not a terminal,
`jaxformer` routes fd 2 through a pipe to a small separate process that forwards every line except
those. A separate process, not a thread: when a library ends the process at once (a C++ CHECK or
LOG(FATAL), an abort), a thread dies with it and the last lines, the ones that say why, were lost;
the forwarding process reads the pipe to its end whatever happens to the writer.
"""

import atexit
import os
import subprocess
import sys

# Lines (bytes) that never reach the log unless --verbose.
DROPPED = (b"LOG(INFO)",)

# The forwarder: stdin is the pipe, stdout the original stderr. It ignores SIGINT and SIGTERM (a
# Ctrl-C or stop.sh meant for jaxformer) and ends when every writer has closed the pipe.
_FORWARD = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
drop = [d.encode() for d in sys.argv[1:]]
for line in sys.stdin.buffer:
    if not any(d in line for d in drop):
        os.write(1, line)
"""


class StderrFilter:
  """Forwards fd 2 line by line to the original stderr, minus lines holding any of `drop`."""

  def __init__(self, drop=DROPPED):
    sys.stderr.flush()
    self._original = os.dup(2)
    read, write = os.pipe()
    self._process = subprocess.Popen(
      [sys.executable, "-S", "-E", "-c", _FORWARD, *(d.decode() for d in drop)],
      stdin=read,
      stdout=self._original,
      stderr=self._original,
      close_fds=True,
    )
    os.close(read)
    os.dup2(write, 2)
    os.close(write)
    atexit.register(self.close)

  def close(self) -> None:
    """Restores fd 2 and waits (a few seconds at most) for the forwarder to write what is left."""
    sys.stderr.flush()
    os.dup2(self._original, 2)  # this process's write end closes: the forwarder sees end of file
    try:
      self._process.wait(timeout=5)  # longer only while a child process still holds the pipe
    except subprocess.TimeoutExpired:
      pass


def quiet_stderr() -> StderrFilter | None:
  """Installs the filter when stderr is a file or pipe (a terminal keeps its progress bar as is)."""
  if os.isatty(2):
    return None
  return StderrFilter()
