"""Exact match of greedy completions on a `data convert-instructions` split: the fine-tuning check a reader
can run on any run (`jaxformer eval exact-match`). A completion matches when its tokens up to EOS are the
record's completion tokens exactly."""

import os

import numpy as np

from jaxformer.data.ingest.instructions import FOLDER


def read_records(folder: str, split: str, max_examples: int) -> list[tuple[list[int], list[int]]]:
  """(prompt ids, completion ids with their EOS) of the first max_examples records of the split."""
  import tensorflow as tf

  pattern = os.path.join(folder, FOLDER, f"{split}-*.tfrecord")
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise FileNotFoundError(f"{pattern} matches no file: convert with `jaxformer data convert-instructions`")
  ids = tf.io.FixedLenSequenceFeature([], tf.int64, allow_missing=True)
  spec = {"prompt_ids": ids, "completion_ids": ids}
  out = []
  for raw in tf.data.TFRecordDataset(files).take(max_examples):
    example = tf.io.parse_single_example(raw, spec)
    out.append((example["prompt_ids"].numpy().tolist(), example["completion_ids"].numpy().tolist()))
  return out


def exact_match(model, params, vocabulary, records, max_new_tokens: int, batch_size: int = 32) -> dict:
  """{"exact_match": share of records whose greedy completion equals theirs, "examples": n}."""
  from jaxformer.infer.sample import bos_of, generate

  eos = vocabulary.eos_id
  matches = 0
  for start in range(0, len(records), batch_size):
    chunk = records[start : start + batch_size]
    completions = generate(
      model, params, [p for p, _ in chunk], max_new_tokens, stop_ids=(eos,), bos_id=bos_of(vocabulary)
    )
    for (_, expected), got in zip(chunk, completions):
      want = expected[:-1] if expected and expected[-1] == eos else expected
      matches += int(list(got) == list(want))
  return {"exact_match": matches / max(len(records), 1), "examples": len(records)}


def completion_lengths(records) -> int:
  """The longest completion (with EOS): enough new tokens to match every record."""
  return int(np.max([len(c) for _, c in records])) if records else 1
