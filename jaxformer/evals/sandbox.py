"""Runs untrusted Python (generated code and its tests) so it cannot harm the machine.

Each program runs in its own process group and session, with:
- a wall-time limit (the whole group is SIGKILLed at the deadline) and a CPU-time limit;
- an address-space limit (a 60 GB allocation fails), a file-size limit, no core files;
- where `unshare` works (Linux, root): new network, mount and PID namespaces: no network at all,
  private tmpfs over /tmp, /var/tmp and /dev/shm (writes there vanish with the sandbox), and every
  process it started dies with it; the program then runs as `nobody`, so it cannot write to
  other users' files, and a process-count limit stops fork bombs;
- a private working directory with HOME and TMPDIR inside it, and a minimal environment.

What it does not isolate: it is not a VM or seccomp jail. Without unshare (not root, or not
Linux) only the limits, the process group and the private directory apply (the process-count
limit then counts the user's own processes, and root ignores it), so network access and writes
to world-writable paths remain possible; run evals of untrusted models in a container then.
"""

import dataclasses
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

NOBODY = 65534

# Runs inside the namespaces as root: private tmpfs mounts, the Python install bind-mounted
# read-only where `nobody` can reach it (it may live under a private home), a work dir, then
# drop to nobody and exec the program.
_LIMITS = r"""
import os, resource, subprocess, sys
for name in ("AS", "CPU", "FSIZE", "CORE"):
    value = int(os.environ.pop("SANDBOX_" + name))
    resource.setrlimit(getattr(resource, "RLIMIT_" + name), (value, value + (name == "CPU")))
"""

_FALLBACK = (
  _LIMITS
  + r"""
nproc = int(os.environ.pop("SANDBOX_NPROC"))  # counts the user's processes; root ignores it
resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
os.execve(sys.executable, [sys.executable, "-I", "program.py"],
          {k: os.environ[k] for k in ("HOME", "TMPDIR", "PATH", "LANG")})
"""
)

_LAUNCHER = (
  _LIMITS
  + r"""
for path in ("/tmp", "/var/tmp", "/dev/shm"):
    if os.path.isdir(path):
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", path], check=True)
prefix = os.environ.pop("SANDBOX_PYTHON_PREFIX")
os.makedirs("/tmp/python")
subprocess.run(["mount", "--bind", prefix, "/tmp/python"], check=True)
subprocess.run(["mount", "-o", "remount,bind,ro", "/tmp/python"], check=True)
python = os.path.join("/tmp/python", "bin", os.environ.pop("SANDBOX_PYTHON_NAME"))
work = "/tmp/sandbox"
os.makedirs(work)
with open(os.path.join(work, "program.py"), "w") as f:
    f.write(sys.stdin.read())
os.chown(work, 65534, 65534)
os.chdir(work)
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
nproc = int(os.environ.pop("SANDBOX_NPROC"))
resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
os.execve(python, [python, "-I", "program.py"],
          {"HOME": work, "TMPDIR": work, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
"""
)


@dataclasses.dataclass(frozen=True)
class Limits:
  wall_seconds: float = 10.0
  cpu_seconds: int = 10
  memory_bytes: int = 2 << 30
  file_bytes: int = 16 << 20
  processes: int = 64


@dataclasses.dataclass
class Result:
  status: str  # passed | failed | timeout
  returncode: int | None
  output: str  # the tail of stdout and stderr

  @property
  def passed(self) -> bool:
    return self.status == "passed"


@functools.lru_cache(maxsize=1)
def namespaces_available() -> bool:
  """Whether `unshare` can make network, mount and PID namespaces here (needs root on Linux)."""
  if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mount"):
    return False
  try:
    probe = subprocess.run(
      ["unshare", "--net", "--mount", "--pid", "--fork", "--", "true"], capture_output=True, timeout=20
    )
  except (OSError, subprocess.TimeoutExpired):
    return False
  return probe.returncode == 0


def _user_processes() -> int:
  """Processes this user already runs (RLIMIT_NPROC counts them all)."""
  try:
    uid = os.geteuid()
    return sum(1 for pid in os.listdir("/proc") if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == uid)
  except OSError:
    return 0


def _limit_env(limits: Limits) -> dict:
  # Limits are set by the launcher itself (no preexec_fn: forking a multithreaded JAX process
  # and running Python before exec can deadlock).
  return {
    "SANDBOX_AS": str(limits.memory_bytes),
    "SANDBOX_CPU": str(limits.cpu_seconds),
    "SANDBOX_FSIZE": str(limits.file_bytes),
    "SANDBOX_CORE": "0",
  }


def run_program(program: str, limits: Limits = Limits()) -> Result:
  """Runs `program` (Python source) in the sandbox; passed means exit code 0 within the limits."""
  workdir = None
  if namespaces_available():
    command = [
      "unshare",
      "--net",
      "--mount",
      "--pid",
      "--fork",
      "--kill-child",
      "--",
      sys.executable,
      "-I",
      "-c",
      _LAUNCHER,
    ]
    env = {
      "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
      "SANDBOX_NPROC": str(limits.processes),
      "SANDBOX_PYTHON_PREFIX": sys.base_prefix,
      "SANDBOX_PYTHON_NAME": f"python{sys.version_info.major}.{sys.version_info.minor}",
    }
    stdin = program
  else:
    workdir = tempfile.mkdtemp(prefix="jaxformer-sandbox-")
    with open(os.path.join(workdir, "program.py"), "w") as f:
      f.write(program)
    command = [sys.executable, "-I", "-c", _FALLBACK]
    env = {
      "HOME": workdir,
      "TMPDIR": workdir,
      "PATH": "/usr/bin:/bin",
      "LANG": "C.UTF-8",
      "SANDBOX_NPROC": str(max(limits.processes, _user_processes() + limits.processes)),
    }
    stdin = ""
  process = subprocess.Popen(
    command,
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    cwd=workdir or "/",
    env={**env, **_limit_env(limits)},
    start_new_session=True,
    text=True,
    errors="replace",
  )
  try:
    output, _ = process.communicate(stdin, timeout=limits.wall_seconds)
    status = "passed" if process.returncode == 0 else "failed"
  except subprocess.TimeoutExpired:
    status = "timeout"
    output = ""
  finally:
    try:
      os.killpg(process.pid, signal.SIGKILL)  # the whole group, whatever it left running
    except ProcessLookupError:
      pass
    process.wait()
    if workdir:
      shutil.rmtree(workdir, ignore_errors=True)
  return Result(status, process.returncode, (output or "")[-2000:])


def run_many(programs: list[str], limits: Limits = Limits(), workers: int | None = None) -> list[Result]:
  """run_program over many programs, in parallel over the cores; results in input order."""
  with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
    return list(pool.map(lambda p: run_program(p, limits), programs))


def describe() -> str:
  return json.dumps({"namespaces": namespaces_available(), "uid": os.geteuid()})
