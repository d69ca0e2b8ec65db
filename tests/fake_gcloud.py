"""A stand-in for `gcloud compute tpus ...`, for the tpu/ script tests (no gcloud binary or TPU here).

It checks what it is given (known groups, verbs and flags; required flags per verb; files that
scp sends) and fails as gcloud would otherwise. It keeps slices in a state file and gives each
slice two workers, each a folder used as $HOME: `ssh --command` runs the command there for real
with bash, `scp` copies for real, `delete` wipes the workers' disks.

Environment:
  FAKE_GCLOUD_DIR     state.json, calls.jsonl (one JSON argv per call) and the worker folders
  FAKE_GCLOUD_EVENTS  optional, comma-separated: what the Nth `tpu-vm describe` sees first
                      ('' nothing, 'PREEMPT' the slice is preempted just before)
"""

import json
import os
import shutil
import subprocess
import sys

WORKERS = 2
VERBS = {
  "tpu-vm": {"create", "delete", "describe", "ssh", "scp"},
  "queued-resources": {"create", "delete", "describe"},
}
FLAGS = {  # verb -> (required, optional)
  ("tpu-vm", "create"): (
    {"--zone", "--accelerator-type", "--version"},
    {"--project", "--spot", "--reserved", "--preemptible"},
  ),
  ("tpu-vm", "delete"): ({"--zone", "--quiet"}, {"--project"}),
  ("tpu-vm", "describe"): ({"--zone", "--format"}, {"--project"}),
  ("tpu-vm", "ssh"): ({"--zone", "--worker", "--command"}, {"--project"}),
  ("tpu-vm", "scp"): ({"--zone", "--worker"}, {"--project"}),
  ("queued-resources", "create"): (
    {"--zone", "--accelerator-type", "--runtime-version"},
    {"--project", "--spot", "--reserved", "--node-id", "--node-count", "--node-prefix"},
  ),
  ("queued-resources", "delete"): ({"--zone", "--force", "--quiet"}, {"--project"}),
  ("queued-resources", "describe"): ({"--zone", "--format"}, {"--project"}),
}
STUB_BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_tpu_bin")


def fail(message: str, code: int = 2):
  print(f"ERROR: (gcloud) {message}", file=sys.stderr)
  sys.exit(code)


def parse(argv):
  if argv[:2] != ["compute", "tpus"] or len(argv) < 5:
    fail(f"unsupported command: gcloud {' '.join(argv)}")
  group, verb = argv[2], argv[3]
  if verb not in VERBS.get(group, ()):
    fail(f"Invalid choice: '{group} {verb}'")
  positional, flags = [], {}
  for arg in argv[4:]:
    if arg.startswith("--"):
      name, _, value = arg.partition("=")
      flags[name] = value
    else:
      positional.append(arg)
  required, optional = FLAGS[(group, verb)]
  missing = required - set(flags)
  unknown = set(flags) - required - optional
  if missing:
    fail(f"{group} {verb}: missing required flags {sorted(missing)}")
  if unknown:
    fail(f"unrecognized arguments: {sorted(unknown)}")
  if flags["--zone"] == "":
    fail("--zone is empty")
  return group, verb, positional, flags


class State:
  def __init__(self, folder):
    self.folder = folder
    self.path = os.path.join(folder, "state.json")
    self.data = {"slices": {}, "describes": 0}
    if os.path.exists(self.path):
      with open(self.path) as f:
        self.data = json.load(f)

  def save(self):
    # Another fake gcloud (supervise.sh polling beside stop.sh) may be reading it: replace it whole.
    with open(self.path + f".{os.getpid()}", "w") as f:
      json.dump(self.data, f)
    os.replace(self.path + f".{os.getpid()}", self.path)

  def worker_homes(self, name, worker):
    workers = range(WORKERS) if worker == "all" else [int(worker)]
    return [os.path.join(self.folder, "slices", name, f"worker{w}") for w in workers]


def main(argv):
  folder = os.environ["FAKE_GCLOUD_DIR"]
  with open(os.path.join(folder, "calls.jsonl"), "a") as f:
    f.write(json.dumps(argv) + "\n")
  group, verb, positional, flags = parse(argv)
  state = State(folder)
  slices = state.data["slices"]

  queued = state.data.setdefault("queued", {})  # queued resource -> its nodes
  if verb == "create":
    if group == "tpu-vm":
      names = [positional[0]]
    elif ("--node-id" in flags) == ("--node-count" in flags):
      fail("queued-resources create: exactly one of --node-id or --node-count (with --node-prefix)")
    elif "--node-id" in flags:
      names = [flags["--node-id"]]
    else:
      names = [f"{flags['--node-prefix']}-{i}" for i in range(int(flags["--node-count"]))]
    if group == "queued-resources":
      if positional[0] in queued:
        fail(f"ALREADY_EXISTS: queued resource {positional[0]}", 1)
      queued[positional[0]] = names
    for name in names:
      if name in slices:
        fail(f"ALREADY_EXISTS: {name}", 1)
      slices[name] = "READY"
      for home in state.worker_homes(name, "all"):
        os.makedirs(home)
    state.save()
  elif verb == "delete":
    if group == "queued-resources":
      if positional[0] not in queued:
        fail(f"NOT_FOUND: queued resource {positional[0]}", 1)
      names = queued.pop(positional[0])
    else:
      names = [positional[0]]
    for name in names:
      if name not in slices:
        fail(f"NOT_FOUND: {name}", 1)
      del slices[name]
      shutil.rmtree(os.path.join(folder, "slices", name), ignore_errors=True)
    state.save()
  elif verb == "describe":
    name = positional[0]
    if group == "queued-resources":
      if name not in queued:
        fail(f"NOT_FOUND: queued resource {name}", 1)
      print("ACTIVE")
      return
    if group == "tpu-vm":
      events = os.environ.get("FAKE_GCLOUD_EVENTS", "").split(",")
      index = state.data["describes"]
      state.data["describes"] += 1
      if index < len(events) and events[index] == "PREEMPT" and name in slices:
        slices[name] = "PREEMPTED"
      state.save()
    if name not in slices:
      fail(f"NOT_FOUND: Resource '{name}' was not found", 1)
    print(slices[name])
  elif verb == "scp":
    source, target = positional
    if not os.path.isfile(source):
      fail(f"scp: {source}: no such file")
    name, _, remote = target.partition(":")
    if name not in slices or slices[name] != "READY":
      fail(f"scp: slice {name} is not READY", 1)
    for home in state.worker_homes(name, flags["--worker"]):
      shutil.copy(source, os.path.join(home, remote))
  elif verb == "ssh":
    name = positional[0]
    if name not in slices or slices[name] != "READY":
      fail(f"ssh: slice {name} is not READY", 255)
    code = 0
    for home in state.worker_homes(name, flags["--worker"]):
      env = {"HOME": home, "PATH": f"{STUB_BIN}:/usr/bin:/bin", "FAKE_PYTHON": sys.executable}
      result = subprocess.run(
        ["bash", "-c", flags["--command"]],
        env=env,
        cwd=home,
        check=False,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
      )
      sys.stdout.write(result.stdout)
      code = code or result.returncode
    sys.exit(code)


if __name__ == "__main__":
  main(sys.argv[1:])
