"""CodeGen2's own artifacts end to end: a byte-level BPE tokenizer.json with CodeGen2's special-token
layout (masks counting down from the top, id 0 a real token, no BOS) and a checkpoint whose remote
code splits QKV into 8 groups (codegen2_artifacts.py builds both, from transformers' code alone).
Import, sample, infill, data, continued pretraining and export are each checked against HF."""

import itertools
import json
import os

import codegen2_artifacts as artifacts
import numpy as np
import pytest
import seqio
import torch
import train_util
from model_util import jitted_apply
from transformers import AutoModelForCausalLM, AutoTokenizer

from jaxformer import checkpoint, cli, objectives, sharding
from jaxformer.data import pipeline
from jaxformer.data.pipeline import vocabulary
from jaxformer.export import from_hf
from jaxformer.infer.sample import infill_ids, prompt_ids
from jaxformer.models import Decoder as Transformer

PROMPT = "def count_words(text):\n"
PREFIX, SUFFIX = "def fib(n):\n    if n < 2:\n", "\n    return fib(n - 1) + fib(n - 2)\n"


@pytest.fixture(scope="session")
def codegen2(tmp_path_factory):
  """(tokenizer dir, 8-group checkpoint dir, its HF model loaded through the remote code)."""
  root = tmp_path_factory.mktemp("codegen2")
  tokenizer_dir = str(root / "tokenizer")
  artifacts.build_tokenizer(tokenizer_dir)
  # 2 heads per group and partial rotary, so a wrong interleave or rotary split shows
  _, hf_dir = artifacts.build_codegen2_checkpoint(
    str(root / "hf"), tokenizer_dir, mp_num=8, d_model=128, heads=16, rotary_dim=4
  )
  remote = AutoModelForCausalLM.from_pretrained(hf_dir, trust_remote_code=True).float().eval()
  assert not type(remote).__module__.startswith("transformers.models.")  # CodeGen2's own code, 8 groups
  return tokenizer_dir, hf_dir, remote


def _hf_greedy(model, ids: list[int], new_tokens: int, stops: list[int]) -> list[int]:
  with torch.no_grad():
    out = model.generate(
      torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False, eos_token_id=stops, pad_token_id=stops[0]
    )[0, len(ids) :].tolist()
  return out[: min([out.index(s) for s in stops if s in out], default=len(out))]


def _sample(capsys, model_dir: str, *flags) -> dict:
  assert cli.main(["sample", f"--model_dir={model_dir}", "--temperature=0", "--json", *flags]) == 0
  return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_special_tokens_are_found_by_string_and_prompts_encode_as_the_hf_tokenizer(codegen2):
  tokenizer_dir, _, _ = codegen2
  ids = artifacts.special_ids(tokenizer_dir)
  vocab = vocabulary.load_vocabulary(os.path.join(tokenizer_dir, "tokenizer.json"))
  special = vocab.special
  assert (special.eos, special.sep, special.eom) == (ids["eos"], ids["sep"], ids["eom"])
  assert special.mask_id(1) == ids["size"] - 1 and special.mask_id(2) == special.mask_id(1) - 1  # counting down
  span = objectives.OBJECTIVES["span_corruption"]
  assert special.num_masks == 16 and vocab.bos_id is None and special.missing(span.needs(span.settings())) == []
  hf = AutoTokenizer.from_pretrained(tokenizer_dir)
  assert prompt_ids(vocab, PROMPT)[0] == hf(PROMPT)["input_ids"]  # no invented BOS
  card = PREFIX + "<mask_1>" + SUFFIX + "<|endoftext|>" + "<sep>" + "<mask_1>"  # the model card's infill prompt
  assert infill_ids(vocab, PREFIX, SUFFIX) == hf(card)["input_ids"]


def test_a_vocabulary_without_what_an_objective_needs_fails_naming_both(codegen2, local_corpus, tmp_path, capsys):
  from tokenizers import Tokenizer

  tokenizer_dir, _, _ = codegen2
  plain = Tokenizer.from_file(os.path.join(tokenizer_dir, "tokenizer.json"))
  data = json.loads(plain.to_str())
  data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] == "<|endoftext|>"]
  path = tmp_path / "tokenizer.json"
  path.write_text(json.dumps(data))
  base = [
    "data",
    "show",
    "--gin_file=data/local.gin",
    f"--gin.CORPUS_DIR='{local_corpus}'",
    f"--gin.VOCABULARY='{path}'",
  ]
  assert cli.main([*base, "--gin_file=objectives/span_corruption.gin", "--num_examples=1"]) == 2
  err = capsys.readouterr().err
  assert "'span_corruption' needs <sep>, <eom>, <mask_1>" in err and str(path) in err
  assert cli.main([*base, "--gin_file=objectives/causal_lm.gin", "--num_examples=2", "--json"]) == 0  # EOS suffices


def test_batches_read_the_tokens_alone_and_id_0_is_a_real_token(codegen2, local_corpus, tmp_path):
  from jaxformer.tasks import local

  tokenizer_dir, _, _ = codegen2
  vocab = local.register_local_tasks(corpus_dir=local_corpus, vocabulary_path=f"{tokenizer_dir}/tokenizer.json")
  config = pipeline.DataConfig("local_pl", {"targets": 256}, batch_size=4)
  iterator = pipeline.BatchIterator(pipeline.get_dataset(config, shard_info=seqio.ShardInfo(0, 1)))
  batch = next(iterator)
  # '!' (id 0, as in '!=') survives packing as a token the model reads, and is never taken for padding.
  # Where the first '!' falls depends on this machine's files: read on until one shows up.
  real_zero = lambda b: ((b["decoder_input_tokens"] == 0) & (b["decoder_segment_ids"] > 0)).any()
  assert any(real_zero(b) for b in itertools.chain([batch], itertools.islice(iterator, 300)))
  inputs, targets, loss = batch["decoder_input_tokens"], batch["decoder_target_tokens"], batch["decoder_loss_weights"]
  segments = batch["decoder_segment_ids"]
  real = segments > 0
  for row in range(inputs.shape[0]):
    for segment in set(segments[row][real[row]].tolist()):
      where = np.flatnonzero(segments[row] == segment)
      # Each position predicts the next token of its own segment; the last predicts nothing.
      assert (targets[row, where[:-1]] == inputs[row, where[1:]]).all() and loss[row, where[-1]] == 0
      assert loss[row, where[:-1]].all()  # causal LM: every other position has loss
  text = vocab.decode(inputs[0][segments[0] == 1].tolist())
  assert vocab.encode(text)[:8] == inputs[0][segments[0] == 1][:8].tolist()  # the tokenizer's own ids, no BOS
  # The iterator over a tokenizers vocabulary is checkpointed and continues exactly.
  path = iterator.save(str(tmp_path / "data" / "position"))
  expected = next(iterator)
  restored = pipeline.BatchIterator(pipeline.get_dataset(config, shard_info=seqio.ShardInfo(0, 1)))
  restored.restore(path)
  again = next(restored)
  assert all((again[k] == v).all() for k, v in expected.items())


def test_data_show_writes_span_corruption_in_codegen2s_format_and_ids(codegen2, local_corpus, capsys):
  tokenizer_dir, _, _ = codegen2
  args = ["data", "show", "--gin_file=data/local.gin", "--gin_file=objectives/span_corruption.gin"]
  args += [f"--gin.CORPUS_DIR='{local_corpus}'", f"--gin.VOCABULARY='{tokenizer_dir}/tokenizer.json'"]
  args += ["--gin.TASK_FEATURE_LENGTHS={'targets': 256}", "--num_examples=6", "--json"]
  assert cli.main(args) == 0
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
  assert len(rows) == 6
  rows = [r for r in rows if r["objective"] == "span_corruption"]  # a one-token chunk stays causal LM
  assert len(rows) >= 4
  assert all(r["restores_source"] for r in rows)  # the spans put back give the source tokens exactly
  assert all("<|endoftext|><sep><mask_1>" in r["inputs_text"] and "<eom>" in r["inputs_text"] for r in rows)


@pytest.mark.slow
def test_import_reads_the_grouping_from_the_checkpoints_code_and_samples_as_hf(codegen2, tmp_path, capsys):
  tokenizer_dir, hf_dir, remote = codegen2
  run = str(tmp_path / "run")
  assert cli.main(["import", f"--hf={hf_dir}", f"--model_dir={run}"]) == 0
  out = capsys.readouterr().out
  assert "QKV in 8 groups, float32" in out and "tokenizer.json" in out
  config_gin = open(os.path.join(run, "config.gin")).read()
  assert "ModelConfig.dtype = 'float32'" in config_gin and "VOCABULARY" not in config_gin  # the model only
  assert os.path.exists(os.path.join(run, "vocabulary", "tokenizer.json"))
  assert cli.main(["import", f"--hf={hf_dir}", f"--model_dir={run}"]) == 2  # never over an existing run
  assert "already holds" in capsys.readouterr().err

  vocab = vocabulary.load_vocabulary(f"{tokenizer_dir}/tokenizer.json")
  ours = _sample(capsys, run, f"--prompt={PROMPT}", "--max_new_tokens=16")
  assert ours["tokens"] == _hf_greedy(remote, vocab.encode(PROMPT), 16, [vocab.eos_id])
  infill = _sample(capsys, run, f"--prompt={PREFIX}", f"--suffix={SUFFIX}", "--max_new_tokens=12")
  assert infill["tokens"] == _hf_greedy(
    remote, infill_ids(vocab, PREFIX, SUFFIX), 12, [vocab.special.eom, vocab.eos_id]
  )


def _logits(model_dir: str, tokens: np.ndarray) -> np.ndarray:
  hf = json.load(open(os.path.join(model_dir, "..", "source", "config.json")))
  from jaxformer.models.codegen import hf as codegen_layout

  config = codegen_layout.config_from_hf(hf)
  abstract, _ = sharding.sharded_param_shapes(config, sharding.make_mesh((1, -1, 1)), sharding.logical_axis_rules())
  params, _ = checkpoint.restore_params(model_dir, abstract)
  return jitted_apply(Transformer(config))(params, tokens)


@pytest.mark.parametrize("with_code", [True, False])
def test_a_4_group_decoy_with_an_auto_map_imports_correctly_or_is_refused(with_code, tmp_path, capsys):
  reference, source = artifacts.build_decoy(str(tmp_path / "source"), with_code=with_code)
  tokens = np.random.default_rng(0).integers(0, 90, (2, 13)).astype(np.int32)
  with torch.no_grad():
    expected = reference(torch.from_numpy(tokens).long()).logits.numpy()
  run = str(tmp_path / "run")
  if with_code:  # its code says mp_num = 4
    assert from_hf.import_hf(source, run)["options"]["groups"] == 4
  else:  # an auto_map and no code to read: refused, nothing written, until the user says
    assert cli.main(["import", f"--hf={source}", f"--model_dir={run}"]) == 2
    assert "--qkv_groups" in capsys.readouterr().err and not os.path.exists(run)
    assert cli.main(["import", f"--hf={source}", f"--model_dir={run}", "--qkv_groups=4"]) == 0
  assert np.abs(_logits(run, tokens) - expected).max() <= 1e-4
  forced = str(tmp_path / "forced")
  assert from_hf.import_hf(source, forced, qkv_groups=8)["options"]["groups"] == 8  # a wrong grouping is not the model
  assert np.abs(_logits(forced, tokens) - expected).max() > 1e-2


@pytest.mark.slow
def test_continued_pretraining_then_export_reproduces_sample_in_hf(codegen2, local_corpus, tmp_path, capsys):
  tokenizer_dir, hf_dir, _ = codegen2
  run = str(tmp_path / "run")
  assert cli.main(["import", f"--hf={hf_dir}", f"--model_dir={run}"]) == 0
  # The CodeGen2 mix (runs/local.gin's objectives) on the local corpus, read with the import's
  # tokenizer.json: its config.gin is the model gin, and VOCABULARY names the run's tokenizer.
  flags = train_util.small_run_flags(local_corpus, steps=2, checkpoint_period=2, model_gin=f"{run}/config.gin")
  flags += [f"--gin.VOCABULARY='{run}/vocabulary/tokenizer.json'", "--gin.ModelConfig.remat_policy='none'"]
  assert train_util.run_here(run, flags) == 0, train_util.log_text(run)
  log = train_util.log_text(run)
  assert "initialised parameters from the imported checkpoint at step 0" in log
  assert train_util.committed_steps(run) == [0, 2]  # the data iterator was checkpointed too
  assert os.path.exists(os.path.join(run, "checkpoints", "2"))

  hf_out = str(tmp_path / "hf_out")
  assert cli.main(["export", f"--model_dir={run}", f"--output_dir={hf_out}"]) == 0
  capsys.readouterr()
  tokenizer = AutoTokenizer.from_pretrained(hf_out)
  model = AutoModelForCausalLM.from_pretrained(hf_out).float().eval()  # HF's built-in class: no remote code
  ids = tokenizer(PROMPT)["input_ids"]
  assert ids == AutoTokenizer.from_pretrained(tokenizer_dir)(PROMPT)["input_ids"]
  ours = _sample(capsys, run, f"--prompt={PROMPT}", "--max_new_tokens=16")
  assert ours["tokens"] == _hf_greedy(model, ids, 16, [tokenizer.eos_token_id])
