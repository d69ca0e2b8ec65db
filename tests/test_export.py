"""Export to and import from HuggingFace CodeGenForCausalLM, checked against real transformers."""

import json
import os

import jax
import numpy as np
import pytest
import torch
import train_util
from model_util import init, jitted_apply, random_tokens, tiny
from transformers import AutoModelForCausalLM, AutoTokenizer, CodeGenConfig, CodeGenForCausalLM

from jaxformer import checkpoint, cli
from jaxformer.data.pipeline import vocabulary
from jaxformer.export import from_hf, to_hf
from jaxformer.infer.sample import generate
from jaxformer.models.codegen import hf as codegen_layout

CONFIGS = {  # different head counts; rotary_dim below and equal to the head dim
  "4_heads_partial_rotary": tiny(vocab_size=96, d_model=64, num_heads=4, rotary_dim=8),
  "8_heads_full_rotary": tiny(vocab_size=96, d_model=64, num_heads=8, rotary_dim=8, num_layers=3),
}


def _hf_logits(hf_model, tokens):
  with torch.no_grad():
    return hf_model(torch.from_numpy(tokens).long()).logits.numpy()


def _with_bos(tokens):
  return np.concatenate([np.zeros((tokens.shape[0], 1), np.int32), tokens], axis=1)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.slow
def test_exported_model_gives_the_same_logits_and_greedy_tokens(name, tmp_path):
  config = CONFIGS[name]
  model, params = init(config, seed=5)
  small_shards = name == "8_heads_full_rotary"  # also check the sharded layout with its index
  out = to_hf.export_in_memory(
    params, config, str(tmp_path / "hf"), max_shard_bytes=60_000 if small_shards else 2 << 30
  )
  assert os.path.exists(os.path.join(out, "model.safetensors.index.json")) == small_shards
  hf_model = CodeGenForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
  tokens = _with_bos(random_tokens(config, 2, 23, seed=9))
  ours = jitted_apply(model)(params, tokens)
  assert np.abs(ours - _hf_logits(hf_model, tokens)).max() <= 1e-4

  prompt = random_tokens(config, 1, 7, seed=11)[0].tolist()
  greedy = generate(model, params, [prompt], 20, stop_ids=())[0]
  with torch.no_grad():
    hf_out = hf_model.generate(torch.tensor([[0] + prompt]), max_new_tokens=20, do_sample=False, eos_token_id=None)
  assert greedy == hf_out[0, len(prompt) + 1 :].tolist()


def _random_hf(tmp_path, heads=4, auto_map=False, binary=False):
  torch.manual_seed(0)
  hf_config = CodeGenConfig(
    vocab_size=80,
    n_positions=64,
    n_ctx=64,
    n_embd=64,
    n_layer=2,
    n_head=heads,
    rotary_dim=8,
    tie_word_embeddings=False,
    bos_token_id=0,
    eos_token_id=1,
  )
  hf_model = CodeGenForCausalLM(hf_config).eval()
  with torch.no_grad():  # random biases and norms too, so every tensor is checked
    for name, p in hf_model.named_parameters():
      if name.endswith("bias") or "ln" in name:
        p.add_(torch.randn_like(p) * 0.1)
  directory = tmp_path / "source"
  hf_model.save_pretrained(directory, safe_serialization=not binary)
  return hf_model, directory


def _imported_logits(model_dir, tokens):
  config = codegen_layout.config_from_hf(json.load(open(os.path.join(model_dir, "..", "source", "config.json"))))
  from jaxformer import sharding

  mesh = sharding.make_mesh((1, -1, 1))
  abstract, _ = sharding.sharded_param_shapes(config, mesh, sharding.logical_axis_rules())
  params, step = checkpoint.restore_params(model_dir, abstract)
  assert step == 0
  model, _ = init(config)
  return jitted_apply(model)(jax.device_get(params), tokens)


def test_random_hf_model_imports_with_the_same_logits(tmp_path):
  hf_model, source = _random_hf(tmp_path)
  result = from_hf.import_hf(str(source), str(tmp_path / "run"))
  assert result["options"]["groups"] == 4
  tokens = np.random.default_rng(0).integers(0, 80, (2, 17)).astype(np.int32)
  assert np.abs(_imported_logits(str(tmp_path / "run"), tokens) - _hf_logits(hf_model, tokens)).max() <= 1e-4


def test_grouping_8_checkpoint_without_its_code_needs_qkv_groups(tmp_path):
  """auto_map alone never decides the layout: without the remote module the import asks, and the answer is used."""
  hf_model, source = _random_hf(tmp_path, heads=8, binary=True)
  state = torch.load(source / "pytorch_model.bin") if (source / "pytorch_model.bin").exists() else None
  if state is None:  # transformers may still write safetensors; rebuild the .bin by hand
    state = {k: v.clone() for k, v in hf_model.state_dict().items()}
  for name in list(state):
    if name.endswith("qkv_proj.weight"):  # re-lay QKV as the CodeGen2 remote code does (8 groups)
      ours = codegen_layout.qkv_from_hf(state[name].numpy(), 8, 4)
      state[name] = torch.from_numpy(np.ascontiguousarray(codegen_layout.qkv_to_hf(ours, 8)))
  for f in os.listdir(source):
    if f.startswith("model") and f.endswith((".safetensors", ".json")):
      os.remove(source / f)
  torch.save(state, source / "pytorch_model.bin")
  config = json.load(open(source / "config.json"))
  config["auto_map"] = {"AutoModelForCausalLM": "modeling_codegen.CodeGenForCausalLM"}
  json.dump(config, open(source / "config.json", "w"))
  tokens = np.random.default_rng(1).integers(0, 80, (1, 13)).astype(np.int32)

  with pytest.raises(ValueError, match="--qkv_groups"):
    from_hf.import_hf(str(source), str(tmp_path / "guess"))
  assert not (tmp_path / "guess").exists()
  result = from_hf.import_hf(str(source), str(tmp_path / "run"), qkv_groups=8)
  assert result["options"]["groups"] == 8
  assert np.abs(_imported_logits(str(tmp_path / "run"), tokens) - _hf_logits(hf_model, tokens)).max() <= 1e-4
  forced = from_hf.import_hf(str(source), str(tmp_path / "wrong"), qkv_groups=4)  # ignoring the layout breaks it
  assert forced["options"]["groups"] == 4
  assert np.abs(_imported_logits(str(tmp_path / "wrong"), tokens) - _hf_logits(hf_model, tokens)).max() > 1e-3


@pytest.mark.slow
def test_cli_export_loads_in_transformers_and_round_trips_through_import(local_corpus, tmp_path, capsys):
  run = str(tmp_path / "run")
  fim = ["--gin.OBJECTIVE_RATES={'fim': 1.0}"]  # a FIM run: its infill prompt is PSM, which HF must answer alike
  assert train_util.run_here(run, train_util.small_run_flags(local_corpus, steps=2, checkpoint_period=2) + fim) == 0
  hf_dir = str(tmp_path / "hf")
  assert cli.main(["export", f"--model_dir={run}", f"--output_dir={hf_dir}", "--step=7"]) == 2  # no such step
  assert "--step=7" in capsys.readouterr().err and not os.path.exists(hf_dir)
  assert cli.main(["export", f"--model_dir={run}", f"--output_dir={hf_dir}"]) == 0
  assert "exported step 2" in capsys.readouterr().out
  hf_model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
  tokenizer = AutoTokenizer.from_pretrained(hf_dir)
  vocab = vocabulary.CodeGenVocabulary(os.path.join(run, "vocabulary", "spm.model"))
  code = "import os\n\ndef main(argv):\n\treturn  [x  for x in argv]  # héllo\n"
  assert tokenizer(code)["input_ids"] == [0] + vocab.encode(code)
  assert tokenizer.decode(vocab.encode(code)) == code

  prompt = "def main(argv):\n"
  assert cli.main(["sample", f"--model_dir={run}", f"--prompt={prompt}", "--max_new_tokens=20", "--json"]) == 0
  ours = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  with torch.no_grad():
    hf_ids = hf_model.generate(**tokenizer(prompt, return_tensors="pt"), max_new_tokens=20, do_sample=False)
  hf_completion = hf_ids[0, len(vocab.encode(prompt)) + 1 :].tolist()
  if 1 in hf_completion:
    hf_completion = hf_completion[: hf_completion.index(1)]
  assert ours["tokens"] == hf_completion

  # Infill in the run's format (FIM PSM): the exported tokenizer carries the sentinels, and HF greedy
  # generate on the PSM prompt text writes the same middle.
  prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
  argv = ["sample", f"--model_dir={run}", f"--prompt={prefix}", f"--suffix={suffix}", "--max_new_tokens=12", "--json"]
  assert cli.main(argv) == 0
  middle = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert middle["infill_format"] == "psm"
  psm = tokenizer("<fim_prefix>" + prefix + "<fim_suffix>" + suffix + "<fim_middle>", return_tensors="pt")
  special = vocab.special
  expected = [0, special.id_of("<fim_prefix>")] + vocab.encode(prefix) + [special.id_of("<fim_suffix>")]
  assert psm["input_ids"][0].tolist() == expected + vocab.encode(suffix) + [special.id_of("<fim_middle>")]
  with torch.no_grad():
    hf_ids = hf_model.generate(**psm, max_new_tokens=12, do_sample=False)
  hf_middle = hf_ids[0, psm["input_ids"].shape[1] :].tolist()
  assert middle["tokens"] == (hf_middle[: hf_middle.index(1)] if 1 in hf_middle else hf_middle)
  assert cli.main(argv[:-1] + ["--infill_format=codegen2"]) == 2  # the run trained no span corruption
  assert "--infill_format='codegen2' contradicts the run: the run trained ['psm', 'spm']" in capsys.readouterr().err
  with open(f"{run}/checkpoints/2/meta/metadata") as f:  # the objective's stable id goes with every step
    assert json.load(f)["objectives"] == {"rates": {"fim": {"id": 3, "rate": 1.0}}, "infill_formats": ["psm", "spm"]}
  with open(f"{run}/metrics.jsonl") as f:  # train.train.final_eval=False (small_run_flags): no held-out eval
    assert not [line for line in f if '"split": "eval"' in line]

  imported = str(tmp_path / "imported")
  assert cli.main(["import", f"--hf={hf_dir}", f"--model_dir={imported}"]) == 0
  capsys.readouterr()
  assert cli.main(["sample", f"--model_dir={imported}", f"--prompt={prompt}", "--max_new_tokens=20", "--json"]) == 0
  again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert again["tokens"] == ours["tokens"] and again["completion"] == ours["completion"]

  # The imported run fine-tunes: train starts from its parameters with a fresh optimizer.
  flags = train_util.small_run_flags(local_corpus, steps=2, checkpoint_period=2)
  assert train_util.run_here(imported, flags) == 0, train_util.log_text(imported)
  assert "initialised parameters from the imported checkpoint at step 0" in train_util.log_text(imported)
  assert train_util.committed_steps(imported) == [0, 2]


def test_bad_inputs_fail_clearly_and_leave_nothing_behind(tmp_path, capsys, local_corpus):
  config = CONFIGS["4_heads_partial_rotary"]
  _, params = init(config)
  out = tmp_path / "hf"
  to_hf.export_in_memory(params, config, str(out))
  with pytest.raises(ValueError, match="exists"):
    to_hf.export_in_memory(params, config, str(out))
  with pytest.raises(ValueError, match="--dtype"):
    to_hf.export_in_memory(params, config, str(tmp_path / "x"), dtype="int8")
  assert not (tmp_path / "x").exists() and not list(tmp_path.glob("x.partial*"))

  assert cli.main(["import", f"--hf={tmp_path}/nothing", f"--model_dir={tmp_path}/run"]) == 2
  assert "config.json is missing" in capsys.readouterr().err
  other = tmp_path / "gpt2"
  other.mkdir()
  (other / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
  assert cli.main(["import", f"--hf={other}", f"--model_dir={tmp_path}/run"]) == 2
  assert "model_type 'gpt2'" in capsys.readouterr().err
  config_json = json.load(open(out / "config.json"))
  config_json["vocab_size"] = 200  # the tensors say 96
  (out / "config.json").write_text(json.dumps(config_json))
  assert cli.main(["import", f"--hf={out}", f"--model_dir={tmp_path}/run"]) == 2
  assert "transformer.wte.weight gives shape" in capsys.readouterr().err
  assert not (tmp_path / "run").exists() and not list(tmp_path.glob("run.partial*"))

  assert cli.main(["export", f"--model_dir={tmp_path}/nowhere", f"--output_dir={tmp_path}/o"]) == 2
  assert "config.gin is missing" in capsys.readouterr().err

  # A tokenizer with more ids than the model's embedding (1,024 pieces, vocab_size 96) is refused.
  big = to_hf.export_in_memory(params, config, str(tmp_path / "big"), os.path.join(local_corpus, "spm.model"))
  assert cli.main(["import", f"--hf={big}", f"--model_dir={tmp_path}/big_run"]) == 2
  assert "its tokenizer has 1024 ids but config.json's vocab_size is 96" in capsys.readouterr().err
  assert not (tmp_path / "big_run").exists()
  # A run whose tokenizer copy is gone is not exported without one.
  bare = to_hf.export_in_memory(params, config, str(tmp_path / "bare"))  # no tokenizer at all
  assert cli.main(["import", f"--hf={bare}", f"--model_dir={tmp_path}/bare_run"]) == 0
  assert cli.main(["export", f"--model_dir={tmp_path}/bare_run", f"--output_dir={tmp_path}/bare_out"]) == 2
  assert "holds no spm.model or tokenizer.json" in capsys.readouterr().err and not (tmp_path / "bare_out").exists()


def test_prefix_lm_checkpoints_export_with_a_warning(tmp_path):
  config = CONFIGS["4_heads_partial_rotary"]
  _, params = init(config)
  with pytest.warns(to_hf.PrefixLMWarning, match="attends causally"):
    to_hf.export_in_memory(params, config, str(tmp_path / "hf"), prefix_lm=True)


def test_bfloat16_export_loads_with_close_logits(tmp_path):
  config = CONFIGS["4_heads_partial_rotary"]
  model, params = init(config, seed=5)
  out = to_hf.export_in_memory(params, config, str(tmp_path / "hf"), dtype="bfloat16")
  hf_model = CodeGenForCausalLM.from_pretrained(out, torch_dtype=torch.bfloat16).eval()
  assert hf_model.transformer.wte.weight.dtype == torch.bfloat16
  tokens = _with_bos(random_tokens(config, 1, 9, seed=9))
  with torch.no_grad():
    theirs = hf_model.float()(torch.from_numpy(tokens).long()).logits.numpy()
  assert np.abs(jitted_apply(model)(params, tokens) - theirs).max() < 0.05  # bf16 weights
