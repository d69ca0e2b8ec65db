"""Best-fit packing (data/packing.py): every example once and whole, seqio's packed layout, fewer rows
than seqio's greedy packer on the same examples, and an iterator that checkpoints and restores exactly."""

import numpy as np
import pytest
import seqio
import tensorflow as tf

from jaxformer.data.pipeline import packing

KEYS = ("targets", "targets_loss")


def _examples(count: int, high: int, seed: int = 0):
  """Examples whose tokens name them: example i is 1000 * (i + 1) + 0, 1, 2, ... (never 0)."""
  lengths = np.random.default_rng(seed).integers(1, high, count)
  examples = [
    {"targets": 1000 * (i + 1) + np.arange(n, dtype=np.int32), "targets_loss": np.full(n, i % 2 + 1, np.int32)}
    for i, n in enumerate(lengths)
  ]
  ragged = {k: tf.ragged.constant([e[k] for e in examples], dtype=tf.int32) for k in KEYS}
  return examples, tf.data.Dataset.from_tensor_slices(ragged)  # checkpointable, unlike from_generator


def _segments(rows):
  """(example index, its tokens) of every packed segment, checking the layout on the way."""
  out = []
  for row in rows:
    segment_ids, positions = row["targets_segment_ids"], row["targets_positions"]
    assert ((row["targets"] > 0) == (segment_ids > 0)).all()  # padding is 0 everywhere, and only there
    for s in range(1, segment_ids.max() + 1):
      at = np.flatnonzero(segment_ids == s)
      assert at.size and (np.diff(at) == 1).all()  # one contiguous run per segment
      assert (positions[at] == np.arange(at.size)).all()
      tokens = row["targets"][at]
      index = int(tokens[0]) // 1000 - 1
      assert (row["targets_loss"][at] == index % 2 + 1).all()
      out.append((index, tokens))
  return out


@pytest.mark.parametrize("length,high,bins", [(64, 40, 4), (256, 257, 16), (2048, 900, 16)])
def test_every_example_lands_once_whole_and_rows_are_fewer_than_seqio(length, high, bins):
  examples, dataset = _examples(300, high)
  rows = list(packing.best_fit_pack(dataset, KEYS, length, bins).as_numpy_iterator())
  segments = sorted(_segments(rows), key=lambda x: x[0])
  assert [i for i, _ in segments] == list(range(len(examples)))
  for (_, tokens), example in zip(segments, examples):
    assert np.array_equal(tokens, example["targets"][:length])
  greedy = list(seqio.utils.trim_and_pack_dataset(dataset, {k: length for k in KEYS}).as_numpy_iterator())
  fill = lambda rs: sum(int((r["targets"] > 0).sum()) for r in rs) / (len(rs) * length)
  assert len(rows) < len(greedy), (fill(rows), fill(greedy))
  assert fill(rows) > fill(greedy)


def test_the_open_rows_checkpoint_with_the_iterator(tmp_path):
  _, dataset = _examples(400, 60, seed=1)
  packed = packing.best_fit_pack(dataset.repeat(), KEYS, 64, bins=8)
  iterator = iter(packed)
  for _ in range(7):
    next(iterator)
  checkpoint = tf.train.Checkpoint(iterator=iterator)
  path = checkpoint.write(str(tmp_path / "ckpt"))
  expected = [next(iterator) for _ in range(20)]
  restored = iter(packed)
  tf.train.Checkpoint(iterator=restored).read(path).assert_consumed()
  for want, got in zip(expected, [next(restored) for _ in range(20)]):
    for key in want:
      assert np.array_equal(want[key].numpy(), got[key].numpy()), key


def test_bad_bins_fail():
  with pytest.raises(ValueError, match="bins=0"):
    packing.best_fit_pack(_examples(3, 5)[1], KEYS, 8, bins=0)
