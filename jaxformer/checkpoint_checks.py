"""What makes a checkpoint step trustworthy before it is restored: a checksum of every file, written once the
step is committed and verified at restore (a bit flip inside a file is caught, not only a missing or
truncated one), and the run's settings saved with the step, compared with the resuming run's so a changed
model or batch stops with a sentence, not a TensorStore traceback.

MODEL_DIR/checkpoints/<step>/checksums.json  {"files": {relative path: {"sha256", "bytes"}}}, written by
process 0 after orbax commits the step (write then rename). A step without it (the run stopped between
the commit and the checksum) restores unverified, with a warning.
"""

import hashlib
import json
import logging
import os

from jaxformer import fs

log = logging.getLogger("jaxformer")
CHECKSUMS = "checksums.json"
_CHUNK = 8 << 20


def step_dir(checkpoints_dir: str, step: int) -> str:
  return os.path.join(str(checkpoints_dir), str(step))


def _walk(folder: str):
  """Relative paths of every file under folder (local or remote), sorted."""
  import tensorflow as tf

  out = []
  for root, _, files in tf.io.gfile.walk(folder):
    for name in files:
      out.append(os.path.relpath(os.path.join(root, name), folder))
  return sorted(p for p in out if p != CHECKSUMS and not p.endswith(".tmp"))


def _digest(path: str) -> tuple[str, int]:
  sha, size = hashlib.sha256(), 0
  with fs.open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      sha.update(chunk)
      size += len(chunk)
  return sha.hexdigest(), size


def seal(checkpoints_dir: str, steps) -> list[int]:
  """Writes checksums.json into each of `steps` (committed) that has none yet; returns the steps sealed."""
  sealed = []
  for step in steps:
    folder = step_dir(checkpoints_dir, step)
    if fs.exists(os.path.join(folder, CHECKSUMS)) or not fs.isdir(folder):
      continue
    files = {}
    for relative in _walk(folder):
      sha, size = _digest(os.path.join(folder, relative))
      files[relative] = {"sha256": sha, "bytes": size}
    fs.write(os.path.join(folder, CHECKSUMS), json.dumps({"files": files}, indent=0))
    sealed.append(step)
  return sealed


def verify(checkpoints_dir: str, step: int) -> str | None:
  """None when every file of the step matches its checksum (or the step has no checksums.json yet, with a
  warning); else what is wrong, naming the file."""
  folder = step_dir(checkpoints_dir, step)
  path = os.path.join(folder, CHECKSUMS)
  if not fs.exists(path):
    log.warning("checkpoint step %d has no %s (stopped before it was written): restored unverified", step, CHECKSUMS)
    return None
  try:
    with fs.open(path) as f:
      expected = json.load(f)["files"]
  except (ValueError, KeyError) as e:
    return f"{path} does not read ({e})"
  present = set(_walk(folder))
  for relative, want in sorted(expected.items()):
    if relative not in present:
      return f"{relative} is missing"
    sha, size = _digest(os.path.join(folder, relative))
    if size != want["bytes"]:
      return f"{relative} has {size} bytes, {want['bytes']} when saved (truncated or replaced)"
    if sha != want["sha256"]:
      return f"{relative} does not match its sha256 (its bytes changed since it was saved)"
  return None


def describe_changes(saved: dict, now: dict, names: dict) -> list[str]:
  """'BATCH_SIZE=8 (now 16)' for each key of `names` whose saved value differs from the current one.

  names: {key in saved/now: how a user names it (a gin macro or binding)}.
  """
  return [
    f"{label}={saved[key]!r} (now {now.get(key)!r})"
    for key, label in names.items()
    if key in saved and saved[key] != now.get(key)
  ]
