"""Cgroups that bound a whole sandbox (memory and process count of all its processes together):
cgroup v2 where this process can delegate memory and pids, else cgroup v1 memory + pids hierarchies,
else none (the sandbox then falls back to per-process rlimits). `limits` below is any object with
memory_bytes and processes (sandbox.Limits)."""

import functools
import os
import secrets
import signal
import time
import types

PREFIX = "jaxformer-sandbox-"
# What the probe cgroup is limited to when checking that cgroups can be made here.
_PROBE = types.SimpleNamespace(memory_bytes=64 << 20, processes=8)


def _read(path: str) -> str:
  with open(path) as f:
    return f.read()


def _write(path: str, value) -> None:
  with open(path, "w") as f:
    f.write(str(value))


def _settings(kind: str, limits) -> list[tuple[str, int, bool]]:
  """(file, value, required) to write in a new cgroup of `kind` (cgroup2, memory or pids)."""
  memory, pids = limits.memory_bytes, limits.processes
  return {
    "cgroup2": [("memory.max", memory, True), ("memory.swap.max", 0, False), ("pids.max", pids, True)],
    # memsw (memory + swap) exists only where swap is accounted; equal to the limit means no swap.
    "memory": [("memory.limit_in_bytes", memory, True), ("memory.memsw.limit_in_bytes", memory, False)],
    "pids": [("pids.max", pids, True)],
  }[kind]


def make(bases: tuple[tuple[str, str], ...], limits) -> list[str]:
  """Makes one child cgroup under each (kind, base folder) with `limits`; returns their folders."""
  name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
  paths = []
  try:
    for kind, base in bases:
      path = os.path.join(base, name)
      os.mkdir(path)
      paths.append(path)
      for file, value, required in _settings(kind, limits):
        if required or os.path.exists(os.path.join(path, file)):
          _write(os.path.join(path, file), value)
  except OSError:
    remove(paths)
    raise
  return paths


def remove(paths: list[str], patience: float = 5.0) -> None:
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
def bases() -> tuple[str, tuple[tuple[str, str], ...]]:
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
      remove(make(bases, _PROBE))
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


def mechanism() -> str:
  """What bounds the whole sandbox here: cgroup2 | cgroup1 | rlimit (see the module docstring)."""
  return bases()[0]
