"""The sandbox against hostile completions: host files, /proc, early exits, whole-sandbox memory, timing."""

import ctypes
import glob
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from jaxformer.evals import cgroups, humaneval, sandbox

TASK = "HumanEval/0"


def machine_has_namespaces() -> bool:
  """Probed apart from the sandbox's own detection, so that a broken detection fails rather than skips."""
  if os.geteuid() != 0 or not shutil.which("unshare"):
    return False
  return subprocess.run(["unshare", "--net", "--mount", "--pid", "--fork", "--", "true"]).returncode == 0


def machine_has_cgroups() -> bool:
  """Root with rw cgroup v1 memory and pids hierarchies, or a cgroup v2 root (ours) offering both."""
  if os.geteuid() != 0:
    return False
  with open("/proc/self/mounts") as f:
    mounts = [line.split()[2:4] for line in f]
  v1 = [
    c
    for fstype, options in mounts
    if fstype == "cgroup" and "rw" in options.split(",")
    for c in ("memory", "pids")
    if c in options.split(",")
  ]
  try:
    with open("/sys/fs/cgroup/cgroup.controllers") as f, open("/proc/self/cgroup") as g:
      v2 = {"memory", "pids"} <= set(f.read().split()) and "0::/\n" in g.read()
  except OSError:
    v2 = False
  return v2 or {"memory", "pids"} <= set(v1)


needs_namespaces = pytest.mark.skipif(not machine_has_namespaces(), reason="unshare needs root on Linux")
needs_cgroups = pytest.mark.skipif(not machine_has_cgroups(), reason="no writable memory and pids cgroups")


@pytest.fixture(scope="session")
def problems():
  return humaneval.read_problems()


def score(problems, completions, limits=sandbox.Limits()):
  """Per-completion scored rows for TASK's completions."""
  scored, _ = humaneval.score([{"task_id": TASK, "completion": c} for c in completions], problems, (1,), limits)
  return scored


@needs_namespaces
def test_namespaces_and_cgroups_are_used_where_the_machine_has_them():
  assert sandbox.namespaces_available()
  assert sandbox.limits_mechanism() != "rlimit" or not machine_has_cgroups()


@needs_namespaces
def test_writes_to_shared_world_writable_places_do_not_reach_the_host(problems):
  good = problems[TASK]["canonical_solution"]
  names = {place: f"{place}/jaxformer-escape-{uuid.uuid4().hex}" for place in ("/run/lock", "/var/tmp", "/dev/shm")}
  private = f"/tmp/jaxformer-private-{uuid.uuid4().hex}"
  completions = [f"    open({path!r}, 'w').write('x')\n" + good for path in names.values()]
  completions.append(f"    open({private!r}, 'w').write('x')\n" + good)  # /tmp is private and writable
  scored = score(problems, completions)
  assert [s["passed"] for s in scored] == [False] * len(names) + [True]
  assert not any(os.path.exists(path) for path in [*names.values(), private])


@needs_namespaces
def test_the_host_is_invisible_and_the_root_is_read_only():
  here = os.path.dirname(os.path.abspath(__file__))
  program = (
    "import os\n"
    f"for path in ['/run', '/var', '/home', '/sys', '/work', '/root/.bashrc', {here!r}]:\n"
    "  print('visible', path, os.path.exists(path))\n"
    "for path in ['/escape', '/usr/escape', '/etc/escape', os.getcwd() + '/ok']:\n"
    "  try:\n"
    "    open(path, 'w').close()\n"
    "    print('wrote', path)\n"
    "  except OSError as e:\n"
    "    print('refused', path, e.errno)\n"
    "print('uid', os.getuid(), os.getgid(), os.getgroups())\n"
  )
  result = sandbox.run_program(program)
  assert result.passed, result.output
  assert "visible" in result.output and " True" not in result.output
  assert re.findall(r"wrote (\S+)", result.output) == ["/tmp/sandbox/ok"]
  assert "uid 65534 65534 []" in result.output


@needs_namespaces
def test_system_v_shared_memory_stays_in_the_sandbox():
  key = int(uuid.uuid4().hex[:7], 16)
  # ctypes is refused to the program (it could call libc's _exit(0)); shared memory needs it, so neither the
  # segment nor a way to make one reaches the host (the IPC namespace stays as a second wall).
  program = f"import ctypes\nprint('shmid', ctypes.CDLL(None).shmget({key}, 4096, 0o1666))\n"  # IPC_CREAT | 0o666
  result = sandbox.run_program(program)
  libc = ctypes.CDLL(None)
  leaked = libc.shmget(key, 0, 0)
  if leaked >= 0:
    libc.shmctl(leaked, 0, None)  # IPC_RMID: leave the host as it was
  assert not result.passed and "import of ctypes is refused" in result.output, result.output
  assert leaked == -1


@needs_namespaces
def test_proc_lists_only_the_sandboxs_own_processes(problems):
  assert sum(name.isdigit() for name in os.listdir("/proc")) > 3  # the host's (this test's own included)
  completion = (
    "    import os\n"
    "    pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
    "    lines = []\n"
    "    for p in pids:\n"
    "        try:\n"
    "            lines.append(open(f'/proc/{p}/cmdline', 'rb').read().replace(b'\\0', b' ')[:60])\n"
    "        except OSError:\n"
    "            pass\n"
    "    print('processes', len(pids), lines)\n"
    "    assert len(pids) < 10\n"
  ) + problems[TASK]["canonical_solution"]
  result = sandbox.run_program(humaneval.program(problems[TASK], completion))
  assert result.passed, result.output
  assert all(int(n) < 10 for n in re.findall(r"processes (\d+)", result.output))
  assert "pytest" not in result.output  # this test's own command line is not among them


def exits(problems):
  """Completions of TASK that exit before its tests finish: at import and inside the function."""
  good = problems[TASK]["canonical_solution"]
  calls = {
    "sys.exit": "import sys; sys.exit(0)",
    "exit": "exit(0)",
    "quit": "quit()",
    "os._exit": "import os; os._exit(0)",
  }
  completions = {}
  for name, call in calls.items():
    completions[name + " in the body"] = f"    {call}\n" + good
    completions[name + " at import"] = good + f"\n\n{call}\n"
  return completions


@needs_namespaces
def test_exiting_early_fails_and_the_canonical_solution_passes(problems):
  completions = exits(problems)
  scored = score(problems, [*completions.values(), problems[TASK]["canonical_solution"]])
  assert {name: s["passed"] for name, s in zip(completions, scored)} == dict.fromkeys(completions, False)
  assert scored[-1]["passed"] and scored[-1]["status"] == "passed"


def test_exiting_early_fails_without_namespaces_too(problems, monkeypatch):
  monkeypatch.setattr(sandbox, "namespaces_available", lambda: False)
  completions = [*exits(problems).values(), problems[TASK]["canonical_solution"]]
  # (as root the sandbox refuses to run without namespaces; the fallback is run here for this test only)
  results = [
    sandbox.run_program(humaneval.program(problems[TASK], c), _root_fallback_for_tests=True) for c in completions
  ]
  assert [r.passed for r in results] == [False] * (len(completions) - 1) + [True]


# Four children each touch CHILD bytes and hold them until every one is either full or dead. The parent
# counts how many were full and alive at the same moment (a child the OOM killer took after it reported
# no longer counts), and how many died. (The review's 4 x 1 GiB against 2 GiB, scaled down 4 times:
# first-touching memory is slow on this machine.)
LIMIT, CHILD = 512 << 20, 320 << 20
MEMORY_HOG = f"""
import os, time
CHILD = {CHILD}
report_r, report_w = os.pipe()
release_r, release_w = os.pipe()
for i in range(4):
  if os.fork() == 0:
    try:
      os.close(release_w)  # so that the parent closing its end releases this child
      block = bytearray(CHILD)
      block[::4096] = b"\\1" * (CHILD // 4096)
      os.write(report_w, os.getpid().to_bytes(8, "little"))  # 8 bytes: one atomic pipe write
      os.read(release_r, 1)  # holds the memory until the parent lets go
    finally:
      os._exit(0)
os.close(report_w)
os.set_blocking(report_r, False)
full, most, dead, deadline = set(), 0, 0, time.monotonic() + 15
while len(full) + dead < 4 and time.monotonic() < deadline:
  try:
    got = os.read(report_r, 64)
  except BlockingIOError:
    got = b""
  for at in range(0, len(got), 8):
    full.add(int.from_bytes(got[at : at + 8], "little"))
  while dead < 4:  # reaped after reading, so a child killed before another filled is gone by now
    pid, status = os.waitpid(-1, os.WNOHANG)
    if not pid:
      break
    full.discard(pid)
    dead += 1
  most = max(most, len(full))
  time.sleep(0.01)
os.close(release_w)
for _ in range(4 - dead):
  os.wait()
print("children full at once:", most, "children dead before:", dead)
assert most == 4
"""


@needs_cgroups
def test_memory_is_limited_for_all_processes_together():
  start = time.time()
  result = sandbox.run_program(MEMORY_HOG, sandbox.Limits(wall_seconds=20, memory_bytes=LIMIT))
  assert not result.passed
  held = re.search(r"children full at once: (\d+) children dead before: (\d+)", result.output)
  assert held, result.output  # the parent itself survived to count
  assert 2 * CHILD > LIMIT and int(held[1]) <= 1 and int(held[2]) >= 3  # the OOM killer took the others
  assert time.time() - start < 20
  described = json.loads(sandbox.describe())
  assert described["limits"] == sandbox.limits_mechanism() != "rlimit"
  leftovers = [glob.glob(os.path.join(base, f"{cgroups.PREFIX}{os.getpid()}-*")) for base in described["cgroups"]]
  assert leftovers == [[]] * len(described["cgroups"])


def test_the_time_limit_counts_the_programs_run_time_alone():
  def run(seconds, limit):
    start = time.monotonic()
    result = sandbox.run_program(f"import time\ntime.sleep({seconds})\n", sandbox.Limits(wall_seconds=limit))
    return result, time.monotonic() - start

  # The sandbox's own start-up and teardown (two interpreters, mounts): about 0.12 s here, and CI's
  # machine was once faster than a fixed 0.15 s margin. Half the fastest of three, measured three at a
  # time as below, gives a tight limit that a clock counting start-up would miss, with room for the
  # program's own sleep to end late.
  with ThreadPoolExecutor(3) as pool:
    startup = min(took for _, took in pool.map(run, (0, 0, 0), (3, 3, 3)))
    tight_limit = 2 + startup / 2
    (two, _), (five, five_took), (tight, tight_took) = pool.map(run, (2, 5, 2), (3, 3, tight_limit))
  assert two.passed and five.status == "timeout"
  assert five_took < 5  # killed at 3 s of run time, not left to sleep its 5 s (plus start-up)
  # Start-up made this run longer than its limit, yet it passed: only the program's run time counts.
  assert tight.passed and tight_took > tight_limit, (tight, tight_took, startup)


def test_limits_default_to_humaneval_scorers_time():
  assert sandbox.Limits().wall_seconds == 3.0


# Programs that try to pass without their code ending: each reaches for the runner's state, its result
# channel, or an exit with status 0, and each must fail (the verdict is made by another process).
FORGERS = {
  "frame_locals": (
    "import sys, os\n"
    "f = sys._getframe(1)\n"
    "while f is not None:\n"
    "  for v in list(f.f_locals.values()):\n"
    "    if isinstance(v, bytes) and len(v) == 32:\n"
    "      for fd in range(3, 64):\n"
    "        try: os.write(fd, b'\\n' + v + b'\\n')\n"
    "        except OSError: pass\n"
    "  f = f.f_back\n"
    "os._exit(0)\n"
  ),
  "patched_exit": "import os\nos._exit = lambda code: None\nraise AssertionError('tests failed')\n",
  "sys_exit": "import sys\nsys.exit(0)\nraise AssertionError('never here')\n",
  "posix_exit": "import posix\nposix._exit(0)\n",
  "fresh_posix": (
    "import _imp, importlib.machinery as m\n_imp.create_builtin(m.ModuleSpec('posix', m.BuiltinImporter))._exit(0)\n"
  ),
  "reimported_posix": "import sys\ndel sys.modules['posix']\nimport posix\nposix._exit(0)\n",
  "exec_true": "import os\nos.execv('/bin/true', ['/bin/true'])\n",
  "ctypes_exit": "import ctypes\nctypes.CDLL(None)._exit(0)\n",
  "signal_exit_at_the_runners_turn": (
    "import signal\n"
    "signal.signal(signal.SIGVTALRM, lambda *a: (_ for _ in ()).throw(SystemExit(0)))\n"
    "signal.setitimer(signal.ITIMER_VIRTUAL, 0.0001)\n"
    "raise AssertionError('tests failed')\n"
  ),
  "child_exits_zero": (
    "import os, sys\nif os.fork() == 0:\n  sys.exit(0)\nos.wait()\nraise AssertionError('tests failed')\n"
  ),
  "parent_mem": "import os\nopen(f'/proc/{os.getppid()}/mem', 'rb').read(1)\n",
  "parent_fds": "import os\nprint(os.listdir(f'/proc/{os.getppid()}/fd'))\n",
}


@pytest.mark.parametrize("name", sorted(FORGERS))
def test_a_program_cannot_forge_a_pass(name):
  result = sandbox.run_program(FORGERS[name])
  assert not result.passed, (name, result.output)
  assert result.status in ("failed", "timeout"), result


def test_a_program_that_ends_passes_and_its_forks_and_prints_do_not_matter():
  program = "import os, sys\nif os.fork() == 0:\n  os.abort()\nos.wait()\nprint('done')\n"
  result = sandbox.run_program(program)
  assert result.passed and "done" in result.output, result.output
