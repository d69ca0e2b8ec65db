"""Span sampling laws: single spans are common at any length, the old rule stays selectable, every law
inverts to its source and is seeded; `data stats` reports them."""

import json
import math

import gin
import numpy as np
import pytest

from jaxformer import cli, objectives
from jaxformer.data import pipeline
from jaxformer.objectives import span_corruption

SPAN_ONLY = {"span_corruption": 1.0}
OLD_RULE = {"num_spans_law": "noise_density", "span_length_law": "noise_density"}


@pytest.fixture
def tasks_64(local_corpus):
  """The local tasks over the session corpus with a 64-example shuffle buffer (a 1000 one reads the
  whole small corpus before the first 2048-token example); returns the vocabulary."""
  from jaxformer.tasks import local

  gin.parse_config("tasks.shuffle_buffer_size.size = 64")
  return local.register_local_tasks(corpus_dir=local_corpus)


def _span_examples(length: int, count: int, seed: int = 0, **span):
  """The first `count` span corruption examples of local_pl at `length` with SpanCorruption bindings."""
  with gin.unlock_config():
    gin.parse_config(
      [f"objectives.objective_mixture.rates = {SPAN_ONLY!r}"]
      + [f"objectives.SpanCorruption.{k} = {v!r}" for k, v in span.items()]
    )
  dataset = pipeline.examples_dataset("local_pl", {"targets": length}, seed=seed)
  return [
    e
    for e in dataset.take(count).as_numpy_iterator()
    if objectives.by_id(int(e["objective"])).name == "span_corruption"
  ]


def _span_counts(examples, ids) -> np.ndarray:
  return np.array([len(span_corruption.span_structure(e["targets"], ids)[1]) for e in examples])


@pytest.mark.parametrize("length", [2048, 512])
def test_default_law_gives_single_spans_often_and_max_spans_rarely(tasks_64, length):
  ids = tasks_64.special
  counts = _span_counts(_span_examples(length, 48), ids)
  assert counts.size >= 40
  assert np.mean(counts == 1) >= 0.25, np.bincount(counts)
  assert np.mean(counts >= 16) <= 0.1, np.bincount(counts)


def test_old_noise_density_rule_is_still_selectable_and_differs(tasks_64):
  ids = tasks_64.special
  counts = _span_counts(_span_examples(2048, 40, **OLD_RULE), ids)
  assert np.mean(counts == 16) > 0.5, np.bincount(counts)  # the rule this change replaces as the default


@pytest.mark.parametrize(
  "span",
  [
    {},
    {"num_spans_law": "poisson", "poisson_lambda": 2.0},
    {"num_spans_law": "geometric"},
    {"num_spans_law": "uniform"},
    {"num_spans_law": "noise_density"},
    {"span_length_law": "noise_density"},
    OLD_RULE,
  ],
  ids=lambda span: ",".join(f"{k}={v}" for k, v in span.items()) or "defaults",
)
@pytest.mark.slow
def test_every_law_inverts_exactly_to_its_source(tasks_64, span):
  ids = tasks_64.special
  examples = _span_examples(256, 16, **span)
  assert examples
  for example in examples:
    source = list(example["source"])
    source = source[:-1] if source[-1] == ids.eos else source
    assert len(example["targets"]) <= 256
    assert span_corruption.invert(example["targets"], ids) == source
    masks = [ids.masks.index(t) + 1 for t in example["targets"] if t in ids.masks]
    k = len(span_corruption.span_structure(example["targets"], ids)[1])
    assert k <= 16 and masks == list(range(1, k + 1)) * 2  # <mask_k> numbered in order, in text and infill


@pytest.mark.slow
def test_same_seed_same_examples(tasks_64):
  first = [e["targets"] for e in _span_examples(256, 12, seed=5)]
  again = [e["targets"] for e in _span_examples(256, 12, seed=5)]
  other = [e["targets"] for e in _span_examples(256, 12, seed=6)]
  assert len(first) == len(again) and all(np.array_equal(a, b) for a, b in zip(first, again))
  assert any(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(first, other))


def test_span_count_laws_and_bad_names():
  pmf = objectives.span_count_pmf(objectives.SpanCorruption(), 16)
  assert pmf[0] == pytest.approx(math.exp(-1) / (1 - math.exp(-1)), rel=1e-6)  # Poisson(1) given K >= 1
  assert objectives.span_count_pmf(objectives.SpanCorruption(num_spans_law="uniform"), 16) == [1 / 16] * 16
  capped = objectives.span_count_pmf(objectives.SpanCorruption(num_spans_law="geometric", geometric_p=0.1), 4)
  assert sum(capped) == pytest.approx(1) and capped[-1] == pytest.approx(0.9**3)  # the tail lands on the cap
  with pytest.raises(ValueError, match="num_spans_law='zipf' is not one of"):
    objectives.SpanCorruption(num_spans_law="zipf")
  with pytest.raises(ValueError, match="min_fraction"):
    objectives.SpanCorruption(min_fraction=0.6, max_fraction=0.5)


def test_data_stats_prints_table_json_and_png(local_corpus, tmp_path, capsys):
  png = tmp_path / "plots" / "stats.png"
  args = [
    "data",
    "stats",
    "--gin_file=data/local.gin",
    "--gin_file=objectives/codegen2.gin",
    f"--gin.CORPUS_DIR='{local_corpus}'",
    "--gin.TASK_FEATURE_LENGTHS={'targets': 256}",
    "--gin.tasks.shuffle_buffer_size.size=64",
    "--gin.MIXTURE_OR_TASK_NAME='local_pl'",  # one task: half the pipelines to build
    "--gin.LOSS_PLACEMENT='infill'",  # not the default: the loss share below is the infill targets'
    "--num_examples=30",
    "--num_batches=2",
    "--json",
    f"--output_png={png}",
  ]
  assert cli.main(args) == 0
  out = capsys.readouterr().out.strip().splitlines()
  assert any(line.startswith("span corruption: loss on 'infill' (LOSS_PLACEMENT); spans per example") for line in out)
  assert any(line.startswith("packing (2 batches, 16 rows): fill") for line in out)
  report = json.loads(out[-1])
  span = report["objectives"]["span_corruption"]
  assert sum(span["span_counts"].values()) == span["examples"] > 0
  assert sum(o["examples"] for o in report["objectives"].values()) == 30
  assert report["settings"]["span_corruption"]["num_spans_law"] == "truncated_poisson"
  assert span["loss_placement"] == "infill"
  assert math.isclose(sum(o["share_of_loss"] for o in report["objectives"].values()), 1.0)
  assert span["share_of_loss"] < report["objectives"]["causal_lm"]["share_of_loss"]  # infill targets only
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_placement_by_name_moves_span_corruptions_loss(tasks_64):
  ids = tasks_64.special

  def examples(placement):
    with gin.unlock_config():
      gin.parse_config(f"objectives.SpanCorruption.loss_placement = {placement!r}")
    return _span_examples(256, 6)

  infill, whole = examples("infill"), examples("sequence")
  assert len(infill) == len(whole) >= 4  # of 6 chunks (one of a token and its <|endoftext|> stays causal LM)
  for a, b in zip(infill, whole):
    assert np.array_equal(a["targets"], b["targets"])  # same seed, same examples: only the loss moves
    after_sep = list(a["targets"]).index(ids.sep) + 1
    assert a["targets_loss"][:after_sep].sum() == 0 and a["targets_loss"][after_sep:].all()
    assert b["targets_loss"].all()
  with pytest.raises(ValueError, match=r"LOSS_PLACEMENT.*'targets_only' is not one of \['infill', 'sequence'\]"):
    examples("targets_only")
