"""Runs untrusted Python (generated code and its tests) so it cannot harm the machine.

A program passes only if its code ran to its end (for HumanEval: through `check(entry_point)`)
within the time limit. A runner inside the sandbox reads a random marker from an inherited pipe
(then closes it; the marker is never in the program's file or environment), runs the program's
source with exec, and writes the marker to stdout only after that code returned: any exception,
SystemExit included (`sys.exit(0)`, `exit()`, `quit()`), fails, and so does `os._exit(0)`, since the
marker is never written. The time limit (`Limits.wall_seconds`, 3 s by default as in HumanEval's
own scorer) counts the program's run alone: the runner starts an interval timer (SIGALRM, default
action: the program dies) just before the program's code runs. An outer wall-clock backstop of
`wall_seconds + STARTUP_SECONDS` kills the whole sandbox whatever the program does with SIGALRM.

Where `unshare` works (Linux, root), each program runs in new network, mount, PID, IPC and UTS
namespaces:
- no network at all (only a down loopback), and System V IPC objects that vanish with the sandbox;
- a minimal root, read-only, built on a tmpfs and entered with chroot: /usr, /bin, /lib, /lib64
  and the Python installation (at its own path, even under /root) bind-mounted read-only and
  nosuid; /etc holding only ld.so.cache and localtime; /dev holding null, zero, random, urandom;
  a /proc of the sandbox's own PID namespace (it lists only the sandbox's processes); a private
  writable tmpfs (64 MiB, noexec) for /tmp and the work dir /tmp/sandbox (HOME and TMPDIR).
  Nothing of the host's /run, /var, /home, /root, /work or /sys is visible, so nothing lasting can
  be written anywhere;
- the program runs as `nobody` (no supplementary groups, no_new_privs), so it cannot regain root;
- every process it started dies with it (the namespace's init is the sandbox's launcher).

Limits on the whole sandbox (`limits_mechanism()`; `describe()` says which applies here):
- "cgroup2": a cgroup v2 hierarchy with the memory and pids controllers that this process may
  delegate (its own cgroup, or the hierarchy's root): one child cgroup per program caps the memory
  of all its processes together (memory.max, swap 0) and their count (pids.max);
- "cgroup1": the same with writable cgroup v1 memory and pids hierarchies (memory.limit_in_bytes,
  memory.memsw.limit_in_bytes where swap is accounted, pids.max). The cgroups nest under this
  process's own cgroup where it can, so limits placed on the eval job still apply. The launcher
  joins them before it forks anything; they are removed after the program, killing what remains;
- "rlimit" (not root, or no cgroup to write): per-process limits only: RLIMIT_AS caps each process
  at `memory_bytes`, and RLIMIT_NPROC allows min(`processes`, FALLBACK_PROCESSES) more processes of
  the user, so the sandbox uses at most that many times `memory_bytes`. RLIMIT_NPROC counts every
  process of the user (concurrent sandboxes share it), and root ignores it.
Each process also has RLIMIT_AS (a single huge allocation raises MemoryError), RLIMIT_CPU,
RLIMIT_FSIZE and no core files, whatever the mechanism.

What it does not isolate: it is not a VM or seccomp jail (the kernel is shared), and a program
that deliberately searches its own process memory for the marker can forge a pass. Without
unshare (not root, or not Linux) only the limits, the process group, the marker and a private
directory apply: network access, reading the host's files and writes to world-writable paths
remain possible; run evals of untrusted models in a container then.
"""

import dataclasses
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor

from jaxformer.errors import UserError
from jaxformer.evals import cgroups

NOBODY = 65534
_HERE = os.path.dirname(os.path.abspath(__file__))


@functools.cache
def _source(name: str) -> str:
  """The text of sandbox_runner.py or sandbox_launch.py, which run inside the sandbox as `python -c`."""
  with open(os.path.join(_HERE, f"{name}.py"), encoding="utf-8") as f:
    return f.read()


# Seconds the outer backstop allows, beyond the program's own time, for the sandbox to start.
STARTUP_SECONDS = 15.0
# Processes allowed without a pids cgroup: bounds the sandbox's memory to this many RLIMIT_AS.
FALLBACK_PROCESSES = 8
# New network, mount, PID, System V IPC (its shared memory and queues die with it) and hostname namespaces.
_NAMESPACES = ("--net", "--mount", "--pid", "--ipc", "--uts")
# Exit statuses that mean the program ran out of time (SIGALRM: wall clock; SIGXCPU: CPU time;
# the launcher reports a signal as 128 + its number; 124: the runner saw the deadline pass).
_TIMEOUT_CODES = {124} | {code for s in (signal.SIGALRM, signal.SIGXCPU) for code in (-s, 128 + s)}


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one program may use.

  wall_seconds: the program's own run time (3 s, as HumanEval's scorer), not counting the
    sandbox's start-up; `jaxformer eval humaneval --timeout` sets it, and during-training evals
    use CodeEvalConfig.timeout.
  cpu_seconds: CPU time of each process (RLIMIT_CPU; start-up included).
  memory_bytes: memory of all the sandbox's processes together (with a cgroup), and of each process.
  file_bytes: the largest file it may write (its output included).
  processes: how many processes it may run at once (with a pids cgroup; see FALLBACK_PROCESSES).
  """

  wall_seconds: float = 3.0
  cpu_seconds: int = 4
  memory_bytes: int = 2 << 30
  file_bytes: int = 16 << 20
  processes: int = 64


@dataclasses.dataclass
class Result:
  status: str  # passed | failed | timeout
  returncode: int | None
  output: str  # the tail of stdout and stderr, without the pass marker

  @property
  def passed(self) -> bool:
    return self.status == "passed"


@functools.lru_cache(maxsize=1)
def namespaces_available() -> bool:
  """Whether `unshare` can make the sandbox's namespaces here (needs root on Linux)."""
  if os.geteuid() != 0 or not shutil.which("unshare"):
    return False
  try:
    probe = subprocess.run(["unshare", *_NAMESPACES, "--fork", "--", "true"], capture_output=True, timeout=20)
  except (OSError, subprocess.TimeoutExpired):
    return False
  return probe.returncode == 0


def limits_mechanism() -> str:
  """What bounds the whole sandbox here: cgroup2 | cgroup1 | rlimit (see the module docstring)."""
  return cgroups.mechanism()


def _user_processes(uid: int) -> int:
  """Processes `uid` already runs (RLIMIT_NPROC counts them all)."""
  try:
    return sum(1 for pid in os.listdir("/proc") if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == uid)
  except OSError:
    return 0


class SandboxRefused(UserError):
  """Untrusted code would run as root with nothing but rlimits around it."""


def check_usable() -> None:
  """Raises SandboxRefused where the sandbox would run programs as root without namespaces: root can
  write anywhere, read every file and reach every socket, which the rlimits of the fallback do not stop."""
  if not namespaces_available() and os.geteuid() == 0:
    raise SandboxRefused(
      "the sandbox cannot make namespaces here (unshare is missing or refused), and it never runs untrusted "
      "code as root without them: run the eval as an unprivileged user (rlimits only; network and readable "
      "files stay reachable), or where `unshare --net --mount --pid --ipc --uts --fork true` works as root"
    )


def isolation() -> str:
  """One line for every report: what keeps a program from the host here."""
  if namespaces_available():
    return f"namespaces (no network, read-only root, uid nobody), limits {limits_mechanism()}"
  return f"no namespaces (uid {os.geteuid()}): limits {limits_mechanism()} only; network and readable files reachable"


def run_program(program: str, limits: Limits = Limits(), _root_fallback_for_tests: bool = False) -> Result:
  """Runs `program` (Python source) in the sandbox.

  Returns Result: passed if the program's code ran to its end within `limits.wall_seconds` of run
  time (exit codes do not count), timeout if it ran out of time, else failed. Raises SandboxRefused
  (check_usable) as root without namespaces; _root_fallback_for_tests runs the fallback anyway, for
  this machine's tests of its limits only (its Python lives where an unprivileged user cannot run it).
  """
  if not _root_fallback_for_tests:
    check_usable()
  mechanism, bases = cgroups.bases()
  # Limits are set by the launcher itself (no preexec_fn: forking a multithreaded JAX process
  # and running Python before exec can deadlock).
  env = {
    "SANDBOX_AS": str(limits.memory_bytes),
    "SANDBOX_CPU": str(limits.cpu_seconds),
    "SANDBOX_FSIZE": str(limits.file_bytes),
    "SANDBOX_CORE": "0",
    "SANDBOX_NPROC": "",
    "SANDBOX_SECONDS": repr(float(limits.wall_seconds)),
  }
  fallback_processes = min(limits.processes, FALLBACK_PROCESSES)
  marker = secrets.token_hex(16).encode()
  workdir = None
  groups = []
  timed_out = False
  with tempfile.TemporaryFile() as source, tempfile.TemporaryFile() as out:
    read_fd, write_fd = os.pipe()
    try:
      os.write(write_fd, marker)
      os.close(write_fd)
      groups = cgroups.make(bases, limits)
      if namespaces_available():
        source.write(program.encode("utf-8", errors="replace"))
        source.seek(0)
        command = ["unshare", *_NAMESPACES, "--fork", "--kill-child", "--"]
        command += [sys.executable, "-I", "-S", "-c", _source("sandbox_launch"), "namespaces"]
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        env["SANDBOX_PYTHON_PREFIX"] = sys.base_prefix
        env["SANDBOX_PYTHON"] = os.path.join(sys.base_prefix, "bin", version)
        if mechanism == "rlimit":
          env["SANDBOX_NPROC"] = str(_user_processes(NOBODY) + fallback_processes)
      else:
        workdir = tempfile.mkdtemp(prefix="jaxformer-sandbox-")
        with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8", errors="replace") as f:
          f.write(program)
        command = [sys.executable, "-I", "-c", _source("sandbox_launch"), "fallback"]
        env.update(HOME=workdir, TMPDIR=workdir, PATH="/usr/bin:/bin", LANG="C.UTF-8")
        if mechanism == "rlimit":
          env["SANDBOX_NPROC"] = str(max(fallback_processes, _user_processes(os.geteuid()) + fallback_processes))
      env["SANDBOX_CGROUPS"] = ":".join(groups)
      env["SANDBOX_RUNNER"] = _source("sandbox_runner")
      env["SANDBOX_FD"] = str(read_fd)
      process = subprocess.Popen(
        command,
        stdin=source,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=workdir or "/",
        env=env,
        start_new_session=True,
        pass_fds=(read_fd,),
      )
      os.close(read_fd)
      read_fd = None
      try:
        process.wait(timeout=limits.wall_seconds + STARTUP_SECONDS)
      except subprocess.TimeoutExpired:
        timed_out = True
      finally:
        try:
          os.killpg(process.pid, signal.SIGKILL)  # the whole group, whatever it left running
        except ProcessLookupError:
          pass
        process.wait()
    finally:
      if read_fd is not None:
        os.close(read_fd)
      try:
        cgroups.remove(groups)
      except OSError as e:  # a process stuck in the kernel: leave its cgroup rather than fail the eval
        warnings.warn(f"sandbox: could not remove a cgroup: {e}", stacklevel=2)
      if workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    out.seek(0)
    data = out.read()
  passed = marker in data
  output = data.replace(b"\n" + marker + b"\n", b"").replace(marker, b"").decode("utf-8", errors="replace")
  if passed:
    status = "passed"
  elif timed_out or process.returncode in _TIMEOUT_CODES:
    status = "timeout"
  else:
    status = "failed"
    if process.returncode == 0:  # os._exit(0) or the like: nothing else would say why it failed
      output += "\nsandbox: the program exited before its code ran to its end\n"
  return Result(status, process.returncode, output[-2000:])


def run_many(programs: list[str], limits: Limits = Limits(), workers: int | None = None) -> list[Result]:
  """run_program over many programs, in parallel over the cores; results in input order."""
  check_usable()
  with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
    return list(pool.map(lambda p: run_program(p, limits), programs))


def describe() -> str:
  """JSON: whether namespaces isolate the program, what limits the whole sandbox, and the cgroup bases."""
  mechanism, bases = cgroups.bases()
  return json.dumps(
    {
      "namespaces": namespaces_available(),
      "limits": mechanism,
      "cgroups": [base for _, base in bases],
      "uid": os.geteuid(),
    }
  )
