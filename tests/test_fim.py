"""FIM beside CodeGen2 span corruption: examples in PSM and SPM that invert to their source, rates that
hold, settings and sentinels checked, `data stats` and `data show` over FIM, and the infill format a run
answers chosen from what it trained."""

import collections

import gin
import numpy as np
import pytest

from jaxformer import objectives
from jaxformer.data import pipeline
from jaxformer.data.reports import show, stats

STARCODER = ("<fim_prefix>", "<fim_middle>", "<fim_suffix>")


@pytest.fixture
def fim_tasks(local_corpus):
  """The local tasks over the session corpus (its tokenizer has StarCoder's FIM sentinels), with a
  small shuffle buffer; returns the vocabulary."""
  from jaxformer.tasks import local

  gin.parse_config("tasks.shuffle_buffer_size.size = 64")
  return local.register_local_tasks(corpus_dir=local_corpus)


def _bind(rates: dict, **fim):
  with gin.unlock_config():
    gin.parse_config(
      [f"objectives.objective_mixture.rates = {rates!r}"] + [f"objectives.FIM.{k} = {v!r}" for k, v in fim.items()]
    )


def _examples(count: int, length: int = 256, seed: int = 0):
  return list(pipeline.examples_dataset("local_pl", {"targets": length}, seed=seed).take(count).as_numpy_iterator())


def test_fim_examples_are_psm_or_spm_at_their_rates_and_invert_to_their_source(fim_tasks):
  vocab = fim_tasks
  special = vocab.special
  pre, mid, suf = (special.id_of(t) for t in STARCODER)
  _bind({"fim": 1.0}, fim_rate=0.5, spm_rate=0.5)
  examples = _examples(240)
  context = objectives.Context(special, objectives.all_settings(), vocab)
  fim = objectives.OBJECTIVES["fim"]
  modes = collections.Counter()
  for e in examples:
    targets, source = e["targets"].tolist(), e["source"].tolist()
    if objectives.by_id(int(e["objective"])).name == "causal_lm":  # fim_rate: the other half stays causal
      assert targets == source and e["targets_loss"].all()
      modes["causal"] += 1
      continue
    assert len(targets) == len(source) + 3 <= 256 and e["targets_loss"].all() and not e["targets_prefix"].any()
    assert fim.invert(e["targets"], context) == source  # P, M and S are the chunk's own tokens
    assert targets[0] == pre and targets.count(pre) == targets.count(mid) == targets.count(suf) == 1
    mode, middle = e["objective_info"].tolist()
    spm = targets[1] == suf and mode == 2
    modes["spm" if spm else "psm"] += 1
    after = targets[targets.index(mid) + 1 :]
    assert (after[-1:] == [special.eos]) == (source[-1] == special.eos)  # <|endoftext|> only where the document ended
    if not spm:
      m = after[: len(after) - (source[-1] == special.eos)]
      assert len(m) == middle
      assert vocab.decode(m) in vocab.decode(source)  # the middle is whole characters of the source
  assert abs(modes["causal"] / len(examples) - 0.5) < 0.12, modes
  assert abs(modes["spm"] / (modes["spm"] + modes["psm"]) - 0.5) < 0.15, modes

  again, other = _examples(40), _examples(40, seed=1)
  assert all(np.array_equal(a["targets"], b["targets"]) for a, b in zip(examples[:40], again))  # from SEED
  assert not all(np.array_equal(a["targets"], b["targets"]) for a, b in zip(examples[:40], other))


def test_loss_can_leave_the_sentinels_out(fim_tasks):
  special = fim_tasks.special
  sentinels = [special.id_of(t) for t in STARCODER]
  _bind({"fim": 1.0}, fim_rate=1.0, loss_on_sentinels=False)
  examples = [e for e in _examples(12) if objectives.by_id(int(e["objective"])).name == "fim"]
  assert len(examples) >= 10
  for e in examples:
    on_sentinel = np.isin(e["targets"], sentinels)
    assert on_sentinel.sum() == 3 and not e["targets_loss"][on_sentinel].any() and e["targets_loss"][~on_sentinel].all()


def test_bad_fim_settings_and_missing_sentinels_fail_naming_the_binding(fim_tasks, tmp_path):
  for binding, value in (("fim_rate", 1.5), ("spm_rate", -0.1), ("level", "document"), ("spelling", "incoder")):
    with pytest.raises(ValueError, match=f"objectives.FIM.{binding}="):
      objectives.FIM(**{binding: value})
  _bind({"fim": 1.0}, spelling="qwen")  # our tokenizer has StarCoder's spelling, not Qwen's
  with pytest.raises(ValueError, match=r"objective 'fim' needs <\|fim_prefix\|>.*\(VOCABULARY\) has no such token"):
    _examples(1)
  _bind({"fim": 1.0})
  with pytest.raises(ValueError, match=r"TASK_FEATURE_LENGTHS\['targets'\]=4 is too short for FIM"):
    _examples(1, length=4)


@pytest.mark.slow
def test_data_stats_and_show_report_fim(fim_tasks, tmp_path, capsys):
  _bind({"causal_lm": 0.5, "span_corruption": 0.25, "fim": 0.25}, fim_rate=1.0, spm_rate=0.5)
  config = pipeline.DataConfig(mixture_or_task_name="local_pl_nl", task_feature_lengths={"targets": 2048}, batch_size=8)
  report = stats.data_stats(config, fim_tasks, num_examples=60, num_batches=1)
  fim = report["objectives"]["fim"]
  assert fim["psm"] + fim["spm"] == fim["examples"] == fim["middle_lengths"]["n"] > 0 and fim["spm"] > 0
  assert fim["middle_lengths"]["max"] <= 2048 and report["settings"]["fim"]["spm_rate"] == 0.5
  table = stats.format_table(report)
  assert (
    "fim: " in table
    and "middle length (tokens)" in table
    and "span corruption: loss on 'sequence' (LOSS_PLACEMENT); spans per example" in table  # the default
  )
  rows = show.show_examples(config, fim_tasks, 12)
  assert {r["objective"] for r in rows} >= {"fim", "causal_lm"} and all(r["restores_source"] for r in rows)
  assert all(r["inputs_text"].startswith("<fim_prefix>") for r in rows if r["objective"] == "fim")


def test_the_infill_format_is_what_the_run_trained(fim_tasks):
  special = fim_tasks.special
  choose = objectives.choose_infill_format
  assert choose({"fim": 1.0}, special).name == "psm"  # StarCoder's: PSM and SPM trained, PSM asked
  _bind({"fim": 1.0}, spm_rate=1.0)
  assert [f.name for f in objectives.trained_infill_formats({"fim": 1.0})] == ["spm"]
  _bind({"fim": 1.0}, spm_rate=0.5)
  assert choose({"causal_lm": 0.5, "span_corruption": 0.5}, special).name == "codegen2"
  assert choose({"span_corruption": 0.5, "fim": 0.5}, special, "spm").name == "spm"  # a flag picks among them
  with pytest.raises(
    ValueError, match=r"--infill_format='codegen2' contradicts the run: the run trained \['psm', 'spm'\]"
  ):
    choose({"fim": 1.0}, special, "codegen2")
  assert choose(None, special).name == "codegen2"  # no trained format known: the vocabulary's first
  psm, spm = choose({"fim": 1.0}, special, "psm"), choose({"fim": 1.0}, special, "spm")
  pre, mid, suf = (special.id_of(t) for t in STARCODER)
  assert psm.prompt(special, [7, 8], [9]) == [pre, 7, 8, suf, 9, mid]
  assert spm.prompt(special, [7, 8], [9]) == [pre, suf, 9, mid, 7, 8] and psm.stops(special) == (special.eos,)


def test_an_hf_tokenizer_with_starcoders_fim_tokens_is_used_as_is_and_one_without_is_refused(tmp_path):
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  from jaxformer.data.pipeline.vocabulary import TokenizersVocabulary

  def write(name: str, specials: list[str]) -> TokenizersVocabulary:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(["def add(a, b):\n    return a + b\n"] * 50, trainer)
    path = tmp_path / name / "tokenizer.json"
    path.parent.mkdir()
    tok.save(str(path))
    return TokenizersVocabulary(str(path))

  # StarCoder2's tokenizer.json: <|endoftext|> 0, then <fim_prefix> <fim_middle> <fim_suffix> <fim_pad> 1-4.
  starcoder2 = write("starcoder2", ["<|endoftext|>", *STARCODER[:1], STARCODER[1], STARCODER[2], "<fim_pad>"])
  special = starcoder2.special
  assert [special.id_of(t) for t in STARCODER] == [1, 2, 3] and special.masks == () and special.bos is None
  objectives.check_vocabulary({"fim": 1.0}, starcoder2)
  fmt = objectives.choose_infill_format(None, special)  # an import: the vocabulary's first format
  assert fmt.name == "psm" and fmt.prompt(special, [40], [41]) == [1, 40, 3, 41, 2]
  with pytest.raises(ValueError, match=r"objective 'span_corruption' needs <sep>, <eom>, <mask_1>"):
    objectives.check_vocabulary({"causal_lm": 0.5, "span_corruption": 0.5}, starcoder2)
  plain = write("plain", ["<|endoftext|>"])
  with pytest.raises(
    ValueError, match=r"objective 'fim' needs <fim_prefix>, <fim_middle>, <fim_suffix>: the vocabulary"
  ):
    objectives.check_vocabulary({"fim": 1.0}, plain)
  with pytest.raises(ValueError, match="has neither CodeGen2's <sep>/<eom>/<mask_1> nor FIM's sentinels"):
    objectives.choose_infill_format(None, plain.special)
