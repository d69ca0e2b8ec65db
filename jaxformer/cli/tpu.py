"""`jaxformer tpu SCRIPT [flags] [-- COMMAND]`: the gcloud scripts for TPU pod slices, which ship inside the
package (jaxformer/tpu/, walked through in its README.md), so a wheel install has them as a checkout does.

Everything after SCRIPT goes to the script unchanged (the command after `--` keeps its own --gin. flags).
"""

import os
import sys

TPU_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tpu")
SCRIPTS = {
  "create": "create the slice (--spot, --reserved, --queued, --num_slices)",
  "setup": "install this jaxformer with the tpu extra on every worker",
  "launch": "start a jaxformer command on every worker (-- jaxformer train ...)",
  "logs": "follow a run's log on a worker",
  "stop": "stop a run (it saves a checkpoint first)",
  "delete": "delete the slice",
  "supervise": "keep a run going on a spot slice through preemptions",
}


def script_path(name: str) -> str:
  return os.path.join(TPU_DIR, f"{name}.sh")


def usage() -> str:
  lines = ["usage: jaxformer tpu SCRIPT [flags] [-- jaxformer COMMAND ...]", "", "scripts:"]
  lines += [f"  {name:10s} {help_text}" for name, help_text in SCRIPTS.items()]
  lines += [
    "",
    f"Settings (--name, --zone, --bucket, ...): the top of {script_path('common')}.",
    "Every script takes --dry-run.",
  ]
  return "\n".join(lines)


def main(argv: list[str]) -> int:
  """Runs jaxformer/tpu/SCRIPT.sh with argv[1:] (bash replaces this process); prints usage for none or -h."""
  if not argv or argv[0] in ("-h", "--help"):
    print(usage())
    return 0
  if argv[0] not in SCRIPTS:
    print(f"jaxformer: error: tpu {argv[0]!r} is not one of {', '.join(SCRIPTS)}", file=sys.stderr)
    return 2
  sys.stdout.flush()
  os.execvp("bash", ["bash", script_path(argv[0]), *argv[1:]])
  return 127  # not reached
