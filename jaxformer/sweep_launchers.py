"""How `jaxformer sweep` runs each command: here, one after another (LocalLauncher), or on every worker of a
TPU slice through jaxformer/tpu/launch.sh (TpuLauncher)."""

import os
import signal
import subprocess
import sys

# The console script next to this interpreter (`python -m jaxformer.cli` breaks gin's relative includes).
JAXFORMER = [os.path.join(os.path.dirname(sys.executable), "jaxformer")]
TPU_LAUNCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tpu", "launch.sh")  # package data


class LocalLauncher:
  """Runs each command as a child process here, its output appended to a log file. SIGTERM or
  Ctrl-C to the sweep is passed on: the trainer saves a checkpoint, and the sweep stops."""

  def __init__(self):
    self.child = None
    self.interrupted = False

  def command(self, argv, name: str):
    return [*JAXFORMER, *argv]

  def run(self, argv: list[str], log_path: str, name: str) -> tuple[int, str]:
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "ab") as log:
      log.write(f"$ jaxformer {' '.join(argv)}\n".encode())
      log.flush()
      self.child = subprocess.Popen(self.command(argv, name), stdout=subprocess.PIPE, stderr=log)
      out = self.child.stdout.read()
      code = self.child.wait()
      log.write(out)
    self.child = None
    return code, out.decode("utf-8", "replace")

  def forward(self, signum, _frame):
    self.interrupted = True
    if self.child is not None and self.child.poll() is None:
      self.child.send_signal(signal.SIGTERM)


class TpuLauncher(LocalLauncher):
  """Runs each command on every worker of the slice named by jaxformer/tpu/common.sh's settings (TPU_NAME, ZONE, ...),
  through `jaxformer/tpu/launch.sh --foreground`, which returns when the command ends on all workers."""

  def __init__(self, extra_flags=()):
    super().__init__()
    self.extra_flags = list(extra_flags)

  def command(self, argv, name: str):
    # The run's name names its log and exit files on the workers.
    return ["bash", TPU_LAUNCH, "--foreground", f"--run_name={name}", *self.extra_flags, "--", "jaxformer", *argv]
