"""Hostile and careless input to a run that exists: damaged checkpoints, a changed model or batch, another
tokenizer. Each case checks what is left on disk (the good checkpoints kept, nothing rotated away, the run's
tokenizer intact), not only the message. One trained run is shared; each case works on its own copy."""

import glob
import os
import shutil

import jax
import numpy as np
import pytest
import train_util

from jaxformer import checkpoint, checkpoint_checks, cli
from jaxformer.errors import UserError


@pytest.fixture(scope="session")
def trained(local_corpus, once):
  """A tiny run trained 6 steps with a checkpoint every 2 (all kept), and the flags that made it."""
  flags = train_util.small_run_flags(local_corpus, steps=6, checkpoint_period=2) + [
    "--gin.checkpoint.make_manager.keep=4"
  ]

  def build(out):
    model_dir = str(out / "run")
    assert train_util.run_here(model_dir, flags) == 0, train_util.log_text(model_dir)
    assert train_util.committed_steps(model_dir) == [2, 4, 6]
    return model_dir

  return once("hostile_trained", build), flags


def _copy(trained, tmp_path, name="run") -> str:
  target = str(tmp_path / name)
  shutil.copytree(trained[0], target)
  return target


def _files(folder) -> dict:
  return {p: os.path.getsize(p) for p in glob.glob(f"{folder}/**", recursive=True) if os.path.isfile(p)}


def _error(capsys) -> str:
  err = capsys.readouterr().err.strip().splitlines()
  assert err and err[-1].startswith("jaxformer: error:") and "Traceback" not in "\n".join(err), err
  return err[-1]


@pytest.mark.slow
def test_every_step_is_sealed_with_checksums_that_verify(trained):
  for step in (2, 4, 6):
    folder = checkpoint_checks.step_dir(os.path.join(trained[0], "checkpoints"), step)
    assert os.path.exists(os.path.join(folder, checkpoint_checks.CHECKSUMS))
    assert checkpoint_checks.verify(os.path.join(trained[0], "checkpoints"), step) is None


@pytest.mark.slow
def test_a_bit_flipped_checkpoint_is_moved_aside_and_the_run_resumes_from_the_one_before(trained, tmp_path):
  run = _copy(trained, tmp_path)
  data = max(glob.glob(f"{run}/checkpoints/6/state/**/d/*", recursive=True), key=os.path.getsize)
  with open(data, "r+b") as f:  # one bit, in the middle of the largest array file
    f.seek(os.path.getsize(data) // 2)
    byte = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([byte[0] ^ 0x10]))
  flags = [f for f in trained[1] if not f.startswith("--gin.TRAIN_STEPS")] + ["--gin.TRAIN_STEPS=8"]
  assert train_util.run_here(run, flags) == 0, train_util.log_text(run)
  text = train_util.log_text(run)
  assert "checkpoint step 6 does not read" in text and "does not match its sha256" in text
  assert "restored step 4" in text
  assert train_util.committed_steps(run) == [2, 4, 6, 8]  # retrained 5..8; 2 and 4 were never rotated out
  assert [n.split("-")[0] for n in os.listdir(os.path.join(run, "checkpoints_unreadable"))] == ["6"]


def test_a_state_with_nan_is_never_restored(tmp_path):
  """A step whose bytes are intact but hold NaN (no checksums can say so) is skipped like a damaged one."""
  replicated = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  manager = checkpoint.make_manager(str(tmp_path), checkpoint_period=1, async_save=False)
  good = {"w": np.ones((4, 4), np.float32), "step": np.ones((), np.int32)}
  checkpoint.save(manager, 1, good, force=True)
  checkpoint.save(manager, 2, {"w": np.full((4, 4), np.nan, np.float32), "step": np.ones((), np.int32)}, force=True)
  checkpoint.seal(manager)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), good)
  state, step = checkpoint.restore_newest_readable(manager, abstract)
  assert step == 1 and np.all(np.asarray(state["w"]) == 1)
  assert os.listdir(os.path.join(tmp_path, "checkpoints_unreadable"))[0].startswith("2-")


@pytest.mark.slow
def test_resuming_with_another_batch_or_model_stops_with_one_line_and_touches_nothing(trained, tmp_path, capsys):
  run = _copy(trained, tmp_path)
  before = _files(run)
  cases = [
    (["--gin.BATCH_SIZE=16"], "was trained with BATCH_SIZE=8 (now 16)"),
    (["--gin.TASK_FEATURE_LENGTHS={'targets': 256}"], "TASK_FEATURE_LENGTHS={'targets': 128}"),
    (["--gin.ModelConfig.d_model=64"], "was trained with ModelConfig.d_model=128 (now 64)"),
  ]
  for extra, message in cases:
    assert cli.main(["train", f"--model_dir={run}", *trained[1], *extra]) == 2, extra
    line = _error(capsys)
    assert message in line, line
  after = _files(run)
  assert {p: s for p, s in after.items() if "run.lock" not in p} == before  # nothing moved, written or rotated


@pytest.mark.slow
def test_resuming_with_another_tokenizer_is_refused_naming_both_digests(trained, tmp_path, capsys, local_corpus):
  from sentencepiece import sentencepiece_model_pb2

  run = _copy(trained, tmp_path)
  kept = os.path.join(run, "vocabulary", "spm.model")
  original = open(kept, "rb").read()
  proto = sentencepiece_model_pb2.ModelProto.FromString(original)
  proto.pieces[-1].score -= 1.0  # another tokenizer of the same size
  other = tmp_path / "other.model"
  other.write_bytes(proto.SerializeToString())
  assert cli.main(["train", f"--model_dir={run}", *trained[1], f"--gin.VOCABULARY='{other}'"]) == 2
  line = _error(capsys)
  assert "is the tokenizer this run was trained with" in line and "switch_vocabulary" in line
  assert line.count("sha256") == 2 and open(kept, "rb").read() == original  # the run's copy is untouched


def test_a_run_whose_every_checkpoint_is_damaged_names_each_and_moves_none(trained, tmp_path, capsys):
  run = _copy(trained, tmp_path)
  for step in (2, 4, 6):
    for path in glob.glob(f"{run}/checkpoints/{step}/state/**/d/*", recursive=True):
      with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(UserError, match=r"no checkpoint step .* can be restored: step 6: .*; step 4: .*; step 2: "):
    manager = checkpoint.make_manager(run)
    checkpoint.restore_newest_readable(manager, {})
  assert cli.main(["train", f"--model_dir={run}", *trained[1]]) == 2
  assert "no checkpoint step" in _error(capsys)
  assert train_util.committed_steps(run) == [2, 4, 6] and not os.path.exists(f"{run}/checkpoints_unreadable")
