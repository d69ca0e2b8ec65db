"""Data: tokenizer, span corruption, objective and mixture rates, packing, shards, resume, bad input."""

import collections
import gzip
import json
import os

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf

from jaxformer import cli, objectives
from jaxformer.data import pipeline
from jaxformer.data.ingest import convert, corpus
from jaxformer.data.pipeline import vocabulary
from jaxformer.models.common.attention import attention_mask
from jaxformer.objectives import span_corruption

CODE = (
  "def f(x):\n\tif x:\n\t\treturn  x   \n\n\n\r\n    y = 'héllo wörld, 日本語, émoji 🚀'  \n"
  "\t  \t mixed\t\n" + " " * 40 + "deep = 12345678\n"
)
MIX = {"causal_lm": 0.5, "span_corruption": 0.3, "prefix_lm": 0.2}


def _bind_rates(rates):
  with gin.unlock_config():  # a CLI call earlier in the test finalized (locked) gin
    gin.parse_config(f"objectives.objective_mixture.rates = {rates!r}")


def test_tokenizer_round_trips_code_exactly(local_tasks):
  vocab = local_tasks
  ids = vocab.encode(CODE)
  assert vocab.decode(ids) == CODE
  assert vocab.encode_tf(tf.constant(CODE)).numpy().tolist() == ids
  assert vocab.decode_tf(tf.constant(ids)).numpy().decode() == CODE
  pieces = [vocab.tokenizer.id_to_piece(i) for i in ids]
  assert "\t\t" in pieces and "\n" in pieces  # whitespace runs and newlines are their own tokens


def test_sentinels_are_single_ids_and_literal_ones_are_escaped(local_tasks):
  vocab, special = local_tasks, local_tasks.special
  assert special.num_masks >= 64
  assert [special.mask_id(k) for k in (1, 2, 64)] == [vocab.tokenizer.piece_to_id(f"<mask_{k}>") for k in (1, 2, 64)]
  assert vocab.encode("<sep>") == [special.sep] and vocab.encode("<eom>") == [special.eom]
  fim = [special.id_of(t) for t in ("<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>")]
  assert None not in fim and vocab.encode("<fim_middle>") == [fim[1]]  # train-tokenizer adds StarCoder's FIM tokens
  escaped = vocabulary.escape_sentinels(tf.constant("a = '<sep>' + '<mask_3>' + '<fim_prefix>'")).numpy().decode()
  ids = vocab.encode(escaped)
  assert special.sep not in ids and special.mask_id(3) not in ids and fim[0] not in ids
  assert vocabulary.unescape_sentinels(vocab.decode(ids)) == "a = '<sep>' + '<mask_3>' + '<fim_prefix>'"


def _uses(example, objective: str, eos: int) -> bool:
  """Whether the example got `objective`; otherwise asserts it is the one chunk that stays causal LM
  by design (choose_objective): under 2 tokens besides its document's <|endoftext|>."""
  if objectives.by_id(int(example["objective"])).name == objective:
    return True
  source = example["source"]
  body = source[:-1] if source.size and source[-1] == eos else source
  assert body.size < 2 and not example["targets_prefix"].any(), example
  return False


def test_span_corruption_inverts_exactly_to_its_source(local_tasks):
  vocab = local_tasks
  ids = vocab.special
  _bind_rates({"span_corruption": 1.0})
  examples = list(pipeline.examples_dataset("local_pl", {"targets": 256}).take(40).as_numpy_iterator())
  spans_seen = span_examples = 0
  for example in examples:
    if not _uses(example, "span_corruption", ids.eos):
      continue
    span_examples += 1
    source = list(example["source"])
    if source[-1] == ids.eos:
      source = source[:-1]
    assert len(example["targets"]) <= 256
    assert span_corruption.invert(example["targets"], ids) == source
    text = vocab.decode_with_specials(example["targets"])
    head, infill = text.split("<|endoftext|><sep>")
    for k, span in enumerate(infill.split("<eom>")[:-1], start=1):
      assert span.startswith(f"<mask_{k}>")
      head = head.replace(f"<mask_{k}>", span[len(f"<mask_{k}>") :], 1)
      spans_seen += 1
    assert head == vocab.decode(source)
    # The default LOSS_PLACEMENT 'sequence': loss on every token, no prefix ('infill': test_span_sampling).
    assert example["targets_loss"].all()
    assert example["targets_prefix"].sum() == 0
  assert span_examples >= 30 and spans_seen > span_examples  # several spans per example


def test_objective_rates_are_honoured(local_tasks):
  _bind_rates(MIX)
  counts = collections.Counter(
    objectives.by_id(int(e["objective"])).name
    for e in pipeline.examples_dataset("local_pl", {"targets": 128}).take(1500).as_numpy_iterator()
  )
  total = sum(counts.values())
  for name, rate in MIX.items():
    assert abs(counts[name] / total - rate) < 0.05, counts


def test_prefix_lm_examples_have_a_bidirectional_prefix_without_loss(local_tasks):
  _bind_rates({"prefix_lm": 1.0})
  eos = local_tasks.special.eos
  seen = 0
  for example in pipeline.examples_dataset("local_pl", {"targets": 128}).take(30).as_numpy_iterator():
    if not _uses(example, "prefix_lm", eos):
      continue
    seen += 1
    prefix, loss = example["targets_prefix"], example["targets_loss"]
    p = int(prefix.sum())
    assert 1 <= p < prefix.size and prefix[:p].all() and not prefix[p:].any()
    np.testing.assert_array_equal(loss, 1 - prefix)
  assert seen >= 20


@pytest.fixture
def short_docs_task(local_corpus, tmp_path):
  """A file task of short documents (so rows pack several), via `data convert`."""
  from jaxformer.tasks import corpora

  raw = tmp_path / "short.jsonl"
  raw.write_text(
    "\n".join(json.dumps({"text": f"def f{i}(x):\n    return x * {i}\n" * (1 + i % 5)}) for i in range(400))
  )
  from jaxformer.data.ingest.convert import convert_files

  convert_files(str(raw), str(tmp_path / "short"))
  corpora.register_configured(
    vocabulary_path=os.path.join(local_corpus, "spm.model"), file_tasks={"short_docs": str(tmp_path / "short")}
  )
  return "short_docs"


def test_packed_batches_never_share_attention_across_segments(short_docs_task):
  _bind_rates(MIX)
  config = pipeline.DataConfig(
    mixture_or_task_name=short_docs_task, task_feature_lengths={"targets": 256}, batch_size=8
  )
  iterator = pipeline.BatchIterator(pipeline.get_dataset(config, shard_info=seqio.ShardInfo(0, 1)))
  most_segments = 0
  for _ in range(6):
    batch = next(iterator)
    segments, prefix = batch["decoder_segment_ids"], batch["decoder_causal_attention"]
    most_segments = max(most_segments, segments.max())
    mask = np.asarray(attention_mask(segments, prefix))[:, 0]
    different = segments[:, :, None] != segments[:, None, :]
    assert not (mask & different).any()
    for row in range(segments.shape[0]):
      for seg in set(segments[row]) - {0}:
        where = np.flatnonzero(segments[row] == seg)
        np.testing.assert_array_equal(batch["decoder_positions"][row, where], np.arange(where.size))
        assert batch["decoder_input_tokens"][row, where[0]] == 0  # each document starts from BOS
        # a prefix is a run at the start of its segment, one longer than its targets (seqio's convention)
        p = int(prefix[row, where].sum())
        assert prefix[row, where[:p]].all()
        if p:
          assert not batch["decoder_loss_weights"][row, where[: p - 1]].any()
    assert not batch["decoder_loss_weights"][segments == 0].any()
  assert most_segments >= 2  # several documents in a row: packing happened


def test_host_shards_are_disjoint_and_cover_the_data(local_tasks):
  _bind_rates({"causal_lm": 1.0})

  def sources(shard):
    ds = pipeline.examples_dataset("local_pl", {"targets": 512}, split="validation", shuffle=False, shard_info=shard)
    return [tuple(e["source"]) for e in ds.as_numpy_iterator()]

  everything = sources(seqio.ShardInfo(0, 1))
  first, second = sources(seqio.ShardInfo(0, 2)), sources(seqio.ShardInfo(1, 2))
  assert first and second
  assert not set(first) & set(second)
  assert sorted(first + second) == sorted(everything)


@pytest.mark.slow
def test_same_seed_same_batches_and_restored_iterator_continues(local_corpus, tmp_path):
  from jaxformer.tasks import local

  gin.parse_config("tasks.shuffle_buffer_size.size = 64")
  local.register_local_tasks(corpus_dir=local_corpus)
  _bind_rates(MIX)
  config = pipeline.DataConfig(
    mixture_or_task_name="local_pl_nl", task_feature_lengths={"targets": 128}, batch_size=2, seed=7
  )
  make = lambda: pipeline.BatchIterator(pipeline.get_dataset(config, shard_info=seqio.ShardInfo(0, 1)))
  reference = make()
  expected = [next(reference)["decoder_target_tokens"] for _ in range(6)]
  again = make()
  for i in range(3):
    np.testing.assert_array_equal(next(again)["decoder_target_tokens"], expected[i])
  path = again.save(str(tmp_path / "iterator" / "ckpt"))
  resumed = make()
  resumed.restore(path)
  for i in range(3, 6):
    np.testing.assert_array_equal(next(resumed)["decoder_target_tokens"], expected[i])
  other = pipeline.BatchIterator(
    pipeline.get_dataset(pipeline.DataConfig(**{**config.__dict__, "seed": 8}), shard_info=seqio.ShardInfo(0, 1))
  )
  assert any(not np.array_equal(next(other)["decoder_target_tokens"], e) for e in expected[:3])


def test_build_local_skips_bad_files_by_reason(tmp_path):
  root = tmp_path / "root"
  root.mkdir()
  (root / "good.py").write_text("def good():\n    return 1\n")
  (root / "copy.py").write_text("def good():\n    return 1\n")
  (root / "empty.py").write_text("  \n")
  (root / "binary.c").write_bytes(b"int x;\x00\x01")
  (root / "latin1.sh").write_bytes("echo 'caf\xe9'\n".encode("latin-1"))
  (root / "min.js").write_text("var a=1;" * 400)
  (root / "big.py").write_text("x = 1\n" * 50000)
  (root / "README.md").write_text("# A readme\n\nSome prose.\n")
  (root / "broken.txt.gz").write_bytes(b"not gzip at all")
  (root / "NEWS.gz").write_bytes(gzip.compress(b"Version 2: news in a gzip.\n"))
  stats = corpus.build_local_corpus(
    str(tmp_path / "out"), roots=[str(root)], options=corpus.CorpusOptions(max_bytes=1 << 20, validation_percent=0)
  )
  assert stats["skipped"] == {
    "binary": 1,
    "duplicate": 1,
    "empty": 1,
    "minified": 1,
    "non_utf8": 1,
    "oversized": 1,
    "unreadable": 1,
  }
  assert stats["classes"]["pl"]["train"]["documents"] == 1
  assert stats["classes"]["nl"]["train"]["documents"] == 2
  again = corpus.build_local_corpus(
    str(tmp_path / "out2"), roots=[str(root)], options=corpus.CorpusOptions(max_bytes=1 << 20, validation_percent=0)
  )
  assert again["classes"] == stats["classes"]


def test_missing_corpus_or_tokenizer_names_the_command(tmp_path, local_corpus, capsys):
  assert cli.main(["data", "show", "--gin_file=data/local.gin", f"--gin.CORPUS_DIR='{tmp_path}/none'"]) == 2
  assert "jaxformer data build-local" in capsys.readouterr().err
  no_tokenizer = tmp_path / "corpus"
  no_tokenizer.mkdir()
  with open(os.path.join(local_corpus, "stats.json")) as f:
    (no_tokenizer / "stats.json").write_text(f.read())
  assert cli.main(["data", "show", "--gin_file=data/local.gin", f"--gin.CORPUS_DIR='{no_tokenizer}'"]) == 2
  assert "jaxformer data train-tokenizer" in capsys.readouterr().err


def test_feature_length_too_short_for_span_format_fails_clearly(local_tasks):
  _bind_rates({"span_corruption": 1.0})
  with pytest.raises(ValueError, match="too short for span corruption"):
    pipeline.examples_dataset("local_pl", {"targets": 40})


def test_empty_task_fails_clearly(tmp_path, local_corpus):
  from jaxformer.tasks import local

  (tmp_path / "nothing").mkdir()
  with pytest.raises(ValueError, match="found no documents"):  # an empty corpus is never written
    corpus.build_local_corpus(str(tmp_path / "unbuilt"), roots=[str(tmp_path / "nothing")])
  assert not (tmp_path / "unbuilt").exists()
  empty = tmp_path / "empty"  # one written by hand, or by an older version
  for kind in ("pl", "nl"):
    (empty / kind).mkdir(parents=True)
  (empty / "stats.json").write_text(json.dumps({"classes": {}}))
  with pytest.raises(ValueError, match="hold no documents"):
    local.register_local_tasks(corpus_dir=str(empty), vocabulary_path=os.path.join(local_corpus, "spm.model"))


def test_data_show_json_gives_objective_inputs_and_source(local_corpus, capsys):
  args = [
    "data",
    "show",
    "--gin_file=data/local.gin",
    "--gin_file=objectives/codegen2.gin",
    f"--gin.CORPUS_DIR='{local_corpus}'",
    "--gin.TASK_FEATURE_LENGTHS={'targets': 160}",
    "--num_examples=12",
    "--json",
  ]
  assert cli.main(args) == 0
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
  assert len(rows) == 12
  assert {r["objective"] for r in rows} <= {"causal_lm", "span_corruption"}
  span = [r for r in rows if r["objective"] == "span_corruption"]
  assert span and all("<|endoftext|><sep><mask_1>" in r["inputs_text"] for r in span)
  assert all(r["source_text"] for r in rows) and all(r["restores_source"] for r in rows)


def test_convert_jsonl_and_parquet_into_file_tasks_with_mixture_rates(local_corpus, tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq

  from jaxformer.tasks import corpora

  raw = tmp_path / "raw"
  raw.mkdir()
  lines = [json.dumps({"content": f"alpha document {i}\n" * 3}) for i in range(300)]
  lines.insert(5, "{not json")
  lines.insert(9, json.dumps({"other": "no content field"}))
  with gzip.open(raw / "alpha.jsonl.gz", "wt") as f:
    f.write("\n".join(lines) + "\n")
  pq.write_table(pa.table({"content": [f"beta document {i}\n" * 3 for i in range(300)]}), raw / "beta.parquet")
  stats_a = convert.convert_files(str(raw / "alpha.jsonl.gz"), str(tmp_path / "alpha"), text_field="content")
  assert stats_a["skipped"] == {"not JSON": 1, "no text in field 'content'": 1}
  assert stats_a["skipped_examples"]["not JSON"] == [f"{raw}/alpha.jsonl.gz:6"]  # file and line of the bad record
  assert stats_a["written"]["train"] + stats_a["written"]["validation"] == 300
  assert (
    cli.main(
      ["data", "convert", f"--input={raw}/beta.parquet", f"--output_dir={tmp_path}/beta", "--text_field=content"]
    )
    == 0
  )
  corpora.register_configured(
    vocabulary_path=os.path.join(local_corpus, "spm.model"),
    file_tasks={"alpha": str(tmp_path / "alpha"), "beta": str(tmp_path / "beta")},
    mixtures={"alpha_beta": [("alpha", 0.75), ("beta", 0.25)]},
  )
  _bind_rates({"causal_lm": 1.0})
  vocab = seqio.get_mixture_or_task("alpha").output_features["targets"].vocabulary
  counts = collections.Counter(
    vocab.decode(e["source"]).split()[0]
    for e in pipeline.examples_dataset("alpha_beta", {"targets": 64}, num_epochs=None).take(800).as_numpy_iterator()
  )
  assert abs(counts["alpha"] / 800 - 0.75) < 0.06, counts


def test_tokenizers_json_vocabulary_encodes_in_tf_and_python(tmp_path):
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  tokenizer.train_from_iterator(
    [CODE] * 20,
    trainers.BpeTrainer(
      vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    ),
  )
  path = str(tmp_path / "tokenizer.json")
  tokenizer.save(path)
  vocab = vocabulary.TokenizersVocabulary(path)
  ids = vocab.encode(CODE)
  assert vocab.decode(ids) == CODE
  assert vocab.encode_tf(tf.constant(CODE)).numpy().tolist() == ids
  assert vocab.eos_id == tokenizer.token_to_id("<|endoftext|>")


def test_tfds_dataset_by_name_is_a_task(local_corpus, tmp_path):
  import tensorflow_datasets as tfds

  from jaxformer.tasks import corpora

  class JaxformerTinyText(tfds.core.GeneratorBasedBuilder):
    """A real TFDS dataset, prepared offline in the test."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({"body": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(40), "validation": self._generate_examples(4)}

    def _generate_examples(self, n):
      for i in range(n):
        yield i, {"body": f"def tfds_{i}():\n    return {i}\n"}

  JaxformerTinyText(data_dir=str(tmp_path)).download_and_prepare()
  corpora.register_configured(
    vocabulary_path=os.path.join(local_corpus, "spm.model"),
    tfds_data_dir=str(tmp_path),
    tfds_tasks={"tiny_text": ("jaxformer_tiny_text:1.0.0", "body")},
  )
  _bind_rates({"causal_lm": 1.0})
  vocab = seqio.get_mixture_or_task("tiny_text").output_features["targets"].vocabulary
  examples = list(
    pipeline.examples_dataset("tiny_text", {"targets": 64}, split="validation", shuffle=False).as_numpy_iterator()
  )
  assert sorted(vocab.decode(e["source"]) for e in examples) == sorted(
    f"def tfds_{i}():\n    return {i}\n" for i in range(4)
  )


def test_small_pl_task_repeats_the_same_documents_every_epoch(local_corpus):
  from jaxformer.tasks import local

  gin.bind_parameter("objectives.objective_mixture.rates", {"causal_lm": 1.0})
  local.register_local_tasks(corpus_dir=local_corpus, small_pl_documents=5)
  task = seqio.get_mixture_or_task("local_pl_small")

  def chunks(num_epochs):
    ds = task.get_dataset({"targets": 128}, split="train", shuffle=False, num_epochs=num_epochs, use_cached=False)
    return [tuple(x["targets"]) for x in ds.take(10_000).as_numpy_iterator()]

  one = chunks(1)
  three = chunks(3)
  assert len(one) > 5 and three == one * 3  # exactly 5 documents' chunks, three times over
  assert len(chunks(None)) == 10_000  # an unbounded run never runs dry


def test_small_pl_task_by_token_budget_keeps_the_first_documents_that_fit(local_corpus):
  from jaxformer.tasks import local

  gin.bind_parameter("objectives.objective_mixture.rates", {"causal_lm": 1.0})
  local.register_local_tasks(corpus_dir=local_corpus)
  documents = seqio.get_mixture_or_task("local_pl_small").get_dataset(
    {"targets": 100_000}, split="train", shuffle=False, num_epochs=1, use_cached=False
  )
  lengths = [len(x["targets"]) for x in documents.as_numpy_iterator()]  # one chunk per document
  budget = sum(lengths[:3]) + lengths[3] // 2  # three documents fit, the fourth does not
  local.register_local_tasks(corpus_dir=local_corpus, small_pl_tokens=budget)
  small = seqio.get_mixture_or_task("local_pl_small").get_dataset(
    {"targets": 100_000}, split="train", shuffle=False, num_epochs=2, use_cached=False
  )
  assert [len(x["targets"]) for x in small.as_numpy_iterator()] == lengths[:3] * 2
  assert "local_nl_only" in seqio.MixtureRegistry.names()
  with pytest.raises(ValueError, match="small_pl_tokens"):
    local.register_local_tasks(corpus_dir=local_corpus, small_pl_tokens=0)
