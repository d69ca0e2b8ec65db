"""Two processes on 127.0.0.1 (4 CPU devices each, gloo): train, checkpoint, get killed, resume."""

import os
import signal
import socket
import subprocess

import pytest
import train_util


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start_pair(model_dir, flags, tag):
  port = _free_port()
  processes = []
  for i in range(2):
    log = open(f"{model_dir}.{tag}.p{i}.log", "ab")
    processes.append(
      subprocess.Popen(
        [
          train_util.JAXFORMER,
          "train",
          f"--model_dir={model_dir}",
          f"--coordinator_address=127.0.0.1:{port}",
          "--num_processes=2",
          f"--process_id={i}",
          *flags,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=train_util.env(devices=4),
      )
    )
  return processes


def _logs(model_dir, tag):
  return [open(f"{model_dir}.{tag}.p{i}.log", encoding="utf-8", errors="replace").read() for i in range(2)]


@pytest.mark.slow
def test_two_process_run_trains_checkpoints_is_killed_and_resumes_exactly(local_corpus, tmp_path):
  flags = train_util.small_run_flags(local_corpus, steps=12, checkpoint_period=4)
  reference = str(tmp_path / "reference")
  for p in _start_pair(reference, flags, "a"):
    assert p.wait(timeout=300) == 0, _logs(reference, "a")
  expected = train_util.train_losses(reference)
  assert sorted(expected) == list(range(1, 13))
  data_files = sorted(os.listdir(os.path.join(reference, "checkpoints", "12", "data")))
  assert any(f.startswith("process_0.") for f in data_files) and any(f.startswith("process_1.") for f in data_files)

  run = str(tmp_path / "run")
  pair = _start_pair(run, flags, "a")
  train_util.wait_for_step(run, 4, pair[0])
  for p in pair:
    train_util.kill(p, signal.SIGKILL)
  restored_from = max(train_util.committed_steps(run))
  assert 4 <= restored_from < 12  # killed mid-run: some steps are left to resume
  for p in _start_pair(run, flags, "b"):
    assert p.wait(timeout=300) == 0, _logs(run, "b")
  assert all(f"restored step {restored_from}" in text for text in _logs(run, "b"))
  resumed = train_util.train_losses(run)
  for step in range(restored_from + 1, 13):
    assert resumed[step] == expected[step], (step, resumed[step], expected[step])
