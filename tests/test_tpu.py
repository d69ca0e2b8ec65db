"""tpu/ scripts against a fake `gcloud` (tests/fake_gcloud.py) whose workers run the commands for real."""

import glob
import json
import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE = os.path.join(REPO, "tests", "fake_gcloud.py")
TRAIN = [
  "jaxformer",
  "train",
  "--gin_file=runs/codegen2_1b_v4_32.gin",
  "--gin.OBJECTIVE_RATES={'causal_lm': 1.0}",
  '--gin.NOTE=it\'s "quoted" $HOME',
]  # quotes and a $ must reach the workers untouched
EXPECTED_ARGS = TRAIN[1:] + ["--model_dir=gs://bucket/run1"]


class Cloud:
  def __init__(self, tmp_path):
    self.dir = tmp_path / "gcloud"
    self.dir.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    gcloud.chmod(0o755)
    self.env = {k: v for k, v in os.environ.items() if not k.startswith("JAXFORMER_TPU_")}
    self.env.update(
      {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_GCLOUD_DIR": str(self.dir),
        "TMPDIR": str(tmp_path),
        "JAXFORMER_TPU_ZONE": "us-central2-b",
        "JAXFORMER_TPU_NAME": "test-v4",
        "JAXFORMER_TPU_TYPE": "v4-16",
        "JAXFORMER_TPU_BUCKET": "gs://bucket",
        "JAXFORMER_TPU_RUN": "run1",
      }
    )

  def script(self, name, *args, check=True, **env):
    result = subprocess.run(
      ["bash", os.path.join(REPO, "jaxformer", "tpu", name), *args],
      env={**self.env, **env},
      capture_output=True,
      text=True,
      timeout=120,
      check=False,
    )
    if check and result.returncode != 0:
      raise AssertionError(f"{name} {args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result

  def calls(self):
    path = self.dir / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

  def verbs(self):
    return [" ".join(c[2:4]) for c in self.calls()]

  def worker(self, i, name="test-v4"):
    return self.dir / "slices" / name / f"worker{i}"


def _wait_for(path, timeout=20, gone=False):
  """Waits until `path` holds a whole line (the workers write these files with `echo`), or is gone."""
  deadline = time.time() + timeout
  while path.exists() if gone else not (path.exists() and path.read_text().endswith("\n")):
    if time.time() > deadline:
      raise AssertionError(f"{path} never {'went' if gone else 'appeared'}")
    time.sleep(0.05)


def _read_pid(path) -> int:
  _wait_for(path)
  return int(path.read_text())


def _jaxformer_calls(home):
  return [json.loads(line) for line in (home / "jaxformer-calls.jsonl").read_text().splitlines()]


@pytest.fixture
def cloud(tmp_path):
  yield Cloud(tmp_path)
  # A test that failed before stop.sh leaves its fake jobs looping: let them end.
  for flag in tmp_path.glob("gcloud/slices/*/worker*/jaxformer-keep-running"):
    flag.unlink()


def test_create_setup_launch_stop_delete(cloud):
  cloud.script("create.sh", "--spot")
  cloud.script("setup.sh")
  cloud.script("launch.sh", "--", *TRAIN)
  assert cloud.verbs() == ["tpu-vm create", "tpu-vm scp", "tpu-vm ssh", "tpu-vm ssh"]
  create = cloud.calls()[0]
  assert "--accelerator-type=v4-16" in create and "--spot" in create and "--version=tpu-ubuntu2204-base" in create
  for i in range(2):
    home = cloud.worker(i)
    # setup shipped the committed tree and installed it with the tpu extra
    assert (home / "jaxformer" / "setup.py").exists() and (
      home / "jaxformer" / "jaxformer" / "tpu" / "launch.sh"
    ).exists()
    pip = [json.loads(line) for line in (home / "pip-calls.jsonl").read_text().splitlines()]
    assert any(f"{home}/jaxformer[tpu]" in call for call in pip)
    # every worker ran exactly the command given, quotes and all, detached, with its own log and exit code
    _wait_for(home / "jaxformer-logs" / "run1.exit")
    assert _jaxformer_calls(home) == [EXPECTED_ARGS]
    assert (home / "jaxformer-logs" / "run1.exit").read_text().strip() == "0"
    assert "fake jaxformer ran: train" in (home / "jaxformer-logs" / "run1.log").read_text()

    # the pre-flight cleared libtpu's lock file; the job's pid record leaves with the job
    assert "rm -f /tmp/libtpu_lockfile" in (home / "sudo-calls.log").read_text()
    _wait_for(home / "jaxformer-logs" / "run1.pid", gone=True)

  logs = cloud.script("logs.sh", "--worker=all")
  assert logs.stdout.count("fake jaxformer ran: train") == 2 and logs.stdout.count("run1 exited 0") == 2
  assert "no running jaxformer job" in cloud.script("stop.sh").stdout
  cloud.script("delete.sh")
  assert cloud.verbs()[-1] == "tpu-vm delete" and not cloud.worker(0).exists()


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  return True


def test_stop_stops_the_running_job_and_supervise_never_starts_a_second(cloud):
  cloud.script("create.sh")
  cloud.script("setup.sh")
  homes = [cloud.worker(i) for i in range(2)]
  for home in homes:
    (home / "jaxformer-keep-running").touch()
  cloud.script("launch.sh", "--", *TRAIN)
  jobs = [_read_pid(home / "jaxformer-running.pid") for home in homes]
  assert all(_alive(pid) for pid in jobs)
  assert cloud.script("logs.sh", "--worker=all").stdout.count("run1 running (pid") == 2

  # A second launch beside the running job is refused on the workers; supervise sees "running".
  again = cloud.script("launch.sh", "--", *TRAIN, check=False)
  assert again.returncode != 0 and "job run1 is running" in again.stdout + again.stderr
  supervise = subprocess.Popen(
    ["bash", os.path.join(REPO, "jaxformer", "tpu", "supervise.sh"), "--poll_seconds=0.2", "--", *TRAIN],
    env=cloud.env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  deadline = time.time() + 30
  while sum(c[3] == "ssh" for c in cloud.calls()) < 8 and time.time() < deadline:  # a few status polls
    time.sleep(0.2)
  assert supervise.poll() is None
  assert all(len(_jaxformer_calls(home)) == 1 for home in homes)  # still the one job per worker

  # stop.sh finds the job by its pid record, marks it stopped and sends SIGTERM: the job saves and exits 143.
  stopped = cloud.script("stop.sh")
  assert stopped.stdout.count("stopped run1 (pid") == 2
  for home, pid in zip(homes, jobs):
    _wait_for(home / "jaxformer-logs" / "run1.exit")
    assert (home / "jaxformer-signals").read_text() == "SIGTERM: checkpoint saved\n"
    assert (home / "jaxformer-logs" / "run1.exit").read_text().strip() == "143" and not _alive(pid)
    assert (home / "jaxformer-logs" / "run1.stopped").exists()
  # A stopped run is neither finished nor preempted: supervise says so and relaunches nothing.
  out, _ = supervise.communicate(timeout=60)
  assert supervise.returncode == 0 and "run run1 was stopped (stop.sh)" in out and "finished" not in out
  assert all(len(_jaxformer_calls(home)) == 1 for home in homes)


def test_runtime_version_follows_the_accelerator_generation(cloud):
  for accelerator, runtime in [
    ("v4-16", "tpu-ubuntu2204-base"),
    ("v5litepod-16", "v2-alpha-tpuv5-lite"),
    ("v5p-16", "v2-alpha-tpuv5"),
    ("v6e-16", "v2-alpha-tpuv6e"),
  ]:
    result = cloud.script("create.sh", "--dry-run", JAXFORMER_TPU_TYPE=accelerator)
    assert f"--version={runtime}" in result.stdout, result.stdout
  result = cloud.script("create.sh", "--dry-run", "--runtime_version=custom", JAXFORMER_TPU_TYPE="v6e-16")
  assert "--version=custom" in result.stdout


def test_foreground_launch_waits_and_passes_output_and_exit_code(cloud):
  cloud.script("create.sh")
  cloud.script("setup.sh")
  result = cloud.script(
    "launch.sh", "--foreground", "--", "jaxformer", "eval", "loss", "--model_dir=gs://b/r", "--json"
  )
  assert result.stdout.count("fake jaxformer ran: eval loss --model_dir=gs://b/r --json") == 2, result.stderr
  for i in range(2):
    # the pre-flight (live-job check, TPU holders) ran before this job wrote its pid file, not beside it
    assert "pid file during pre-flight" not in (cloud.worker(i) / "sudo-calls.log").read_text()
    assert not (cloud.worker(i) / "jaxformer-logs" / "run1.pid").exists()
  (cloud.worker(1) / "jaxformer-exit-code").write_text("3")
  failed = cloud.script("launch.sh", "--foreground", "--", "jaxformer", "eval", "loss", check=False)
  assert failed.returncode == 3


def test_a_foreground_job_is_registered_after_its_preflight_and_stop_finds_it(cloud):
  # The sweep launcher runs jobs with --foreground; stop.sh must find such a job while it runs.
  # (The fake gcloud runs workers one after another, so worker 0's job is the one kept running.)
  cloud.script("create.sh")
  cloud.script("setup.sh")
  home = cloud.worker(0)
  (home / "jaxformer-keep-running").touch()
  launch = subprocess.Popen(
    ["bash", os.path.join(REPO, "jaxformer", "tpu", "launch.sh"), "--foreground", "--", "jaxformer", "eval", "loss"],
    env=cloud.env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  _wait_for(home / "jaxformer-running.pid")
  pid = _read_pid(home / "jaxformer-logs" / "run1.pid")
  assert _alive(pid)
  assert "pid file during pre-flight" not in (home / "sudo-calls.log").read_text()
  assert cloud.script("stop.sh").stdout.count("stopped run1 (pid") == 1
  out, _ = launch.communicate(timeout=60)
  assert launch.returncode == 143, out  # stopped on SIGTERM after saving, as jaxformer exits
  assert (home / "jaxformer-signals").read_text() == "SIGTERM: checkpoint saved\n"
  assert "No such file" not in out and out.count("fake jaxformer ran: eval loss") == 2, out
  assert not (home / "jaxformer-logs" / "run1.pid").exists()


def test_queued_create_and_delete(cloud):
  cloud.script("create.sh", "--queued", "--reserved", "--project=proj")
  assert cloud.verbs() == ["queued-resources create", "queued-resources describe"]
  create = cloud.calls()[0]
  assert "--node-id=test-v4" in create and "--runtime-version=tpu-ubuntu2204-base" in create
  assert "--reserved" in create and "--project=proj" in create
  cloud.script("delete.sh", "--queued")
  assert cloud.verbs()[-1] == "queued-resources delete"


def test_supervise_recreates_a_preempted_slice_and_relaunches(cloud):
  # describe 1: no slice yet; describe 2: the slice was preempted; describe 3: READY, run finished.
  result = cloud.script("supervise.sh", "--spot", "--poll_seconds=0", "--", *TRAIN, FAKE_GCLOUD_EVENTS=",PREEMPT")
  recover = ["tpu-vm create", "tpu-vm scp", "tpu-vm ssh", "tpu-vm ssh"]
  assert cloud.verbs() == (
    ["tpu-vm describe", *recover, "tpu-vm describe", "tpu-vm delete", *recover, "tpu-vm describe", "tpu-vm ssh"]
  ), result.stdout
  assert "PREEMPTED; recreating it (restart 2)" in result.stdout
  assert "run run1 finished" in result.stdout
  creates = [c for c in cloud.calls() if c[2:4] == ["tpu-vm", "create"]]
  assert all("--spot" in c for c in creates)
  # the relaunch is the same command with the same MODEL_DIR, so training resumes from its checkpoint
  launches = [c[-1] for c in cloud.calls() if c[3] == "ssh" and "nohup" in c[-1]]
  assert len(launches) == 2 and launches[0] == launches[1]
  assert _jaxformer_calls(cloud.worker(0)) == [EXPECTED_ARGS]


def test_supervise_stops_on_a_failed_run(cloud):
  cloud.script("create.sh")
  cloud.script("setup.sh")
  (cloud.worker(0) / "jaxformer-exit-code").write_text("1")
  result = cloud.script("supervise.sh", "--poll_seconds=0", "--", *TRAIN, check=False)
  assert result.returncode == 2
  assert "exited with 1 on a READY slice" in result.stderr


def test_dry_run_prints_the_gcloud_commands_and_runs_none(cloud):
  outputs = {}
  for script, args in [
    ("create.sh", ["--spot"]),
    ("setup.sh", []),
    ("launch.sh", ["--", *TRAIN]),
    ("logs.sh", []),
    ("stop.sh", []),
    ("delete.sh", []),
    ("supervise.sh", ["--", *TRAIN]),
  ]:
    outputs[script] = cloud.script(script, "--dry-run", *args).stdout
  assert cloud.calls() == []
  assert outputs["create.sh"].strip() == (
    "gcloud compute tpus tpu-vm create test-v4 --zone=us-central2-b "
    "--accelerator-type=v4-16 --version=tpu-ubuntu2204-base --spot"
  )
  assert "gcloud compute tpus tpu-vm scp" in outputs["setup.sh"]
  assert outputs["launch.sh"].startswith("gcloud compute tpus tpu-vm ssh test-v4 --worker=all")
  for word in ("describe", "delete", "create", "scp", "ssh"):
    assert f"gcloud compute tpus tpu-vm {word}" in outputs["supervise.sh"]
  # the printed launch runs as printed: paste it into a shell with our fake gcloud
  cloud.script("create.sh")
  cloud.script("setup.sh")
  subprocess.run(["bash", "-c", outputs["launch.sh"]], env=cloud.env, check=True, timeout=60)
  _wait_for(cloud.worker(1) / "jaxformer-logs" / "run1.exit")
  assert _jaxformer_calls(cloud.worker(1)) == [EXPECTED_ARGS]


def test_missing_setting_is_named(cloud):
  result = cloud.script("create.sh", check=False, JAXFORMER_TPU_ZONE="")
  assert result.returncode == 2 and "--zone / JAXFORMER_TPU_ZONE is not set" in result.stderr
  assert cloud.calls() == []


def test_shellcheck_passes():
  shellcheck = os.path.join(os.path.dirname(sys.executable), "shellcheck")
  scripts = sorted(glob.glob(os.path.join(REPO, "jaxformer", "tpu", "*.sh")))
  assert len(scripts) >= 7
  result = subprocess.run([shellcheck, *scripts], capture_output=True, text=True, check=False, cwd=REPO)
  assert result.returncode == 0, result.stdout


def test_multi_slice_creates_sets_up_and_launches_every_slice(cloud):
  with pytest.raises(AssertionError, match="add --queued"):
    cloud.script("create.sh", "--num_slices=2")
  cloud.script("create.sh", "--queued", "--num_slices=2")
  create = cloud.calls()[0]
  assert "--node-count=2" in create and "--node-prefix=test-v4" in create and "--node-id=test-v4" not in create
  cloud.script("setup.sh", "--num_slices=2", "--queued")
  cloud.script("launch.sh", "--num_slices=2", "--queued", "--", *TRAIN)
  assert cloud.verbs()[2:] == ["tpu-vm scp", "tpu-vm scp"] + ["tpu-vm ssh"] * 4
  for node in ("test-v4-0", "test-v4-1"):
    for i in range(2):
      home = cloud.worker(i, node)
      _wait_for(home / "jaxformer-logs" / "run1.exit")
      assert _jaxformer_calls(home) == [EXPECTED_ARGS]


def test_supervise_recreates_a_multi_slice_job_when_one_slice_is_preempted(cloud):
  cloud.script("create.sh", "--queued", "--num_slices=2")
  cloud.script("setup.sh", "--num_slices=2", "--queued")
  # describe 1 and 2 (slice 0 and 1): slice 0 is preempted; then all READY and the relaunched run finished
  result = cloud.script(
    "supervise.sh", "--queued", "--num_slices=2", "--poll_seconds=0", "--", *TRAIN, FAKE_GCLOUD_EVENTS="PREEMPT"
  )
  assert "test-v4 is PREEMPTED; recreating it (restart 1)" in result.stdout, result.stdout
  verbs = cloud.verbs()
  assert verbs[6:] == [
    "tpu-vm describe",
    "queued-resources delete",
    "queued-resources create",
    "queued-resources describe",
    "tpu-vm scp",
    "tpu-vm scp",
    "tpu-vm ssh",
    "tpu-vm ssh",
    "tpu-vm ssh",
    "tpu-vm ssh",
    "tpu-vm describe",
    "tpu-vm describe",
    "tpu-vm ssh",
  ]
  assert _jaxformer_calls(cloud.worker(1, "test-v4-1")) == [EXPECTED_ARGS]


@pytest.mark.parametrize(
  "args",
  [
    ["launch.sh", "--run_name=r1; touch {marker}", "--", "jaxformer", "train"],
    ["launch.sh", "--run_name=a b", "--", "jaxformer", "train"],
    ["launch.sh", "--run_name=../../x", "--", "jaxformer", "train"],
    ["create.sh", "--name=x;touch {marker}"],
    ["setup.sh", "--python=python3; touch {marker}"],
    ["launch.sh", "--bucket=gs://b/$(touch {marker})", "--", "jaxformer", "train"],
    ["supervise.sh", "--max_restarts=-1", "--", "jaxformer", "train"],
    ["supervise.sh", "--poll_seconds=soon", "--", "jaxformer", "train"],
  ],
)
def test_hostile_settings_are_refused_before_any_command_is_built(cloud, tmp_path, args):
  cloud.script("create.sh")
  cloud.script("setup.sh")
  before = len(cloud.calls())
  marker = tmp_path / "injected"
  script, *flags = args
  result = cloud.script(script, *[f.format(marker=marker) for f in flags], check=False)
  assert result.returncode == 2 and result.stderr.startswith("tpu: "), result.stderr
  assert len(cloud.calls()) == before and not marker.exists()  # nothing ran here or on a worker
  assert not any(os.path.exists(p) for p in glob.glob(f"{cloud.dir}/**/injected", recursive=True))


def test_the_same_names_from_the_environment_are_refused_too(cloud, tmp_path):
  marker = tmp_path / "injected"
  result = cloud.script("launch.sh", "--", "jaxformer", "train", check=False, JAXFORMER_TPU_RUN=f"r1;touch {marker}")
  assert result.returncode == 2 and "--run_name=" in result.stderr and not marker.exists()


def test_logs_before_any_launch_says_so_instead_of_waiting(cloud):
  cloud.script("create.sh")
  cloud.script("setup.sh")
  result = cloud.script("logs.sh", check=False)  # would follow a missing file forever; the timeout is 120 s
  assert result.returncode == 3 and "no log of run run1" in result.stdout + result.stderr  # gcloud merges them


def test_supervise_launches_over_a_stale_exit_file_and_relaunches_a_preempted_run(cloud):
  cloud.script("create.sh")
  cloud.script("setup.sh")
  home = cloud.worker(0)
  (home / "jaxformer-logs").mkdir(exist_ok=True)
  (home / "jaxformer-logs" / "run1.exit").write_text("0\n")  # an earlier, shorter run that finished
  result = cloud.script("supervise.sh", "--poll_seconds=0", "--", *TRAIN)
  assert "finished" in result.stdout and _jaxformer_calls(home) == [EXPECTED_ARGS]  # it launched the new one
  # A job that saved and stopped on SIGTERM with nobody asking (no stop.sh mark) is relaunched.
  (home / "jaxformer-exit-code").write_text("143")
  result = cloud.script("supervise.sh", "--poll_seconds=0", "--max_restarts=1", "--", *TRAIN, check=False)
  assert result.returncode == 2 and "relaunching it (restart 1)" in result.stdout
  assert "--max_restarts=1 are spent" in result.stderr and len(_jaxformer_calls(home)) == 3
