"""Fine-tuning: instruction records, completion-only loss, LoRA (exact at B = 0, base frozen, merge), and the
whole path as a user runs it: base run -> LoRA fine-tune -> exact match -> merged and PEFT exports."""

import dataclasses
import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import train_util
from model_util import random_tokens

from jaxformer.models import LlamaConfig, ModelConfig, param_shapes
from jaxformer.models.common import lora

CODEGEN = ModelConfig(vocab_size=97, num_layers=2, d_model=32, num_heads=4, rotary_dim=4, dtype="float32")
LLAMA = LlamaConfig(vocab_size=97, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, dtype="float32")


def _init(config, seed=0):
  import flax.linen as nn

  params = nn.unbox(config.module().init(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32))["params"])
  return lora.split(params) if config.lora else ({}, params)


@pytest.mark.parametrize("config", [CODEGEN, LLAMA], ids=["codegen", "llama"])
@pytest.mark.slow
def test_adapters_start_exact_and_merge_into_the_plain_model(config):
  adapted = config.replace(lora=lora.LoraConfig(rank=4, alpha=8.0))
  adapters, base = _init(adapted)
  assert set(lora.target_names(base)) <= {"qkv", "out", "fc_in", "fc_out", "q", "k", "v", "o", "gate", "up", "down"}
  tokens = jnp.asarray(random_tokens(config, 2, 16))
  plain = jax.jit(lambda p: config.module().apply({"params": p}, tokens))
  with_adapters = jax.jit(lambda p: adapted.module().apply({"params": p}, tokens))
  # lora_b starts at zero: the first forward is the base model's, bit for bit.
  np.testing.assert_array_equal(with_adapters(lora.combine(base, adapters)), plain(base))
  trained = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape), adapters)
  whole = lora.combine(base, trained)
  out = with_adapters(whole)
  assert float(jnp.max(jnp.abs(out - plain(base)))) > 0.05  # the adapters do something
  np.testing.assert_allclose(plain(lora.merge(whole, adapted.lora)), out, atol=1e-5)
  host = jax.tree.map(np.asarray, whole)
  np.testing.assert_allclose(plain(lora.merge(host, adapted.lora, xp=np)), out, atol=1e-5)


def test_bad_lora_settings_name_the_binding():
  with pytest.raises(ValueError, match=r"targets=\['wq'\]: \['wq'\] name no projection of the llama family"):
    bad = LLAMA.replace(lora=lora.LoraConfig(targets=("wq",)))
    lora.check(bad, param_shapes(bad))
  with pytest.raises(ValueError, match="rank=64 is above the q projection's dimensions"):
    bad = LLAMA.replace(lora=lora.LoraConfig(targets=("q",), rank=64))
    lora.check(bad, param_shapes(bad))
  with pytest.raises(ValueError, match="LoraConfig.dropout=1.5"):
    lora.LoraConfig(dropout=1.5)


@pytest.mark.slow
def test_a_lora_step_trains_the_adapters_alone():
  """Only adapter parameters change; the base stays bit-identical and has no optimizer state."""
  from jaxformer import sharding
  from jaxformer.train import setup as setup_lib
  from jaxformer.train.step import StepConfig

  config = LLAMA.replace(lora=lora.LoraConfig(rank=4, dropout=0.1))
  mesh = sharding.make_mesh(mesh_shape=(2, 2, 2))
  setup = setup_lib.build(config, StepConfig(), total_steps=10, mesh=mesh, warmup_steps=1)
  state = setup.init_state(jax.random.key(0))
  base_before = jax.tree.map(np.asarray, state.frozen)
  adapters_before = jax.tree.map(np.asarray, state.params)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.frozen))  # the compute dtype (float32 here)
  adapter_elements = sum(x.size for x in jax.tree.leaves(state.params))
  moment_elements = sum(x.size for x in jax.tree.leaves(state.opt_state) if x.ndim > 0)
  assert moment_elements == 2 * adapter_elements  # Adam's two moments of the adapters, none of the base
  tokens = random_tokens(config, 8, 16)
  batch = {
    "decoder_input_tokens": tokens,
    "decoder_target_tokens": np.roll(tokens, -1, axis=1),
    "decoder_loss_weights": np.ones_like(tokens),
    "decoder_segment_ids": np.ones_like(tokens),
    "decoder_positions": np.broadcast_to(np.arange(16), tokens.shape).astype(np.int32),
    "decoder_causal_attention": np.zeros_like(tokens),
  }
  for _ in range(2):  # the first step moves lora_a only (lora_b was 0), the second both
    state, metrics = setup.train_step(state, setup.global_batch(batch))
  assert bool(metrics["finite"])
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state.frozen), base_before)
  changed = jax.tree.map(lambda a, b: not np.array_equal(np.asarray(a), b), state.params, adapters_before)
  assert all(jax.tree.leaves(changed)), changed


CHATML = (
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
  "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _jsonl(path, records):
  with open(path, "w") as f:
    for record in records:
      f.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
  return str(path)


def test_convert_instructions_counts_skips_and_renders_chat_templates(tmp_path):
  """Bad records are skipped by reason with FILE:LINE; chat records render as transformers renders them."""
  import codegen2_artifacts
  import transformers

  from jaxformer.data.ingest import instructions
  from jaxformer.errors import UserError

  vocabulary = codegen2_artifacts.build_tokenizer(str(tmp_path / "tok"))
  with open(tmp_path / "tok" / "tokenizer_config.json", "w") as f:
    json.dump({"chat_template": CHATML, "eos_token": "<|endoftext|>"}, f)
  chat = [{"role": "user", "content": "add 2 and 3"}, {"role": "assistant", "content": "5"}]
  records = [
    {"prompt": "def f():\n", "completion": "  return 1\n"},
    {"messages": chat},
    "{not json",
    {"prompt": "x"},
    {"prompt": "x", "completion": "   "},
    {"messages": [{"role": "user", "content": "hi"}]},
    {"prompt": "y" * 3000, "completion": "z"},
  ]
  source = _jsonl(tmp_path / "sft.jsonl", records)
  with open(source, "ab") as f:
    f.write(b'{"prompt": "\xff", "completion": "a"}\n')  # not UTF-8
    f.write(b'{"prompt": "\\ud800", "completion": "a"}\n')  # JSON's escape of a lone surrogate
  options = instructions.InstructionOptions(max_length=256, validation_percent=0)
  stats = instructions.convert_instructions(source, str(tmp_path / "out"), vocabulary, options)
  assert stats["records"] == {"train": 2, "validation": 0}
  assert stats["skipped"] == {
    "not JSON": 1,
    "no 'prompt' and 'completion', or 'messages'": 1,
    "empty completion": 1,
    "the last message is not the assistant's": 1,
    "longer than the context (256 tokens)": 1,
    "not UTF-8": 1,
    "not valid Unicode (a lone surrogate)": 1,
  }
  assert stats["first_skipped"]["not JSON"] == f"{source}:3"
  assert stats["template"].startswith("chat_template")
  from jaxformer.evals.exact_match import read_records

  (_, _), (prompt, completion) = read_records(str(tmp_path / "out"), "train", 10)
  hf = transformers.PreTrainedTokenizerFast(tokenizer_file=vocabulary, chat_template=CHATML)
  expected_prompt = hf.apply_chat_template(chat[:1], add_generation_prompt=True, tokenize=False)
  expected_whole = hf.apply_chat_template(chat, tokenize=False)
  assert hf.decode(prompt) == expected_prompt
  assert hf.decode(prompt + completion[:-1]) == expected_whole  # the completion, then EOS
  assert completion[-1] == hf.convert_tokens_to_ids("<|endoftext|>")

  with open(tmp_path / "tok" / "tokenizer_config.json", "w") as f:
    json.dump({"chat_template": "{{ raise_exception('no system role') }}"}, f)
  with pytest.raises(UserError, match=rf"{source}:2: the chat template fails on this record: no system role"):
    instructions.convert_instructions(source, str(tmp_path / "out2"), vocabulary, options)
  assert not os.path.exists(tmp_path / "out2")  # nothing half-written


def _pairs(task: str, count: int, seed: int):
  """'reverse: 3 1 4' -> '4 1 3', 'copy: 3 1 4' -> '3 1 4', 'shift: 3 1 9' -> '4 2 0'; 3 to 5 digits."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(count):
    xs = [str(v) for v in rng.integers(0, 10, rng.integers(3, 6))]
    answer = {"reverse": xs[::-1], "copy": xs, "shift": [str((int(x) + 1) % 10) for x in xs]}[task]
    out.append({"prompt": f"{task}: " + " ".join(xs) + "\n", "completion": " ".join(answer)})
  return out


@pytest.fixture(scope="session")
def pair_sets(local_corpus, once):
  """{task: folder} of 3,000 pairs each (reverse, copy, shift), converted with the session corpus's tokenizer."""
  from jaxformer.data.ingest import instructions

  vocabulary = os.path.join(local_corpus, "spm.model")

  def build(root):
    folders = {}
    for seed, task in enumerate(("reverse", "copy", "shift")):
      source = _jsonl(root / f"{task}.jsonl", _pairs(task, 3000, seed))
      folders[task] = str(root / task)
      instructions.convert_instructions(
        source, folders[task], vocabulary, instructions.InstructionOptions(max_length=128)
      )
    return folders

  return once("pair_sets", build), vocabulary


@pytest.fixture(scope="session")
def reverse_pairs(pair_sets):
  folders, vocabulary = pair_sets
  return folders["reverse"], vocabulary


def test_instruction_batches_put_the_loss_on_completions(reverse_pairs, local_corpus):
  """Packed rows: each example its own segment, the loss on its completion and EOS only (the prompt's too
  with prompt_loss), and prompts never bidirectional."""
  import gin

  from jaxformer import tasks
  from jaxformer.data import pipeline
  from jaxformer.tasks import corpora, instructions  # noqa: F401 (their configurables)

  folder, vocabulary = reverse_pairs
  shares = {}
  for prompt_loss in (False, True):
    gin.clear_config()
    gin.bind_parameter("tasks.register_configured.vocabulary_path", vocabulary)
    gin.bind_parameter("tasks.register_configured.instruction_tasks", {"sft": folder})
    gin.bind_parameter("tasks.instruction_loss.prompt_loss", prompt_loss)
    vocab = tasks.ensure_registered("sft")
    config = pipeline.DataConfig(mixture_or_task_name="sft", task_feature_lengths={"targets": 128}, batch_size=4)
    batch = next(iter(pipeline.get_dataset(config, split="train", shuffle=False).as_numpy_iterator()))
    assert not batch["decoder_causal_attention"].any()
    row = 0
    segments = batch["decoder_segment_ids"][row]
    assert segments.max() >= 3  # several examples packed in a row
    targets, weights = batch["decoder_target_tokens"][row], batch["decoder_loss_weights"][row]
    first = targets[segments == 1]
    text = vocab.decode([int(t) for t in first if t != vocab.eos_id])
    assert text.startswith("reverse:")
    weighted = vocab.decode([int(t) for t, w in zip(first, weights[segments == 1]) if w and t != vocab.eos_id])
    digits = text.split("\n")[0].removeprefix("reverse:").split()
    if prompt_loss:
      assert weighted == text
    else:
      assert weighted.split() == digits[::-1]  # the completion alone
      assert targets[segments == 1][weights[segments == 1] > 0][-1] == vocab.eos_id
    shares[prompt_loss] = weights.sum() / (segments > 0).sum()
  assert shares[True] > 2 * shares[False]
  instructions.check_lengths("sft", 128)
  with pytest.raises(ValueError, match=r"converted for records of up to 128 tokens .* TASK_FEATURE_LENGTHS"):
    instructions.check_lengths("sft", 64)  # rows shorter than the records would cut their completions


def _finetune_flags(
  base_dir, folder, vocabulary, steps, run_gin="runs/finetune_lora.gin", model_gin="models/tiny.gin", log_period=1
):
  """A fine-tune of the tiny model on 8 x 128-token rows; LoRA: rank 32, alpha 32, no dropout, peak 1e-2.
  Train metrics every log_period steps: every step for the checks that read each loss; a run judged by its
  exact match alone logs every 10, which lets the host run ahead of the device (a fifth of a 200-step run)."""
  lora_flags = [
    "--gin.optimizer.learning_rate_schedule.peak=1e-2",
    "--gin.models.LoraConfig.dropout=0.0",
    "--gin.models.LoraConfig.rank=32",
    "--gin.models.LoraConfig.alpha=32.0",
  ]
  return [
    f"--gin_file={model_gin}",
    f"--gin_file={run_gin}",
    f"--gin.BASE_DIR='{base_dir}'",
    f"--gin.INSTRUCTIONS_DIR='{folder}'",
    f"--gin.VOCABULARY='{vocabulary}'",
    f"--gin.TRAIN_STEPS={steps}",
    "--gin.BATCH_SIZE=8",
    "--gin.TASK_FEATURE_LENGTHS={'targets': 128}",
    f"--gin.CHECKPOINT_PERIOD={max(steps // 4, 1)}",
    "--gin.EVAL_PERIOD=0",
    "--gin.train.train.final_eval=False",
    "--gin.train.train.progress=False",
    f"--gin.train.train.log_period={log_period}",
    f"--gin.optimizer.learning_rate_schedule.warmup_steps={min(10, steps - 1)}",
    *(lora_flags if "lora" in run_gin else ["--gin.optimizer.learning_rate_schedule.peak=3e-3"]),
  ]


def _exact_match(model_dir, folder):
  code, out, err = train_util.cli("eval", "exact-match", f"--model_dir={model_dir}", f"--data_dir={folder}", "--json")
  assert code == 0, err
  return json.loads(out.strip().splitlines()[-1])["exact_match"]


def _checksums(model_dir):
  out = {}
  for root, _, files in os.walk(model_dir):
    for name in files:
      with open(os.path.join(root, name), "rb") as f:
        out[os.path.relpath(os.path.join(root, name), model_dir)] = hash(f.read())
  return out


@pytest.fixture(scope="session")
def copy_run(tiny_run, pair_sets, once):
  """A full fine-tune of the base on 'copy' pairs (200 steps): a base that answers in digits and stops."""
  folders, vocabulary = pair_sets

  def build(out):
    model_dir = str(out / "run")
    before = _checksums(tiny_run)
    flags = _finetune_flags(
      tiny_run, folders["copy"], vocabulary, steps=200, run_gin="runs/finetune.gin", log_period=10
    )
    assert train_util.run_here(model_dir, flags) == 0, train_util.log_text(model_dir)
    assert _checksums(tiny_run) == before  # the base run is only read
    return model_dir

  return once("finetune_copy", build)


@pytest.mark.slow
def test_full_finetune_learns_the_task(tiny_run, copy_run, pair_sets):
  folders, _ = pair_sets
  base_score, tuned_score = _exact_match(tiny_run, folders["copy"]), _exact_match(copy_run, folders["copy"])
  print(f"copy, exact match: base {base_score:.3f}, full fine-tune {tuned_score:.3f}")
  assert base_score == 0.0 and tuned_score >= 0.15


@pytest.mark.slow
def test_lora_finetune_learns_and_exports_to_hf_and_peft(copy_run, pair_sets, tmp_path):
  """LoRA on the copy model learns to shift each digit by one; its merged and PEFT exports are the model it
  trained. (Reversal needs a new attention pattern: rank-32 adapters on this tiny model learnt it in one
  seed and not in another, so the check uses a task whose pattern the base already has.)"""
  import peft
  import torch
  import transformers

  folders, vocabulary = pair_sets
  folder = folders["shift"]
  before = _checksums(copy_run)
  model_dir = str(tmp_path / "lora")
  flags = _finetune_flags(copy_run, folder, vocabulary, steps=200, log_period=10)
  assert train_util.run_here(model_dir, flags) == 0, train_util.log_text(model_dir)
  assert _checksums(copy_run) == before  # the base run is only read
  pointer = json.load(open(os.path.join(model_dir, "base.json")))
  assert pointer["model_dir"] == copy_run and pointer["lora"]["rank"] == 32
  # The checkpoint holds the adapters: a fraction of the base's bytes.
  size = lambda d: sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)
  assert size(os.path.join(model_dir, "checkpoints", "200", "state")) < 0.5 * size(
    os.path.join(copy_run, "checkpoints", "200", "state")
  )
  base_score, tuned_score = _exact_match(copy_run, folder), _exact_match(model_dir, folder)
  print(f"shift, exact match: copy model {base_score:.3f}, LoRA fine-tune {tuned_score:.3f}")
  assert base_score <= 0.02 and tuned_score >= 0.1

  merged, adapters, hf_base = (str(tmp_path / n) for n in ("merged", "adapters", "hf_base"))
  for args in (
    (f"--model_dir={model_dir}", f"--output_dir={merged}", "--merge"),
    (f"--model_dir={model_dir}", f"--output_dir={adapters}", "--adapters_only", f"--base_model={hf_base}"),
    (f"--model_dir={copy_run}", f"--output_dir={hf_base}"),
  ):
    code, _, err = train_util.cli("export", *args)
    assert code == 0, err
  code, _, err = train_util.cli("export", f"--model_dir={model_dir}", f"--output_dir={tmp_path / 'x'}")
  assert code == 2 and "is a LoRA run: pass --merge" in err
  code, _, err = train_util.cli(
    "export", f"--model_dir={model_dir}", f"--output_dir={tmp_path / 'x'}", "--adapters_only"
  )
  assert code == 2 and "--adapters_only needs --base_model" in err

  # Merged HF weights against our adapters applied (jaxformer's own forward, float32).
  import gin

  from jaxformer.cli import common
  from jaxformer.infer.run import load_run

  args = type("Args", (), {"gin_file": [], "gin_search_paths": None, "model_dir": model_dir})()
  common.parse_run_gin(model_dir, args, [])
  from jaxformer import config as config_lib
  from jaxformer import models

  config = config_lib.call_configurable(models.bound)
  assert config.lora is not None
  run = load_run(model_dir, config)
  gin.clear_config()
  tokens = random_tokens(config, 2, 24)
  ours = np.asarray(jax.jit(lambda p, t: run.model.apply({"params": p}, t))(run.params, tokens))
  hf_merged = transformers.AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
  with torch.no_grad():
    theirs = hf_merged(torch.from_numpy(tokens).long()).logits.numpy()
  assert np.max(np.abs(ours - theirs)) < 1e-4
  # PEFT's adapter directory on the exported base: the merged model's logits.
  on_base = peft.PeftModel.from_pretrained(
    transformers.AutoModelForCausalLM.from_pretrained(hf_base, dtype=torch.float32), adapters
  ).eval()
  with torch.no_grad():
    peft_logits = on_base(torch.from_numpy(tokens).long()).logits.numpy()
  assert np.max(np.abs(peft_logits - theirs)) < 1e-4


@pytest.mark.slow
def test_lora_finetune_resumes_exactly_and_refuses_a_changed_base(tiny_run, reverse_pairs, tmp_path):
  import shutil

  folder, vocabulary = reverse_pairs
  base = str(tmp_path / "base")
  shutil.copytree(tiny_run, base)  # this test changes its base afterwards
  flags = _finetune_flags(base, folder, vocabulary, steps=12)
  log = train_util.assert_sigkill_then_restart_matches(tmp_path, flags, steps=12, kill_after=6)
  assert "restored step" in log
  # A base that changed under the adapters is refused, naming both digests.
  runs = [os.path.dirname(p) for p in glob.glob(str(tmp_path / "**" / "base.json"), recursive=True)]
  assert runs
  # Resuming with another base than the one the run recorded is refused.
  other = _finetune_flags(tiny_run, folder, vocabulary, steps=14)
  code, _, err = train_util.cli("train", f"--model_dir={runs[0]}", *other)
  assert code == 2 and f"was fine-tuned from {base} step 4" in err, err
  with open(os.path.join(base, "checkpoints", "4", "checksums.json"), "a") as f:
    f.write(" ")
  code, _, err = train_util.cli("eval", "exact-match", f"--model_dir={runs[0]}", f"--data_dir={folder}")
  assert code == 2 and "which has sha256" in err and "holds adapters of the base" in err, err


@pytest.mark.slow
def test_finetune_bad_bases_are_one_line_errors(tiny_run, reverse_pairs, tmp_path):
  folder, vocabulary = reverse_pairs
  cases = [
    (str(tmp_path / "nowhere"), "models/tiny.gin", "holds no checkpoint"),
    (tiny_run, "models/llama_tiny.gin", "is a codegen model; this run's LlamaConfig is a llama model"),
  ]
  for base, model_gin, message in cases:
    flags = _finetune_flags(base, folder, vocabulary, steps=2, model_gin=model_gin)
    code, _, err = train_util.cli("train", f"--model_dir={tmp_path / 'run'}", *flags)
    assert code == 2 and message in err, err
  flags = _finetune_flags(tiny_run, folder, vocabulary, steps=2) + ["--gin.models.LoraConfig.targets=('wq',)"]
  code, _, err = train_util.cli("train", f"--model_dir={tmp_path / 'run2'}", *flags)
  assert code == 2 and "name no projection of the codegen family" in err, err


def test_finetune_gins_pass_plan():
  """runs/finetune_lora.gin as shipped, on CodeGen2-1B: rank-16 adapters on every projection train, the base
  is counted in its compute dtype (bfloat16) and only the adapters in the optimizer."""
  code, out, err = train_util.cli(
    "plan", "--gin_file=models/codegen2_1b.gin", "--gin_file=runs/finetune_lora.gin", "--json"
  )
  assert code == 0, err
  report = json.loads(out.strip().splitlines()[-1])
  d, mlp, layers, rank = 2048, 8192, 16, 16
  per_layer = rank * ((d + 3 * d) + (d + d) + 2 * (d + mlp))  # qkv, out, fc_in, fc_out
  assert report["trainable_params"] == layers * per_layer
  assert report["frozen_bytes"] == 2 * (report["params"] - report["trainable_params"])
  assert report["adam_state_bytes"] == 2 * 4 * report["trainable_params"]
  assert "trainable (LoRA adapters)" in out


def test_dataclass_configs_round_trip_with_lora():
  """A checkpoint's saved settings (dataclasses.asdict) rebuild the LoRA config (resume checks read them)."""
  config = LLAMA.replace(lora=lora.LoraConfig(targets=("q", "v"), rank=2))
  again = LlamaConfig(**dataclasses.asdict(config))
  assert again == config and again.lora.targets == ("q", "v")


def test_convert_instructions_flags_default_to_the_options():
  """The CLI writes InstructionOptions' defaults out (so --help imports no TensorFlow): they must agree."""
  import argparse

  from jaxformer.cli import data
  from jaxformer.data.ingest.instructions import InstructionOptions

  parser = argparse.ArgumentParser()
  data.instructions_args(parser)
  flags = vars(parser.parse_args(["--input=x", "--output_dir=y", "--vocabulary=z"]))
  assert {k: flags[k] for k in dataclasses.asdict(InstructionOptions())} == dataclasses.asdict(InstructionOptions())


@pytest.mark.parametrize(
  "config",
  [
    CODEGEN,
    LlamaConfig(vocab_size=97, num_layers=2, d_model=64, num_heads=4, num_kv_heads=2, head_size=24, dtype="float32"),
  ],
  ids=["codegen", "llama_gqa_head_dim"],
)
@pytest.mark.slow
def test_peft_adapters_load_onto_the_hf_base_of_each_family(config, tmp_path):
  """Adapters of every family (CodeGen's grouped qkv_proj; Llama's q/k/v/o with grouped-query heads and a
  head_dim other than d_model / heads) land where PEFT reads them: the HF base plus them equals the merged
  export and our forward with the adapters applied."""
  import peft
  import torch
  import transformers

  from jaxformer.export import lora as lora_export
  from jaxformer.export import to_hf

  adapted = config.replace(lora=lora.LoraConfig(rank=4, alpha=8.0))
  adapters, base = _init(adapted)
  adapters = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(2), x.shape), adapters)
  whole = jax.tree.map(np.asarray, lora.combine(base, adapters))
  to_hf.export_in_memory(jax.tree.map(np.asarray, base), config, str(tmp_path / "base"))
  merged, plain = lora_export.merged(whole, adapted)
  to_hf.export_in_memory(merged, plain, str(tmp_path / "merged"))
  lora_export.export_adapters(whole, adapted, str(tmp_path / "adapters"), str(tmp_path / "base"))
  tokens = random_tokens(config, 2, 12)
  ours = np.asarray(jax.jit(lambda p: adapted.module().apply({"params": p}, tokens))(whole))
  load = lambda d: transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
  with torch.no_grad():
    hf_merged = load(str(tmp_path / "merged"))(torch.from_numpy(tokens).long()).logits.numpy()
    on_base = peft.PeftModel.from_pretrained(load(str(tmp_path / "base")), str(tmp_path / "adapters")).eval()
    hf_peft = on_base(torch.from_numpy(tokens).long()).logits.numpy()
  assert np.max(np.abs(hf_merged - ours)) < 1e-4
  assert np.max(np.abs(hf_peft - ours)) < 1e-4
  assert np.max(np.abs(ours - np.asarray(config.module().apply({"params": base}, tokens)))) > 1e-2
