"""The sandbox's runner: runs one program (./program.py) in this process and writes the pass marker only
when the program's code ran to its end within its time. The sandbox runs this file's source with
`python -I -c SOURCE FD SECONDS` (jaxformer itself is not importable inside the sandbox's root), so it
imports only the standard library.

argv: FD, a pipe holding the random marker (read, then closed: the marker is never in the program's file
or environment), and SECONDS, the program's own time limit (an interval timer: SIGALRM ends it).
"""

import os
import signal
import sys
import time
import traceback
import types


def main():
  fd, seconds = int(sys.argv[1]), float(sys.argv[2])
  marker = os.read(fd, 64)
  os.close(fd)
  out = os.dup(1)  # the marker's way out, even if the program closes or replaces stdout
  sys.argv = ["program.py"]
  module = types.ModuleType("__main__")  # a fresh __main__: the runner's names stay out of reach
  module.__file__ = os.path.abspath("program.py")
  sys.modules["__main__"] = module
  try:
    with open("program.py", encoding="utf-8") as f:
      source = f.read()
    start = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    exec(compile(source, "program.py", "exec"), module.__dict__)
    signal.setitimer(signal.ITIMER_REAL, 0)
    failed, late = False, time.monotonic() - start > seconds
  except BaseException:
    signal.setitimer(signal.ITIMER_REAL, 0)
    failed = True
    try:
      sys.stdout.flush()  # what it printed before the traceback
      traceback.print_exc()
    except BaseException:
      pass
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except BaseException:
      pass
  if failed:
    os._exit(1)
  if late:  # it ignored or blocked SIGALRM
    os._exit(124)
  os.write(out, b"\n" + marker + b"\n")
  os._exit(0)


if __name__ == "__main__":
  main()
