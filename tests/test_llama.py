"""The Llama family against transformers' own LlamaForCausalLM, Qwen2ForCausalLM and Starcoder2ForCausalLM:
random models built offline from their config classes, with the variants real checkpoints use (GQA and
MQA, q/k/v biases, a head_dim other than hidden / heads, LayerNorm with biases and GELU, tied and untied
embeddings, rope_theta != 10000, a llama3 rope_scaling entry, a sliding window shorter than the sequence),
imported, compared, exported back."""

import json
import os

import jax
import numpy as np
import pytest
import torch
import transformers

from jaxformer import checkpoint, cli, sharding
from jaxformer.export import from_hf, to_hf
from jaxformer.infer.sample import generate

VOCAB = 96
COMMON = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, max_position_embeddings=128)
CASES = {
  "llama_gqa_llama3_rope": (
    transformers.LlamaConfig,
    dict(
      intermediate_size=96,
      num_attention_heads=8,
      num_key_value_heads=2,
      rope_theta=50000.0,
      rope_scaling={
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32,
      },
      tie_word_embeddings=False,
    ),
  ),
  "llama_linear_rope_biases": (
    transformers.LlamaConfig,
    dict(
      intermediate_size=96,
      num_attention_heads=4,
      num_key_value_heads=4,
      head_dim=24,  # 4 x 24 = 96 wide against hidden 64, as MaxText's scaled models and Gemma
      rope_scaling={"rope_type": "linear", "factor": 2.0},
      attention_bias=True,
      mlp_bias=True,
    ),
  ),
  "qwen2_mqa_tied": (
    transformers.Qwen2Config,
    dict(intermediate_size=96, num_attention_heads=4, num_key_value_heads=1, rope_theta=1e6, tie_word_embeddings=True),
  ),
  "starcoder2_window": (
    transformers.Starcoder2Config,
    dict(
      intermediate_size=128,
      num_attention_heads=4,
      num_key_value_heads=2,
      rope_theta=100000.0,
      sliding_window=8,  # shorter than the sequences below: the window is exercised
      attention_dropout=0.0,
      residual_dropout=0.0,
      embedding_dropout=0.0,
    ),
  ),
}


def _hf_model(name, folder):
  config_class, fields = CASES[name]
  torch.manual_seed(sorted(CASES).index(name))
  config = config_class(**COMMON, **fields)
  model = transformers.AutoModelForCausalLM.from_config(config).eval()
  with torch.no_grad():
    for p in model.parameters():  # HF initialises norms to 1 and biases to 0: make every tensor matter
      p.add_(torch.randn_like(p) * 0.05)
  model.save_pretrained(folder)
  return model


def _hf_logits(model, tokens):
  with torch.no_grad():
    return model(torch.from_numpy(tokens).long()).logits.numpy()


def _run_params(run: str, config):
  abstract, _ = sharding.sharded_param_shapes(config, sharding.make_mesh((1, -1, 1)), sharding.logical_axis_rules())
  return checkpoint.restore_params(run, abstract)[0]


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.slow
def test_hf_checkpoints_import_with_the_same_logits_and_greedy_tokens_and_export_back_exactly(name, tmp_path, capsys):
  hf_model = _hf_model(name, tmp_path / "hf")
  run = str(tmp_path / "run")
  assert cli.main(["import", f"--hf={tmp_path / 'hf'}", f"--model_dir={run}"]) == 0
  assert "llama:" in capsys.readouterr().out
  config = from_hf.read_hf(str(tmp_path / "hf"))[0]
  params = _run_params(run, config)

  tokens = np.random.default_rng(1).integers(0, VOCAB, (2, 23)).astype(np.int32)
  model = config.module()
  ours = np.asarray(jax.jit(lambda p, t: model.apply({"params": p}, t))(params, tokens))
  assert np.abs(ours - _hf_logits(hf_model, tokens)).max() <= 1e-4

  prompt = tokens[0, :7].tolist()
  greedy = generate(model, params, [prompt], 14, stop_ids=(), bos_id=None)[0]
  hf_model.generation_config.eos_token_id = None  # greedy for all 14 tokens, as ours with no stop ids
  with torch.no_grad():
    hf_out = hf_model.generate(torch.tensor([prompt]), max_new_tokens=14, do_sample=False, pad_token_id=0)
  assert greedy == hf_out[0, len(prompt) :].tolist()

  # Back to HF: from_pretrained loads it as the same class, and a second import gives the same bits.
  out = to_hf.export_checkpoint(run, config, str(tmp_path / "back"), None)[0]
  again = transformers.AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
  assert type(again) is type(hf_model)
  assert np.abs(_hf_logits(again, tokens) - ours).max() <= 1e-4
  config_back, params_back, _ = from_hf.read_hf(out)
  assert config_back.replace(dtype=config.dtype) == config
  for a, b in zip(jax.tree.leaves(jax.device_get(params)), jax.tree.leaves(params_back)):
    assert np.array_equal(np.asarray(a), b)  # bit for bit


def test_unsupported_or_inconsistent_checkpoints_are_refused_by_name(tmp_path, capsys):
  folder = tmp_path / "hf"
  _hf_model("qwen2_mqa_tied", folder)
  config = json.load(open(folder / "config.json"))
  cases = [
    ({"model_type": "gpt_neox"}, "jaxformer imports ['codegen', 'llama', 'qwen2', 'starcoder2']"),
    ({"intermediate_size": 80}, "model.layers.*.mlp.gate_proj.weight gives shape (2, 64, 96)"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling.rope_type='yarn' is not supported"),
    ({"hidden_act": "relu"}, "hidden_act='relu'"),
    ({"head_dim": 15}, "head_dim=15 (LlamaConfig.head_size) must be even for rotary"),
  ]
  for i, (change, message) in enumerate(cases):
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    assert cli.main(["import", f"--hf={folder}", f"--model_dir={tmp_path}/run{i}"]) == 2, change
    err = capsys.readouterr().err
    assert message in err, (change, err)
    assert not os.path.exists(tmp_path / f"run{i}")


@pytest.mark.slow
def test_the_local_run_trains_samples_and_infills_on_a_llama_block_and_a_starcoder2_import_trains_on(
  local_corpus, tmp_path, capsys
):
  import train_util

  # The embedded run with the Llama family: CodeGen2's mixture (span corruption) on a Llama block.
  run = str(tmp_path / "llama")
  flags = train_util.small_run_flags(local_corpus, steps=4, checkpoint_period=2, model_gin="models/llama_tiny.gin")
  assert train_util.run_here(run, flags) == 0, train_util.log_text(run)
  assert "bound.config = @LlamaConfig()" in open(os.path.join(run, "config.gin")).read()  # gin shortens the name
  assert cli.main(["sample", f"--model_dir={run}", "--prompt=def f(x):", "--max_new_tokens=8", "--json"]) == 0
  assert len(json.loads(capsys.readouterr().out.splitlines()[-1])["tokens"]) <= 8
  infill = ["sample", f"--model_dir={run}", "--prompt=def f(x):\n    ", "--suffix=\n    return y\n", "--json"]
  assert cli.main([*infill, "--max_new_tokens=8"]) == 0
  assert "completion" in json.loads(capsys.readouterr().out.splitlines()[-1])
  assert cli.main(["eval", "loss", f"--model_dir={run}", "--json"]) == 0
  losses = json.loads(capsys.readouterr().out.splitlines()[-1])
  assert all(np.isfinite(losses[task]["loss"]) for task in ("local_pl", "local_nl"))

  # A StarCoder2 checkpoint (random, the local tokenizer's size) imported, trained on, exported back.
  hf_dir = tmp_path / "starcoder2"
  torch.manual_seed(0)
  config = transformers.Starcoder2Config(
    vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, attention_dropout=0.0, residual_dropout=0.0,
    embedding_dropout=0.0,
  )  # fmt: skip
  transformers.Starcoder2ForCausalLM(config).save_pretrained(hf_dir)
  imported = str(tmp_path / "imported")
  assert cli.main(["import", f"--hf={hf_dir}", f"--model_dir={imported}"]) == 0
  flags = train_util.small_run_flags(local_corpus, steps=2, checkpoint_period=2, model_gin=f"{imported}/config.gin")
  flags.append(f"--gin.VOCABULARY='{os.path.join(local_corpus, 'spm.model')}'")
  assert train_util.run_here(imported, flags) == 0, train_util.log_text(imported)
  assert "initialised parameters from the imported checkpoint" in train_util.log_text(imported)
  out = str(tmp_path / "back")
  assert cli.main(["export", f"--model_dir={imported}", f"--output_dir={out}"]) == 0
  assert "Starcoder2ForCausalLM" in capsys.readouterr().out
  back = transformers.AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
  trained = from_hf.read_hf(out)[0]
  tokens = np.random.default_rng(2).integers(3, 1024, (1, 19)).astype(np.int32)
  ours = np.asarray(trained.module().apply({"params": _run_params(imported, trained)}, tokens))
  assert np.abs(ours - _hf_logits(back, tokens)).max() <= 1e-4
  assert transformers.AutoTokenizer.from_pretrained(out)("def f")["input_ids"][0] == 0  # our BOS convention
