"""jaxformer as a user installs it from a wheel (no `-e`): the wheel carries its gin files and pod scripts and
no top-level package of another name, and the installed command finds them from an empty directory."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest
import train_util

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_a_wheel_install_plans_trains_and_sweeps_from_an_empty_directory(local_corpus, tmp_path):
  # Built from a copy of the checkout's files (tracked, or new and not ignored): a build/ folder left in a
  # working tree by an earlier build would otherwise put modules that no longer exist into the wheel.
  source = tmp_path / "source"
  listed = subprocess.run(
    ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
  ).stdout.decode()
  for name in filter(None, listed.split("\0")):
    if os.path.isfile(os.path.join(REPO, name)):
      os.makedirs(source / os.path.dirname(name), exist_ok=True)
      shutil.copy2(os.path.join(REPO, name), source / name)
  dist = tmp_path / "dist"
  subprocess.run(
    [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(source)],
    check=True,
    capture_output=True,
  )
  (wheel,) = dist.glob("jaxformer-*.whl")
  names = zipfile.ZipFile(wheel).namelist()
  assert "jaxformer/gin/runs/local_tiny.gin" in names and "jaxformer/gin/sweeps/codegen2_lessons.gin" in names
  assert "jaxformer/tpu/launch.sh" in names and "jaxformer/tpu/common.sh" in names
  top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
  assert top_level == {"jaxformer"}  # no generic `tasks` package beside everyone else's

  # A fresh venv that reuses this environment's packages (nothing downloaded), with the wheel installed.
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
  python = str(venv / "bin" / "python")
  site = subprocess.run(
    [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
    text=True,
    capture_output=True,
    check=True,
  ).stdout.strip()
  with open(os.path.join(site, "test_environment.pth"), "w") as f:
    f.write(sysconfig.get_paths()["purelib"] + "\n")  # after the venv's own site-packages: the wheel wins
  subprocess.run(
    [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", str(wheel)], check=True
  )
  jaxformer = str(venv / "bin" / "jaxformer")
  empty = tmp_path / "empty"
  empty.mkdir()
  run = lambda *args, **kw: subprocess.run(
    [jaxformer, *args], cwd=empty, capture_output=True, text=True, env=train_util.env(), timeout=600, **kw
  )

  where = subprocess.run(
    [python, "-c", "import jaxformer; print(jaxformer.__file__)"], cwd=empty, text=True, capture_output=True, check=True
  ).stdout
  assert where.startswith(site), where  # the installed copy, not this checkout
  plan = run("plan", "--gin_file=runs/codegen2_1b_v4_32.gin", "--gin.plan.tpu_plan.topology=None", "--json")
  assert plan.returncode == 0, plan.stderr[-2000:]
  assert json.loads(plan.stdout.splitlines()[-1])["params"] == 1_015_306_240

  model_dir = str(tmp_path / "run")
  flags = train_util.small_run_flags(local_corpus, steps=2, checkpoint_period=2)
  flags[0] = "--gin_file=runs/local_tiny.gin"  # the shipped run file as it is, from the installed package
  flags.remove("--gin_file=runs/local.gin")
  train = run("train", f"--model_dir={model_dir}", *flags)
  assert train.returncode == 0, train.stderr[-3000:]
  assert "stopped at step 2" in train.stdout and os.path.isdir(os.path.join(model_dir, "checkpoints", "2"))

  sweep = run(
    "sweep", "--sweep_file=sweeps/codegen2_lessons.gin", f"--output_dir={tmp_path / 's'}", "--dry_run", "--launcher=tpu"
  )
  assert sweep.returncode == 0, sweep.stderr[-2000:]
  assert os.path.join(site, "jaxformer", "tpu", "launch.sh") in sweep.stdout
  scripts = run("tpu", "--help")
  assert scripts.returncode == 0 and os.path.join(site, "jaxformer", "tpu", "common.sh") in scripts.stdout
