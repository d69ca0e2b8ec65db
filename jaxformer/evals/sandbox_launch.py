"""The sandbox's launchers: join the cgroups, set the rlimits, then start the runner (sandbox_runner.py).

`namespaces`: PID 1 of the new namespaces, as root: builds a read-only root on a tmpfs, chroots into it,
forks the runner as nobody and waits for it (when it exits, the namespace and everything the program
started die with it). `fallback` (no namespaces): limits, then exec the runner in the current directory,
which holds the program.

The sandbox runs this file's source with `python -I -S -c SOURCE MODE` (jaxformer is not importable in
the sandbox's root), so it imports only the standard library; settings arrive in SANDBOX_* variables,
each removed from the environment before the program runs, the runner's own source among them.
"""

import ctypes
import os
import resource
import shutil
import sys
import traceback

NOBODY = 65534
RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, PRIVATE, REC = 1, 2, 4, 8, 32, 4096, 1 << 18, 16384
PR_SET_NO_NEW_PRIVS = 38


def join_cgroups(env) -> None:
  for path in filter(None, env.pop("SANDBOX_CGROUPS").split(":")):
    with open(os.path.join(path, "cgroup.procs"), "w") as f:
      f.write(str(os.getpid()))


def set_limits(values: dict) -> None:
  for name, value in values.items():
    if value:
      resource.setrlimit(getattr(resource, "RLIMIT_" + name), (int(value), int(value) + (name == "CPU")))


def fallback(env, limits, runner, marker_fd, seconds) -> None:
  """Without namespaces: limits, then exec the runner here (the program is already in the cwd)."""
  join_cgroups(env)
  set_limits(limits)
  os.execve(
    sys.executable,
    [sys.executable, "-I", "-c", runner, marker_fd, seconds],
    {k: env[k] for k in ("HOME", "TMPDIR", "PATH", "LANG")},
  )


class _Mounts:
  """mount(2) through libc, and the read-only root built under `root`."""

  def __init__(self, root: str):
    self.root = root
    self.libc = ctypes.CDLL(None, use_errno=True)
    self.libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]

  def mount(self, source, target, fstype, flags, data=None) -> None:
    names = [s.encode() if s else None for s in (source, target, fstype)]
    if self.libc.mount(*names, flags, data.encode() if data else None) != 0:
      errno = ctypes.get_errno()
      raise OSError(errno, f"mount {source} on {target}: {os.strerror(errno)}")

  def bind(self, path: str, read_only: bool = True) -> None:
    target = self.root + path
    if os.path.isdir(path):
      os.makedirs(target, exist_ok=True)
    else:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      open(target, "a").close()
    self.mount(path, target, None, BIND)
    if read_only:
      self.mount(None, target, None, REMOUNT | BIND | RDONLY | NOSUID | NODEV)


def _build_root(mounts: _Mounts, prefix: str, python: str, program: bytes, work: str) -> None:
  root = mounts.root
  os.umask(0o022)
  mounts.mount(None, "/", None, REC | PRIVATE)  # nothing below propagates to the host
  mounts.mount("tmpfs", root, "tmpfs", NOSUID | NODEV, "size=16m,mode=755")
  for path in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
    if os.path.islink(path):
      os.symlink(os.readlink(path), root + path)
    elif os.path.isdir(path):
      mounts.bind(path)
  if not os.path.exists(root + python):
    mounts.bind(prefix)
  os.makedirs(root + "/etc")
  for path in ("/etc/ld.so.cache", "/etc/localtime"):
    if os.path.islink(path):
      os.symlink(os.readlink(path), root + path)
    elif os.path.isfile(path):
      shutil.copyfile(path, root + path)
  for name in ("null", "zero", "random", "urandom"):
    mounts.bind("/dev/" + name, read_only=False)
  for name, target in (("fd", "/proc/self/fd"), ("stdin", "0"), ("stdout", "1"), ("stderr", "2")):
    os.symlink(target if "/" in target else "/proc/self/fd/" + target, root + "/dev/" + name)
  os.makedirs(root + "/proc")
  mounts.mount("proc", root + "/proc", "proc", NOSUID | NODEV | NOEXEC)
  os.makedirs(root + "/tmp")
  mounts.mount("tmpfs", root + "/tmp", "tmpfs", NOSUID | NODEV | NOEXEC, "size=64m,mode=1777")
  os.makedirs(root + work)
  with open(root + work + "/program.py", "wb") as f:
    f.write(program)
  os.chown(root + work, NOBODY, NOBODY)
  mounts.mount(None, root, None, REMOUNT | BIND | RDONLY | NOSUID | NODEV)


def namespaces(env, limits, runner, marker_fd, seconds) -> None:
  """PID 1 of the new namespaces (module docstring); exits with the runner's status."""
  join_cgroups(env)
  program = sys.stdin.buffer.read()
  prefix, python = env.pop("SANDBOX_PYTHON_PREFIX"), env.pop("SANDBOX_PYTHON")
  root = next(p for p in ("/tmp", "/mnt", "/srv") if os.path.isdir(p) and not prefix.startswith(p + "/"))
  mounts = _Mounts(root)
  work = "/tmp/sandbox"
  _build_root(mounts, prefix, python, program, work)
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
      if mounts.libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:  # setuid binaries cannot give root back
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
      set_limits(limits)
      os.execve(
        python,
        [python, "-I", "-c", runner, marker_fd, seconds],
        {"HOME": work, "TMPDIR": work, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
      )
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


def main() -> None:
  env = os.environ
  limits = {name: env.pop("SANDBOX_" + name) for name in ("AS", "CPU", "FSIZE", "CORE", "NPROC")}
  runner, marker_fd, seconds = env.pop("SANDBOX_RUNNER"), env.pop("SANDBOX_FD"), env.pop("SANDBOX_SECONDS")
  {"namespaces": namespaces, "fallback": fallback}[sys.argv[1]](env, limits, runner, marker_fd, seconds)


if __name__ == "__main__":
  main()
