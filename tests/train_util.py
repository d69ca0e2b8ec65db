"""Running `jaxformer` as a user does, in a process of its own or (cli, run_here) in this one."""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

JAXFORMER = os.path.join(os.path.dirname(sys.executable), "jaxformer")


def small_run_flags(
  corpus_dir: str | None,
  steps: int = 12,
  checkpoint_period: int = 4,
  model_gin="models/tiny.gin",
  data_gin=None,
  final_eval: bool = False,
) -> list:
  """The local run (runs/local.gin) of model_gin on the corpus in corpus_dir, short: `steps` steps of 8 x 128
  tokens. With data_gin, that data instead (and runs/pretrain.gin with CodeGen2's objectives, no local corpus).
  No held-out eval unless final_eval (it builds and compiles an eval pipeline per task: seconds a run)."""
  if data_gin is None:
    run = ["--gin_file=runs/local.gin", f"--gin.CORPUS_DIR='{corpus_dir}'"]
  else:
    run = ["--gin_file=objectives/codegen2.gin", f"--gin_file={data_gin}", "--gin_file=runs/pretrain.gin"]
  return [
    f"--gin_file={model_gin}",
    *run,
    f"--gin.TRAIN_STEPS={steps}",
    "--gin.BATCH_SIZE=8",
    "--gin.TASK_FEATURE_LENGTHS={'targets': 128}",
    f"--gin.CHECKPOINT_PERIOD={checkpoint_period}",
    "--gin.EVAL_PERIOD=0",
    "--gin.train.train.log_period=1",
    "--gin.train.evaluate.eval_batches=1",
    f"--gin.train.train.final_eval={final_eval}",
    "--gin.optimizer.learning_rate_schedule.warmup_steps=1",
    "--gin.train.train.sample_prompt=None",
    "--gin.train.train.progress=False",
  ]


def env(devices: int = 8, **extra) -> dict:
  out = dict(os.environ)
  out["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  out["JAX_PLATFORMS"] = "cpu"
  out.update({k: str(v) for k, v in extra.items()})
  return out


def start(model_dir: str, flags: list[str], devices: int = 8, extra_args=(), log_to=None) -> subprocess.Popen:
  log = open(log_to or log_path(model_dir), "ab")
  return subprocess.Popen(
    [JAXFORMER, "train", f"--model_dir={model_dir}", *flags, *extra_args],
    stdout=log,
    stderr=subprocess.STDOUT,
    env=env(devices),
  )


def run(model_dir: str, flags: list[str], timeout: int = 300, **kwargs) -> int:
  process = start(model_dir, flags, **kwargs)
  return process.wait(timeout=timeout)


def cli(*args) -> tuple[int, str, str]:
  """`jaxformer ARGS` run in this process: the verb's own code and its exit code, without the ~10 s a new
  interpreter spends importing jax and TensorFlow. For checks that need no process of their own (kills,
  signals, several processes and the console script do). Returns (exit code, stdout, stderr's last line)."""
  code, out, err = cli_streams(args)
  lines = err.strip().splitlines()
  return code, out, lines[-1] if lines else ""


def run_here(model_dir: str, flags: list[str]) -> int:
  """`jaxformer train` of model_dir in this process (see cli); its output goes to the log `run` writes."""
  code, out, err = cli_streams(["train", f"--model_dir={model_dir}", *flags])
  with open(log_path(model_dir), "a") as f:
    f.write(out + err)
  return code


def cli_streams(args) -> tuple[int, str, str]:
  """As cli, with the whole of stderr."""
  from jaxformer import cli as cli_lib

  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = cli_lib.main([str(a) for a in args])
  return code, out.getvalue(), err.getvalue()


def log_path(model_dir: str) -> str:
  """MODEL_DIR.log, beside the run: where start and run_here write the run's output."""
  return os.path.join(os.path.dirname(model_dir), os.path.basename(model_dir) + ".log")


def log_text(model_dir: str) -> str:
  with open(log_path(model_dir), "rb") as f:
    return f.read().decode("utf-8", "replace")


def committed_steps(model_dir: str) -> list[int]:
  folder = os.path.join(model_dir, "checkpoints")
  if not os.path.isdir(folder):
    return []
  return sorted(int(d) for d in os.listdir(folder) if d.isdigit())


def wait_for_step(model_dir: str, step: int, process, timeout: float = 240) -> None:
  deadline = time.time() + timeout
  while time.time() < deadline:
    if any(s >= step for s in committed_steps(model_dir)):  # a later save may have deleted `step` (keep=3)
      return
    if process.poll() is not None:
      raise AssertionError(f"train exited ({process.returncode}) before step {step}:\n{log_text(model_dir)[-3000:]}")
    time.sleep(0.02)  # a directory listing: polling often keeps the kill close to the checkpoint
  raise AssertionError(f"no checkpoint at step {step} after {timeout} s")


def kill(process, sig=signal.SIGKILL):
  process.send_signal(sig)
  return process.wait(timeout=120)


def train_losses(model_dir: str) -> dict[int, float]:
  """step -> loss of the last train line written for that step."""
  losses = {}
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    for line in f:
      record = json.loads(line)
      if record.get("split") == "train":
        losses[record["step"]] = record["loss"]
  return losses


def reference_losses(model_dir: str, flags: list[str], steps: int) -> dict:
  """Trains `steps` steps uninterrupted into model_dir (in this process); returns {step: loss}."""
  assert run_here(model_dir, flags) == 0, log_text(model_dir)
  expected = train_losses(model_dir)
  assert sorted(expected) == list(range(1, steps + 1))
  return expected


def assert_sigkill_then_restart_matches(
  tmp_path, flags: list[str], steps: int, kill_after: int, expected: dict | None = None
) -> str:
  """Trains `steps` steps uninterrupted (unless `expected` gives those losses), then again in a process of
  its own killed (SIGKILL) after checkpoint `kill_after`, and restarted from what that process left on
  disk; asserts the resumed steps' losses are bit-identical. Returns the restarted run's log."""
  if expected is None:
    expected = reference_losses(str(tmp_path / "reference"), flags, steps)
  interrupted = str(tmp_path / "interrupted")
  process = start(interrupted, flags)
  wait_for_step(interrupted, kill_after, process)
  kill(process, signal.SIGKILL)
  restored_from = max(committed_steps(interrupted))
  assert kill_after <= restored_from < steps
  assert run_here(interrupted, flags) == 0, log_text(interrupted)
  assert f"restored step {restored_from}" in log_text(interrupted)
  resumed = train_losses(interrupted)
  for step in range(restored_from + 1, steps + 1):
    assert resumed[step] == expected[step], (step, resumed[step], expected[step])  # bit-identical
  return log_text(interrupted)
