"""What a run folder survives: a second trainer, Ctrl-C, damaged checkpoints, an import over a run."""

import glob
import json
import os
import signal
import socket
import subprocess
import time

import pytest
import train_util

from jaxformer import cli, runlock
from jaxformer.errors import UserError


@pytest.mark.slow
def test_second_trainer_stops_at_once_and_ctrl_c_saves_and_exits_130(local_corpus, tmp_path):
  model_dir = str(tmp_path / "run")
  # Far more steps than the test lasts: the first run must still be training when the second one
  # has started up and been refused, however slow a loaded machine makes that start-up.
  flags = train_util.small_run_flags(local_corpus, steps=100_000, checkpoint_period=200)
  first = train_util.start(model_dir, flags)
  deadline = time.time() + 240
  while not os.path.exists(os.path.join(model_dir, "metrics.jsonl")):  # the first run is training
    assert first.poll() is None and time.time() < deadline, train_util.log_text(model_dir)[-3000:]
    time.sleep(0.2)
  holder = json.load(open(os.path.join(model_dir, runlock.LOCK_NAME)))
  assert holder["pid"] == first.pid and holder["what"] == "train"

  started = time.time()
  code, out, err = train_util.cli_streams(["train", f"--model_dir={model_dir}", *flags])  # a second trainer
  # Refused before any model work (no step of its own), in one line.
  assert code == 2 and time.time() - started < 60 and "step 1" not in out
  assert f"is in use by train (pid {first.pid} on {socket.gethostname()}" in err
  errors = [line for line in err.splitlines() if line.startswith("jaxformer: error:")]
  assert len(errors) == 1 and "In call to configurable" not in errors[0]
  assert first.poll() is None  # the first run goes on

  assert train_util.kill(first, signal.SIGINT) == 130
  text = train_util.log_text(model_dir)
  stopped_at = max(train_util.committed_steps(model_dir))
  assert f"stopped (SIGINT) at step {stopped_at}: checkpoint saved" in text and "Traceback" not in text
  assert not os.path.exists(os.path.join(model_dir, runlock.LOCK_NAME))  # released


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
  dead = subprocess.Popen(["true"])
  dead.wait()
  path = tmp_path / runlock.LOCK_NAME
  path.write_text(json.dumps({"what": "train", "host": socket.gethostname(), "pid": dead.pid, "since": "then"}))
  with runlock.RunLock(str(tmp_path), "train") as lock:
    assert json.loads(path.read_text())["token"] == lock.record["token"]
  assert not path.exists()
  # A live holder on another host is never taken over.
  path.write_text(json.dumps({"what": "train", "host": "elsewhere", "pid": 1, "since": "then"}))
  try:
    runlock.RunLock(str(tmp_path), "train").acquire()
    raise AssertionError("took over a lock held on another host")
  except UserError as e:
    assert "pid 1 on elsewhere" in str(e)


def _damage(model_dir: str, step: int, kind: str) -> None:
  folder = os.path.join(model_dir, "checkpoints", str(step))
  if kind == "truncated state file":
    data = max(glob.glob(os.path.join(folder, "state", "ocdbt.process_0", "d", "*")), key=os.path.getsize)
    with open(data, "r+b") as f:
      f.truncate(os.path.getsize(data) // 2)
  elif kind == "missing manifest":
    os.remove(os.path.join(folder, "state", "manifest.ocdbt"))
  elif kind == "missing data item":
    for path in glob.glob(os.path.join(folder, "data", "*")):
      os.remove(path)
    os.rmdir(os.path.join(folder, "data"))


@pytest.mark.slow
def test_damaged_latest_checkpoints_are_moved_aside_and_the_run_resumes_from_the_newest_that_reads(
  local_corpus, tmp_path
):
  model_dir = str(tmp_path / "run")
  flags = train_util.small_run_flags(local_corpus, steps=8, checkpoint_period=2) + [
    "--gin.checkpoint.make_manager.keep=4"
  ]
  assert train_util.run_here(model_dir, flags) == 0, train_util.log_text(model_dir)
  assert train_util.committed_steps(model_dir) == [2, 4, 6, 8]
  kinds = {8: "truncated state file", 6: "missing manifest", 4: "missing data item"}
  for step, kind in kinds.items():
    _damage(model_dir, step, kind)

  assert train_util.run_here(model_dir, flags) == 0, train_util.log_text(model_dir)
  text = train_util.log_text(model_dir)
  for step in kinds:
    assert f"checkpoint step {step} does not read" in text
  assert "restored step 2" in text
  assert train_util.committed_steps(model_dir)[-1] == 8  # trained on from 2 to the end
  aside = sorted(os.listdir(os.path.join(model_dir, "checkpoints_unreadable")))
  assert [name.split("-")[0] for name in aside] == ["4", "6", "8"]  # renamed, not deleted
  losses = train_util.train_losses(model_dir)
  assert all(s in losses for s in range(3, 9))


def test_import_refuses_a_folder_that_holds_a_run(tmp_path, capsys):
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.gin").write_text("MODEL_DIR = 'x'\n")
  assert cli.main(["import", f"--hf={tmp_path / 'missing'}", f"--model_dir={run}"]) == 2
  assert "already holds config.gin" in capsys.readouterr().err
  assert (run / "config.gin").read_text() == "MODEL_DIR = 'x'\n"


def _tree(folder) -> dict:
  """Every file under folder with its bytes (to show a folder is byte-identical afterwards)."""
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_failed_builds_leave_earlier_outputs_byte_identical(tmp_path, capsys):
  source = tmp_path / "source"
  source.mkdir()
  for i in range(6):
    (source / f"module_{i}.py").write_text(f"def f{i}(x):\n    return x + {i}\n" * 3)
  built = tmp_path / "corpus"
  assert cli.main(["data", "build-local", f"--output_dir={built}", f"--roots={source}"]) == 0
  before = _tree(built)
  assert "stats.json" in before and len(before) > 2
  capsys.readouterr()
  # A mistyped root, a rebuild without --overwrite, and a root with nothing to keep: each exits 2.
  for roots, extra, message in [
    (tmp_path / "typo", [], "is not a folder"),
    (source, [], "pass --overwrite"),
    (tmp_path, ["--overwrite", "--max_bytes=1"], ""),
  ]:
    (tmp_path / "empty_root").mkdir(exist_ok=True)
    roots = tmp_path / "empty_root" if message == "" else roots
    argv = ["data", "build-local", f"--output_dir={built}", f"--roots={roots}", *extra]
    assert cli.main(argv) == 2, argv
    assert message in capsys.readouterr().err
    assert _tree(built) == before

  raw = tmp_path / "raw"
  raw.mkdir()
  (raw / "a.jsonl").write_text("".join(json.dumps({"text": f"doc {i}\n" * 4}) + "\n" for i in range(40)))
  converted = tmp_path / "converted"
  assert cli.main(["data", "convert", f"--input={raw}/a.jsonl", f"--output_dir={converted}", "--num_shards=8"]) == 0
  before = _tree(converted)
  (raw / "b.txt").write_text("not a supported file")
  for argv in (
    ["data", "convert", f"--input={raw}/*", f"--output_dir={converted}", "--overwrite"],  # rejected input
    ["data", "convert", f"--input={raw}/a.jsonl", f"--output_dir={converted}"],  # no --overwrite
    ["data", "convert", f"--input={raw}/a.jsonl", f"--output_dir={converted}", "--text_field=x", "--overwrite"],
  ):
    assert cli.main(argv) == 2, argv
    assert _tree(converted) == before
  # A deliberate rebuild with fewer shards leaves none of the old shards behind.
  argv = ["data", "convert", f"--input={raw}/a.jsonl", f"--output_dir={converted}", "--num_shards=2", "--overwrite"]
  assert cli.main(argv) == 0
  assert sorted(os.listdir(converted / "text")) == [
    "train-00000-of-00002.tfrecord",
    "train-00001-of-00002.tfrecord",
    "validation-00000-of-00001.tfrecord",
  ]
  assert not list(tmp_path.glob("*.partial-*")) and not list(tmp_path.glob("*.old-*"))


def _error(capsys) -> str:
  err = capsys.readouterr().err.strip().splitlines()
  assert err and err[-1].startswith("jaxformer: error:"), err
  return err[-1]


def test_bad_input_is_one_line_and_exit_2(tmp_path, local_corpus, capsys):
  corpus = f"--gin.CORPUS_DIR='{local_corpus}'"
  cases = [
    (["plan", "--gin_file=runs/local_tiny.gin", "--gin.TRIAN_STEPS=20"], "did you mean TRAIN_STEPS?"),
    (
      ["train", f"--model_dir={tmp_path}/a", "--gin_file=runs/local_tiny.gin", corpus, "--gin.TRAIN_STEPS='abc'"],
      "train.train.train_steps='abc' must be an integer >= 1",
    ),
    (
      ["train", f"--model_dir={tmp_path}/b", "--gin_file=runs/local_tiny.gin", corpus, "--gin.CHECKPOINT_PERIOD=0"],
      "CHECKPOINT_PERIOD)=0 must be an integer >= 1",
    ),
    (["sample", f"--model_dir={tmp_path}", "--prompt=x", "--max_new_tokens=-5"], "--max_new_tokens=-5 must be"),
    (["sample", f"--model_dir={tmp_path}", "--prompt=x", "--temperature=-1"], "--temperature=-1.0 must be"),
  ]
  (tmp_path / "file").write_text("not a folder")
  cases.append(
    (["train", f"--model_dir={tmp_path}/file", "--gin_file=runs/local_tiny.gin", corpus], "cannot write the run there")
  )
  completions = {
    "empty.jsonl": (b"", "no completions"),
    "latin1.jsonl": ('{"task_id": "HumanEval/0", "completion": "caf\xe9"}\n'.encode("latin-1"), "not UTF-8"),
    "list.jsonl": (b"[1, 2]\n", "list.jsonl:1: a list, not a JSON object"),
    "nocompletion.jsonl": (b'{"task_id": "HumanEval/0"}\n', "has no string 'completion'"),
  }
  for name, (data, message) in completions.items():
    (tmp_path / name).write_bytes(data)
    cases.append((["eval", "humaneval", f"--completions={tmp_path / name}", "--k=1"], message))
  hf = tmp_path / "hf"
  hf.mkdir()
  (hf / "config.json").write_text(json.dumps({"model_type": "codegen", "n_embd": 64, "n_head": 4, "vocab_size": 99}))
  cases.append((["import", f"--hf={hf}", f"--model_dir={tmp_path}/imported"], "no integer n_layer"))
  # Start-up checks (issue: each used to train silently, hang, or print an empty score).
  local = ["--gin_file=runs/local_tiny.gin", corpus]
  cases += [
    (
      ["train", f"--model_dir={tmp_path}/long", *local, "--gin.TASK_FEATURE_LENGTHS={'targets': 4096}"],
      "TASK_FEATURE_LENGTHS['targets']=4096 is longer than the model's context ModelConfig.max_length=2048",
    ),
    (
      ["train", f"--model_dir={tmp_path}/huge", *local, "--gin.TASK_FEATURE_LENGTHS={'targets': 10_000_000}"],
      "is longer than the model's context",
    ),
    (["sample", f"--model_dir={tmp_path}", "--prompt=x", "--temperature=nan"], "--temperature=nan must be"),
    (["eval", "humaneval", f"--model_dir={tmp_path}", "--limit=0"], "--limit=0 must be a positive"),
    (["eval", "humaneval", f"--model_dir={tmp_path}", "--k=0,1"], "each k must be a positive integer"),
    (["bench", "--gin_file=models/tiny.gin", "--steps=0"], "--steps=0 must be a positive"),
    (["bench", "--gin_file=models/tiny.gin", "--length=4096"], "--length=4096 is longer than the model's context"),
    (["data", "train-tokenizer", f"--corpus_dir={tmp_path / 'converted'}"], "is a `jaxformer data convert` folder"),
  ]
  (tmp_path / "converted").mkdir()
  (tmp_path / "converted" / "stats.json").write_text(json.dumps({"written": {"train": 3}}))
  samples = tmp_path / "23.jsonl"
  samples.write_text("".join(json.dumps({"task_id": "HumanEval/0", "completion": "  pass"}) + "\n" for _ in range(23)))
  cases.append((["eval", "humaneval", f"--completions={samples}", "--k=1,100"], "pass@100 needs at least 100 samples"))
  unreachable = "gs://jaxformer-no-such-bucket-here/sweep"  # no network here: a one-line error, not a traceback
  sweep = ["sweep", "--sweep_file=sweeps/codegen2_lessons.gin", f"--output_dir={unreachable}", "--collect_only"]
  cases.append((sweep, unreachable))
  for argv, message in cases:
    assert cli.main(argv) == 2, argv
    line = _error(capsys)
    assert message in line and "In call to configurable" not in line, (argv, line)
  assert not any((tmp_path / name / "run.lock").exists() for name in ("long", "huge"))  # no lock left behind


def test_import_names_a_truncated_safetensors_file(tmp_path, capsys):
  import numpy as np
  from safetensors.numpy import save_file

  hf = tmp_path / "hf"
  hf.mkdir()
  config = {"model_type": "codegen", "n_embd": 32, "n_head": 4, "n_layer": 1, "vocab_size": 64, "rotary_dim": 4}
  (hf / "config.json").write_text(json.dumps(config))
  save_file({"transformer.wte.weight": np.ones((64, 32), np.float32)}, str(hf / "model.safetensors"))
  data = (hf / "model.safetensors").read_bytes()
  (hf / "model.safetensors").write_bytes(data[: len(data) // 2])
  assert cli.main(["import", f"--hf={hf}", f"--model_dir={tmp_path}/run"]) == 2
  assert "model.safetensors" in _error(capsys)
  assert not (tmp_path / "run").exists()


def test_convert_skips_and_names_lone_surrogates_and_truncated_parquet(tmp_path, capsys):
  import pyarrow as pa
  import pyarrow.parquet as pq

  raw = tmp_path / "raw"
  raw.mkdir()
  lines = [json.dumps({"text": f"good {i}\n"}) for i in range(5)]
  lines.insert(2, '{"text": "bad \\ud800 surrogate"}')
  (raw / "a.jsonl").write_text("\n".join(lines) + "\n")
  pq.write_table(pa.table({"text": [f"row {i}\n" for i in range(50)]}), raw / "b.parquet")
  data = (raw / "b.parquet").read_bytes()
  (raw / "b.parquet").write_bytes(data[: len(data) // 2])
  out = tmp_path / "out"
  assert cli.main(["data", "convert", f"--input={raw}/*", f"--output_dir={out}"]) == 0
  printed = capsys.readouterr().out
  assert "a.jsonl:3" in printed and "not valid Unicode" in printed
  assert "unreadable Parquet" in printed and "b.parquet" in printed
  stats = json.loads((out / "stats.json").read_text())
  assert sum(stats["written"].values()) == 5 and stats["skipped"]["unreadable Parquet"] == 1


def test_train_tokenizer_refuses_to_replace_a_model_unasked(tmp_path, local_corpus, capsys):
  model = tmp_path / "spm.model"
  model.write_bytes(b"an earlier model")
  argv = ["data", "train-tokenizer", f"--corpus_dir={local_corpus}", f"--output={model}", "--vocab_size=600"]
  assert cli.main(argv) == 2
  assert "pass --overwrite" in _error(capsys)
  assert model.read_bytes() == b"an earlier model"


@pytest.mark.slow
def test_train_tokenizer_survives_a_document_without_spaces_longer_than_sentencepiece_allows(tmp_path):
  # A data file of short lines with no space is one 70,000-character "word" to SentencePiece, whose BPE
  # trainer ends the whole process (exit 255) on a word of over 65,535 symbols: README's main command
  # died that way on a machine whose files included one. It runs in a subprocess so a regression fails
  # this test instead of killing the test worker.
  from jaxformer.data.ingest import corpus

  root = tmp_path / "root"
  root.mkdir()
  (root / "ids.txt").write_text("".join(f"/m/0{i:05x}\n" for i in range(7000)))
  for i in range(40):
    (root / f"mod{i}.py").write_text(f"def f{i}(x):\n    return x + {i}\n" * 20)
  corpus.build_local_corpus(
    str(tmp_path / "corpus"), roots=[str(root)], options=corpus.CorpusOptions(validation_percent=0)
  )
  model = tmp_path / "spm.model"
  argv = [f"--corpus_dir={tmp_path / 'corpus'}", f"--output={model}", "--vocab_size=600"]
  result = subprocess.run(
    [train_util.JAXFORMER, "data", "train-tokenizer", *argv],
    capture_output=True,
    text=True,
    env=train_util.env(),
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  import sentencepiece as spm

  text = (root / "ids.txt").read_text()
  tokenizer = spm.SentencePieceProcessor(model_file=str(model))
  assert tokenizer.decode(tokenizer.encode(text)) == text
