"""The Python source the sandbox runs: the runner (executes the program and writes the pass marker
only when its code returned), and the launchers that join the cgroups, set the rlimits, build the
read-only root in the new namespaces (as root) or apply the fallback limits, then start the runner.
Kept apart from sandbox.py, which decides how to call them."""

# Runs the program in this process: argv is [fd of the marker pipe, seconds]; reads program.py
# from the working directory. Writes the marker to the original stdout only if the code returned.
RUNNER = r"""
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
COMMON = (
  r"""
import os, resource, sys
env = os.environ
"""
  + f"RUNNER = {RUNNER!r}\n"
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
FALLBACK = (
  COMMON
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
LAUNCHER = (
  COMMON
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
