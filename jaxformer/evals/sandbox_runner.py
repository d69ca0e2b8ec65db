"""The sandbox's runner: runs one program (./program.py) and reports whether its code ran to its end in time.

Two processes, so the verdict comes from something the program cannot reach:

- the runner R (this process) forks the program's process C first, and only then (non-dumpable, so C cannot
  read its memory or its descriptors through /proc or ptrace) reads the random marker from its pipe; the
  marker and the channel to the parent (R's stdout) never exist in C;
- C closes the marker pipe and R's copy of the channel, hardens itself (below), runs the program, and exits
  with status 0 only by returning normally after the program's last statement: a failure kills C with
  SIGKILL, a late finish with SIGUSR2, the time limit's SIGALRM ends it;
- R waits for C and writes the marker to the channel only when C exited with status 0.

C's hardening, before any of the program runs: `os._exit`/`posix._exit` raise SystemExit (caught: a fail),
an audit hook (which Python code cannot remove) refuses `exec*` of another program, ctypes, opening
/proc/<pid>/mem, and importing a fresh posix, _signal or _imp, and `signal.signal` is refused (a handler
that raised at the wrong moment could end the runner's own code). So a program cannot exit 0 without its
code ending, and a marker it cannot see cannot be forged.

The sandbox runs this file's source with `python -I -c SOURCE FD SECONDS` (jaxformer is not importable in
the sandbox's root), so it imports only the standard library. argv: FD, the pipe holding the marker, and
SECONDS, the program's own time limit (an interval timer started just before its code runs).
"""

import os
import signal
import sys
import time
import traceback
import types

LATE = signal.SIGUSR2  # C ignored or blocked SIGALRM and finished after its time
REFUSED_IMPORTS = {"posix", "nt", "_signal", "_imp", "_ctypes", "ctypes"}


def _refuse_exit(status=0):
  raise SystemExit(f"os._exit({status}) called by the program: refused in the sandbox")


def _refuse_signal(*args):
  raise OSError("signal handlers cannot be installed in the sandbox")


def _audit(event, args):
  """Irremovable: what the program may not do (see the module docstring)."""
  if event in ("os.exec", "os.posix_spawn") or event.startswith("ctypes."):
    raise PermissionError(f"{event} is refused in the sandbox")
  if event == "import" and args and args[0] in REFUSED_IMPORTS:
    raise ImportError(f"import of {args[0]} is refused in the sandbox")
  if event == "open" and args and isinstance(args[0], (str, bytes)):
    path = os.fsdecode(args[0])
    if path.startswith("/proc/") and {"mem", "maps", "environ", "fd", "pagemap"} & set(path.split("/")):
      raise PermissionError(f"opening {path} is refused in the sandbox")


def _harden() -> None:
  import _imp
  import _signal
  import posix

  create_builtin = _imp.create_builtin

  def create_builtin_guarded(spec):  # a fresh builtin module would bring back what is patched below
    if spec.name in REFUSED_IMPORTS:
      raise ImportError(f"creating module {spec.name} is refused in the sandbox")
    return create_builtin(spec)

  _imp.create_builtin = create_builtin_guarded
  os._exit = posix._exit = _refuse_exit
  signal.signal = _signal.signal = _refuse_signal  # signal.signal calls _signal.signal
  sys.addaudithook(_audit)


def program_process(seconds: float) -> None:
  """C: runs ./program.py; returns (interpreter exit, status 0) only when its code ran to its end in time."""
  kill, getpid, sigkill = os.kill, os.getpid, signal.SIGKILL  # held as locals: no exit-0 power among them
  signal.signal(signal.SIGINT, signal.SIG_DFL)  # no KeyboardInterrupt to raise into this function's own code
  sys.argv = ["program.py"]
  module = types.ModuleType("__main__")  # a fresh __main__: the runner's names stay out of reach
  module.__file__ = os.path.abspath("program.py")
  sys.modules["__main__"] = module
  with open("program.py", encoding="utf-8") as f:
    code = compile(f.read(), "program.py", "exec")
  _harden()
  failed, late = True, False
  try:
    start = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    exec(code, module.__dict__)
    signal.setitimer(signal.ITIMER_REAL, 0)
    failed, late = False, time.monotonic() - start > seconds
  except BaseException:
    signal.setitimer(signal.ITIMER_REAL, 0)
    try:
      sys.stdout.flush()  # what it printed before the traceback
      traceback.print_exc()
    except BaseException:
      pass
  finally:
    for stream in (sys.stdout, sys.stderr):
      try:
        stream.flush()
      except BaseException:
        pass
    if failed or late:
      kill(getpid(), sigkill if failed else LATE)


def main():
  fd, seconds = int(sys.argv[1]), float(sys.argv[2])
  channel = os.dup(1)  # the marker's way out, even if the program closes or replaces stdout
  go_read, go_write = os.pipe()  # C starts the program only once R is closed to it
  pid = os.fork()
  if pid == 0:  # C: neither the marker nor the channel
    for descriptor in (fd, channel, go_write):
      os.close(descriptor)
    os.read(go_read, 1)
    os.close(go_read)
    signal.signal(LATE, signal.SIG_DFL)
    program_process(seconds)
    return
  os.close(go_read)
  import ctypes  # after the fork: never in C

  ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: C (same uid) cannot read this process
  marker = os.read(fd, 64)
  os.close(fd)
  os.write(go_write, b"1")
  os.close(go_write)
  while True:
    try:
      _, status = os.waitpid(pid, 0)
      break
    except InterruptedError:
      continue
  code = os.waitstatus_to_exitcode(status)
  if code == 0:
    os.write(channel, b"\n" + marker + b"\n")
    os._exit(0)
  if code == -LATE:
    os._exit(124)
  os._exit(1 if code == -signal.SIGKILL else (code if code > 0 else 128 - code))


if __name__ == "__main__":
  main()
