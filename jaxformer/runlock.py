"""One writer per run folder: MODEL_DIR/run.lock, held for the whole run by `train` (process 0) and
`import`, so a second trainer, sweep run or import into a folder in use stops at once instead of
mixing metrics, configs and checkpoints.

Locally the lock is created exclusively (O_EXCL). On gs:// (no exclusive create through tf.io.gfile)
it is written, then read back after a moment: of two writers racing within that moment the one whose
record is not there stops. A lock left by a dead process on this host is taken over with a warning;
a lock from another host is never taken over (remove the file if that run is gone).
"""

import contextlib
import datetime
import json
import logging
import os
import socket
import sys
import time
import uuid

from jaxformer import fs
from jaxformer.errors import UserError

LOCK_NAME = "run.lock"
log = logging.getLogger("jaxformer")


def _alive(pid: int) -> bool:
  """Whether pid is a running jaxformer (a recycled pid running something else counts as gone)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  try:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
      return b"jaxformer" in f.read()
  except OSError:
    return True


def _describe(holder: dict) -> str:
  return (
    f"{holder.get('what', 'a run')} (pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}: "
    f"{holder.get('command', '?')})"
  )


class RunLock:
  """with RunLock(model_dir, "train"): ... holds MODEL_DIR/run.lock; raises UserError naming the holder.
  path: another lock file (an output folder's, beside it: OutputLock)."""

  def __init__(self, model_dir: str, what: str, path: str | None = None):
    self.model_dir, self.what = model_dir, what
    self.path = path or os.path.join(model_dir, LOCK_NAME)
    self.record = {
      "what": what,
      "host": socket.gethostname(),
      "pid": os.getpid(),
      "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
      "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300],
      "token": uuid.uuid4().hex,
    }
    self.held = False

  def _read(self) -> dict | None:
    try:
      with fs.open(self.path) as f:
        return json.loads(f.read() or "{}")
    except (OSError, ValueError):
      return None if not fs.exists(self.path) else {}

  def _refuse(self, holder: dict):
    raise UserError(
      f"{self.model_dir} is in use by {_describe(holder)}; wait for it to finish, use another folder, or "
      f"remove {self.path} if that process is gone"
    )

  def _stale(self, holder: dict) -> bool:
    return holder.get("host") == self.record["host"] and not _alive(int(holder.get("pid", -1)))

  def acquire(self) -> "RunLock":
    try:
      return self._acquire()
    except OSError as e:  # MODEL_DIR is a file, read-only, or on a bucket we cannot write
      where = f"MODEL_DIR={self.model_dir}" if self.path.endswith(LOCK_NAME) else self.model_dir
      raise UserError(
        f"{where}: cannot write the {'run' if self.what == 'train' else self.what} there ({e.strerror or e})"
      ) from e

  def _acquire(self) -> "RunLock":
    fs.makedirs(os.path.dirname(self.path))
    text = json.dumps(self.record)
    if fs.is_remote(self.path):
      holder = self._read()
      if holder is not None and not self._stale(holder):
        self._refuse(holder)
      fs.write(self.path, text)
      time.sleep(1.0)  # a racing writer's record replaces ours within this moment
      holder = self._read()
      if not holder or holder.get("token") != self.record["token"]:
        self._refuse(holder or {})
    else:
      try:
        descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = self._read() or {}
        if not self._stale(holder):
          self._refuse(holder)
        log.warning("taking over the lock of %s: %s is gone", self.model_dir, _describe(holder))
        fs.write(self.path, text)
      else:
        with os.fdopen(descriptor, "w") as f:
          f.write(text)
    self.held = True
    return self

  def release(self) -> None:
    if not self.held:
      return
    self.held = False
    holder = self._read()
    if holder and holder.get("token") == self.record["token"]:
      fs.remove(self.path)

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *_):
    self.release()


@contextlib.contextmanager
def building(output_dir: str, overwrite: bool, what: str, flag: str = "--output_dir"):
  """fs.replaced_on_success, holding OUTPUT_DIR.lock (beside it) for the whole build: a second build into
  the same folder stops at once naming the first, instead of replacing its finished output when it ends."""
  output_dir = fs.check_replaceable(output_dir, overwrite, flag)
  with (
    RunLock(output_dir, what, path=f"{output_dir}.lock"),
    fs.replaced_on_success(output_dir, overwrite, flag) as partial,
  ):
    yield partial
