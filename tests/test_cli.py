"""The jaxformer command: gin flags, search paths, clear errors, and `plan`."""

import glob
import json
import os
import subprocess
import sys
import time

import pytest

from jaxformer import cli, plan
from jaxformer.models import ModelConfig

SIZES = {  # DESIGN.md: exactly HF CodeGenForCausalLM's parameter counts.
  "codegen2_1b": 1_015_306_240,
  "codegen2_3_7b": 3_641_174_016,
  "codegen2_7b": 6_862_858_240,
  "codegen2_16b": 16_032_155_648,
}


def _last_json(capsys, text=None):
  text = capsys.readouterr().out if text is None else text
  return json.loads(text.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(SIZES))
def test_plan_counts_codegen2_sizes_exactly(name, capsys):
  assert cli.main(["plan", f"--gin_file=models/{name}.gin", "--json"]) == 0
  report = _last_json(capsys)
  assert report["params"] == SIZES[name]
  assert report["adam_state_bytes"] == 8 * SIZES[name]


# The Llama-family sizes (their gin files cite the published config.json), counted by transformers' own model
# built from the config.json our export writes for them, on the meta device (nothing allocated).
LLAMA_SIZES = (
  "codegen25_7b",
  "starcoder2_3b",
  "starcoder2_7b",
  "starcoder2_15b",
  "qwen25_coder_1_5b",
  "qwen25_coder_7b",
  "../published/maxtext_16b_v5e_256",  # head_dim 128 on a width of 4096 with 64 heads (LlamaConfig.head_size)
)


@pytest.mark.parametrize("name", LLAMA_SIZES)
def test_plan_counts_llama_family_sizes_as_transformers_does(name, capsys):
  import torch
  import transformers

  from jaxformer import config as config_lib
  from jaxformer import models

  no_tpu = "--gin.plan.tpu_plan.topology=None"  # the published files name a topology: count, do not compile
  assert cli.main(["plan", f"--gin_file=models/{name}.gin", no_tpu, "--json"]) == 0
  report = _last_json(capsys)
  config_lib.parse_gin([f"models/{name}.gin"], finalize=False)
  config = models.bound()
  hf = config.hf.hf_config(config, 0, 0, 0, "bfloat16")
  hf_config = transformers.AutoConfig.for_model(hf.pop("model_type"), **hf)
  with torch.device("meta"):
    model = transformers.AutoModelForCausalLM.from_config(hf_config)
  assert report["params"] == sum(p.numel() for p in model.parameters())
  assert report["model"]["family"] == "llama" and report["adam_state_bytes"] == 8 * report["params"]


def test_plan_flops_follow_the_stated_accountings(capsys):
  assert (
    cli.main(["plan", "--gin_file=models/tiny.gin", "--gin.ModelConfig.num_layers=3", "--length=256", "--json"]) == 0
  )
  report = _last_json(capsys)
  d, layers, vocab = 128, 3, 2048
  n = layers * 12 * d * d + d * vocab
  assert report["flops_per_token_6n"] == 6 * n
  assert report["flops_per_token_with_attention"] == 6 * n + 6 * layers * 256 * d


def test_gin_file_found_through_search_path_from_any_directory(tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert cli.main(["plan", "--gin_file=models/codegen2_1b.gin", "--json"]) == 0
  assert _last_json(capsys)["params"] == SIZES["codegen2_1b"]
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "small.gin").write_text("include 'models/tiny.gin'\nModelConfig.num_layers = 1\n")
  assert cli.main(["plan", "--gin_search_paths=mine", "--gin_file=small.gin", "--json"]) == 0
  assert _last_json(capsys)["model"]["num_layers"] == 1


def test_bad_binding_names_the_binding(capsys):
  assert cli.main(["plan", "--gin_file=models/tiny.gin", "--gin.ModelConfig.num_layrs=3"]) == 2
  err = capsys.readouterr().err
  assert "--gin.ModelConfig.num_layrs=3" in err and "num_layrs" in err


def test_bad_gin_file_names_file_and_line(tmp_path, capsys):
  bad = tmp_path / "bad.gin"
  bad.write_text("ModelConfig.num_layers = 2\n\nModelConfig.heads = 4\n")
  assert cli.main(["plan", f"--gin_file={bad}"]) == 2
  err = capsys.readouterr().err
  assert str(bad) in err and "line 3" in err and "ModelConfig.heads" in err
  bad.write_text("ModelConfig.num_layers = (2,\n")
  assert cli.main(["plan", f"--gin_file={bad}"]) == 2
  assert "syntax error" in capsys.readouterr().err
  assert cli.main(["plan", "--gin_file=models/none.gin"]) == 2
  assert "models/none.gin" in capsys.readouterr().err


def test_inconsistent_values_fail_with_the_binding_names(capsys):
  assert cli.main(["plan", "--gin_file=models/tiny.gin", "--gin.ModelConfig.d_model=130"]) == 2
  assert "ModelConfig.d_model=130" in capsys.readouterr().err


@pytest.mark.slow
def test_console_script_runs_from_another_directory(tmp_path):
  exe = os.path.join(os.path.dirname(sys.executable), "jaxformer")
  out = subprocess.run(
    [exe, "plan", "--gin_file=models/codegen2_16b.gin", "--json"],
    cwd=tmp_path,
    capture_output=True,
    text=True,
    check=True,
    timeout=120,
  )
  assert json.loads(out.stdout.strip().splitlines()[-1])["params"] == SIZES["codegen2_16b"]


def test_eval_shape_count_matches_closed_form():
  config = ModelConfig(vocab_size=51200, num_layers=16, d_model=2048, num_heads=16, rotary_dim=64)
  d, v = 2048, 51200
  per_layer = 2 * d + 12 * d * d + 4 * d + d  # ln, qkv+out+mlp kernels, mlp biases
  assert plan.count_params(config) == v * d + 16 * per_layer + 2 * d + d * v + v


@pytest.mark.slow
def test_bench_prints_speed_mfu_labels_and_memory_and_profiles(capsys, tmp_path):
  flags = ["--steps=2", "--batch_size=8", "--length=64", f"--profile_dir={tmp_path}", "--json"]
  assert cli.main(["bench", "--gin_file=models/tiny.gin", *flags]) == 0
  out = capsys.readouterr().out
  report = _last_json(capsys=None, text=out)
  assert report["tokens_per_second"] > 0 and report["step_seconds"] > 0
  assert report["mfu_6n"] is None and "MFU: 6N n/a, 6N + causal attention n/a" in out  # CPU
  assert report["peak_memory_bytes"] > 0 and "peak memory" in out
  assert report["loop_step_seconds"] > 0 and 0 <= report["host_overhead_share"] < 1 and "host overhead" in out
  assert glob.glob(str(tmp_path / "plugins" / "profile" / "*" / "*.xplane.pb")) and "profile of 2 more steps" in out


def test_decode_bench_reports_both_implementations(capsys):
  assert (
    cli.main(
      [
        "bench",
        "--decode",
        "--compare_hf",
        "--gin_file=models/tiny.gin",
        "--decode_batch_sizes=1,2",
        "--prompt_length=8",
        "--max_new_tokens=8",
        "--gin.ModelConfig.num_layers=1",
        "--json",
      ]
    )
    == 0
  )
  report = _last_json(capsys)
  assert set(report["jaxformer"]) == {"1", "2"} and set(report["hf"]) == {"1", "2"}
  assert all(v > 0 for v in list(report["jaxformer"].values()) + list(report["hf"].values()))


def test_the_bench_path_imports_no_tensorflow():
  # GPU machines without TensorFlow or seqio run `bench` from source (docs/PERFORMANCE.md).
  code = "import sys, jaxformer.train.bench; print(sorted(m for m in ('tensorflow', 'seqio') if m in sys.modules))"
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
  assert result.stdout.strip() == "[]", result.stdout


QUIET_THEN_ABORT = """
import os
from jaxformer.cli import quiet
quiet.quiet_stderr()
for i in range(3000):
    os.write(2, b"line %d\\n" % i)
os.write(2, b"normalizer.cc(51) LOG(INFO) chatter\\n")
os.write(2, b"F0000 check failed: the reason it stopped\\n")
os.abort()
"""


def test_stderr_filter_keeps_every_line_when_the_process_is_ended_at_once(tmp_path):
  # A C++ CHECK or LOG(FATAL) ends the process without Python's shutdown; its last lines say why.
  log = tmp_path / "stderr.log"
  with open(log, "wb") as f:
    process = subprocess.run([sys.executable, "-c", QUIET_THEN_ABORT], stderr=f, timeout=60)
  assert process.returncode < 0  # SIGABRT
  deadline = time.time() + 10
  while b"the reason it stopped" not in log.read_bytes() and time.time() < deadline:
    time.sleep(0.05)  # the forwarding process writes what the pipe still held
  lines = log.read_bytes().splitlines()
  assert lines[:3000] == [b"line %d" % i for i in range(3000)]
  assert lines[3000:] == [b"F0000 check failed: the reason it stopped"]  # the chatter dropped


def test_old_flag_spellings_still_work_with_a_warning(capsys):
  from jaxformer.cli import build_parser

  args = build_parser().parse_args(["bench", "--decode", "--new_tokens=7"])
  assert args.max_new_tokens == 7 and "--new_tokens is now --max_new_tokens" in capsys.readouterr().err
  args = build_parser().parse_args(["data", "bench", "--batches=3"])
  assert args.num_batches == 3 and "--batches is now --num_batches" in capsys.readouterr().err
  args = build_parser().parse_args(["export", "--model_dir=x", "--output=y"])
  assert args.output_dir == "y" and "--output is now --output_dir" in capsys.readouterr().err
  assert cli.main(["export", "--model_dir=x"]) == 2 and "--output_dir is required" in capsys.readouterr().err
