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
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

NOBODY = 65534
# Seconds the outer backstop allows, beyond the program's own time, for the sandbox to start.
STARTUP_SECONDS = 15.0
# Processes allowed without a pids cgroup: bounds the sandbox's memory to this many RLIMIT_AS.
FALLBACK_PROCESSES = 8
_CGROUP_PREFIX = "jaxformer-sandbox-"
# New network, mount, PID, System V IPC (its shared memory and queues die with it) and hostname namespaces.
_NAMESPACES = ("--net", "--mount", "--pid", "--ipc", "--uts")
# Exit statuses that mean the program ran out of time (SIGALRM: wall clock; SIGXCPU: CPU time;
# the launcher reports a signal as 128 + its number; 124: the runner saw the deadline pass).
_TIMEOUT_CODES = {124} | {code for s in (signal.SIGALRM, signal.SIGXCPU) for code in (-s, 128 + s)}

# Runs the program in this process: argv is [fd of the marker pipe, seconds]; reads program.py
# from the working directory. Writes the marker to the original stdout only if the code returned.
_RUNNER = r"""
import os, signal, sys, time, traceback, types

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

main()
"""

# Shared by both launchers: the runner's source, joining the cgroups, setting the rlimits.
_COMMON = (
  r"""
import os, resource, sys
env = os.environ
"""
  + f"RUNNER = {_RUNNER!r}\n"
  + r"""
def join_cgroups():
  for path in filter(None, env.pop("SANDBOX_CGROUPS").split(":")):
    with open(os.path.join(path, "cgroup.procs"), "w") as f:
      f.write(str(os.getpid()))

def set_limits(values):
  for name, value in values.items():
    if value:
      resource.setrlimit(getattr(resource, "RLIMIT_" + name), (int(value), int(value) + (name == "CPU")))

limits = {name: env.pop("SANDBOX_" + name) for name in ("AS", "CPU", "FSIZE", "CORE", "NPROC")}
marker_fd, seconds = env.pop("SANDBOX_FD"), env.pop("SANDBOX_SECONDS")
"""
)

# Without namespaces: limits, then exec the runner here (the program is already in the cwd).
_FALLBACK = (
  _COMMON
  + r"""
join_cgroups()
set_limits(limits)
os.execve(sys.executable, [sys.executable, "-I", "-c", RUNNER, marker_fd, seconds],
          {k: env[k] for k in ("HOME", "TMPDIR", "PATH", "LANG")})
"""
)

# PID 1 of the new namespaces, as root: joins the cgroups, builds the read-only root on a tmpfs,
# chroots into it, forks the runner as nobody, and waits for it (when it exits, the namespace and
# everything the program started die with it).
_LAUNCHER = (
  _COMMON
  + r"""
import ctypes, shutil, traceback

join_cgroups()
program = sys.stdin.buffer.read()
prefix, python = env.pop("SANDBOX_PYTHON_PREFIX"), env.pop("SANDBOX_PYTHON")
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, PRIVATE, REC = 1, 2, 4, 8, 32, 4096, 1 << 18, 16384
NOBODY = 65534

def mount(source, target, fstype, flags, data=None):
  names = [s.encode() if s else None for s in (source, target, fstype)]
  if libc.mount(*names, flags, data.encode() if data else None) != 0:
    errno = ctypes.get_errno()
    raise OSError(errno, f"mount {source} on {target}: {os.strerror(errno)}")

def bind(path, read_only=True):
  target = root + path
  if os.path.isdir(path):
    os.makedirs(target, exist_ok=True)
  else:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    open(target, "a").close()
  mount(path, target, None, BIND)
  if read_only:
    mount(None, target, None, REMOUNT | BIND | RDONLY | NOSUID | NODEV)

os.umask(0o022)
mount(None, "/", None, REC | PRIVATE)  # nothing below propagates to the host
root = next(p for p in ("/tmp", "/mnt", "/srv") if os.path.isdir(p) and not prefix.startswith(p + "/"))
mount("tmpfs", root, "tmpfs", NOSUID | NODEV, "size=16m,mode=755")
for path in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
  if os.path.islink(path):
    os.symlink(os.readlink(path), root + path)
  elif os.path.isdir(path):
    bind(path)
if not os.path.exists(root + python):
  bind(prefix)
os.makedirs(root + "/etc")
for path in ("/etc/ld.so.cache", "/etc/localtime"):
  if os.path.islink(path):
    os.symlink(os.readlink(path), root + path)
  elif os.path.isfile(path):
    shutil.copyfile(path, root + path)
for name in ("null", "zero", "random", "urandom"):
  bind("/dev/" + name, read_only=False)
for name, target in (("fd", "/proc/self/fd"), ("stdin", "0"), ("stdout", "1"), ("stderr", "2")):
  os.symlink(target if "/" in target else "/proc/self/fd/" + target, root + "/dev/" + name)
os.makedirs(root + "/proc")
mount("proc", root + "/proc", "proc", NOSUID | NODEV | NOEXEC)
os.makedirs(root + "/tmp")
mount("tmpfs", root + "/tmp", "tmpfs", NOSUID | NODEV | NOEXEC, "size=64m,mode=1777")
work = "/tmp/sandbox"
os.makedirs(root + work)
with open(root + work + "/program.py", "wb") as f:
  f.write(program)
os.chown(root + work, NOBODY, NOBODY)
mount(None, root, None, REMOUNT | BIND | RDONLY | NOSUID | NODEV)
os.chroot(root)
os.chdir("/")
pid = os.fork()
if pid == 0:
  try:
    os.chdir(work)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS: setuid binaries cannot give root back
      raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    set_limits(limits)
    os.execve(python, [python, "-I", "-c", RUNNER, marker_fd, seconds],
              {"HOME": work, "TMPDIR": work, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
  except BaseException:
    traceback.print_exc()
    os._exit(127)
os.close(int(marker_fd))
while True:  # as PID 1, also reaps the program's orphans
  done, status = os.wait()
  if done == pid:
    break
code = os.waitstatus_to_exitcode(status)
os._exit(code if code >= 0 else 128 - code)
"""
)


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


def _read(path: str) -> str:
  with open(path) as f:
    return f.read()


def _write(path: str, value) -> None:
  with open(path, "w") as f:
    f.write(str(value))


def _cgroup_settings(kind: str, limits: Limits) -> list[tuple[str, int, bool]]:
  """(file, value, required) to write in a new cgroup of `kind` (cgroup2, memory or pids)."""
  memory, pids = limits.memory_bytes, limits.processes
  return {
    "cgroup2": [("memory.max", memory, True), ("memory.swap.max", 0, False), ("pids.max", pids, True)],
    # memsw (memory + swap) exists only where swap is accounted; equal to the limit means no swap.
    "memory": [("memory.limit_in_bytes", memory, True), ("memory.memsw.limit_in_bytes", memory, False)],
    "pids": [("pids.max", pids, True)],
  }[kind]


def _make_cgroups(bases: tuple[tuple[str, str], ...], limits: Limits) -> list[str]:
  """Makes one child cgroup under each (kind, base folder) with `limits`; returns their folders."""
  name = f"{_CGROUP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
  paths = []
  try:
    for kind, base in bases:
      path = os.path.join(base, name)
      os.mkdir(path)
      paths.append(path)
      for file, value, required in _cgroup_settings(kind, limits):
        if required or os.path.exists(os.path.join(path, file)):
          _write(os.path.join(path, file), value)
  except OSError:
    _remove_cgroups(paths)
    raise
  return paths


def _remove_cgroups(paths: list[str], patience: float = 5.0) -> None:
  """Kills every process left in the cgroups at `paths`, then removes them."""
  deadline = time.monotonic() + patience
  for path in paths:
    while True:
      try:
        os.rmdir(path)
        break
      except FileNotFoundError:
        break
      except OSError:
        if time.monotonic() > deadline:
          raise
      try:
        if os.path.exists(os.path.join(path, "cgroup.kill")):
          _write(os.path.join(path, "cgroup.kill"), 1)
        for pid in _read(os.path.join(path, "cgroup.procs")).split():
          try:
            os.kill(int(pid), signal.SIGKILL)
          except ProcessLookupError:
            pass
      except FileNotFoundError:
        pass
      time.sleep(0.01)


@functools.lru_cache(maxsize=1)
def _cgroup_bases() -> tuple[str, tuple[tuple[str, str], ...]]:
  """(mechanism, ((kind, base folder), ...)): where this process can make cgroups limiting memory and pids.

  Tries cgroup v2, then cgroup v1 memory + pids; each under this process's own cgroup first, then
  at the hierarchy's root. ("rlimit", ()) when none can be made and limited here.
  """
  try:
    mounts = [line.split()[1:4] for line in _read("/proc/self/mounts").splitlines()]
    own = {}
    for line in _read("/proc/self/cgroup").splitlines():
      number, controllers, path = line.split(":", 2)
      for controller in ["cgroup2"] if number == "0" else controllers.split(","):
        own[controller] = path
  except OSError:
    return "rlimit", ()

  def candidates(mountpoint, controller):
    nested = os.path.normpath(os.path.join(mountpoint, own.get(controller, "/").lstrip("/")))
    return list(dict.fromkeys([nested, mountpoint]))

  def works(bases):
    try:
      _remove_cgroups(_make_cgroups(bases, Limits()))
      return True
    except OSError:
      return False

  for mountpoint, fstype, _ in mounts:
    if fstype != "cgroup2":
      continue
    try:
      if not {"memory", "pids"} <= set(_read(os.path.join(mountpoint, "cgroup.controllers")).split()):
        continue
    except OSError:
      continue
    for base in candidates(mountpoint, "cgroup2"):
      try:
        if not {"memory", "pids"} <= set(_read(os.path.join(base, "cgroup.subtree_control")).split()):
          _write(os.path.join(base, "cgroup.subtree_control"), "+memory +pids")
      except OSError:
        continue  # e.g. a cgroup that holds processes cannot delegate controllers
      if works((("cgroup2", base),)):
        return "cgroup2", (("cgroup2", base),)
  v1 = {}
  for controller in ("memory", "pids"):
    for mountpoint, fstype, options in mounts:
      if fstype == "cgroup" and controller in options.split(","):
        v1[controller] = [base for base in candidates(mountpoint, controller) if os.path.isdir(base)]
  if len(v1) == 2:
    for memory in v1["memory"]:
      for pids in v1["pids"]:
        if works((("memory", memory), ("pids", pids))):
          return "cgroup1", (("memory", memory), ("pids", pids))
  return "rlimit", ()


def limits_mechanism() -> str:
  """What bounds the whole sandbox here: cgroup2 | cgroup1 | rlimit (see the module docstring)."""
  return _cgroup_bases()[0]


def _user_processes(uid: int) -> int:
  """Processes `uid` already runs (RLIMIT_NPROC counts them all)."""
  try:
    return sum(1 for pid in os.listdir("/proc") if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == uid)
  except OSError:
    return 0


def run_program(program: str, limits: Limits = Limits()) -> Result:
  """Runs `program` (Python source) in the sandbox.

  Returns Result: passed if the program's code ran to its end within `limits.wall_seconds` of run
  time (exit codes do not count), timeout if it ran out of time, else failed.
  """
  mechanism, bases = _cgroup_bases()
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
  cgroups = []
  timed_out = False
  with tempfile.TemporaryFile() as source, tempfile.TemporaryFile() as out:
    read_fd, write_fd = os.pipe()
    try:
      os.write(write_fd, marker)
      os.close(write_fd)
      cgroups = _make_cgroups(bases, limits)
      if namespaces_available():
        source.write(program.encode("utf-8", errors="replace"))
        source.seek(0)
        command = ["unshare", *_NAMESPACES, "--fork", "--kill-child", "--"]
        command += [sys.executable, "-I", "-S", "-c", _LAUNCHER]
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        env["SANDBOX_PYTHON_PREFIX"] = sys.base_prefix
        env["SANDBOX_PYTHON"] = os.path.join(sys.base_prefix, "bin", version)
        if mechanism == "rlimit":
          env["SANDBOX_NPROC"] = str(_user_processes(NOBODY) + fallback_processes)
      else:
        workdir = tempfile.mkdtemp(prefix="jaxformer-sandbox-")
        with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8", errors="replace") as f:
          f.write(program)
        command = [sys.executable, "-I", "-c", _FALLBACK]
        env.update(HOME=workdir, TMPDIR=workdir, PATH="/usr/bin:/bin", LANG="C.UTF-8")
        if mechanism == "rlimit":
          env["SANDBOX_NPROC"] = str(max(fallback_processes, _user_processes(os.geteuid()) + fallback_processes))
      env["SANDBOX_CGROUPS"] = ":".join(cgroups)
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
        _remove_cgroups(cgroups)
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
  with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
    return list(pool.map(lambda p: run_program(p, limits), programs))


def describe() -> str:
  """JSON: whether namespaces isolate the program, what limits the whole sandbox, and the cgroup bases."""
  mechanism, bases = _cgroup_bases()
  return json.dumps(
    {
      "namespaces": namespaces_available(),
      "limits": mechanism,
      "cgroups": [base for _, base in bases],
      "uid": os.geteuid(),
    }
  )
