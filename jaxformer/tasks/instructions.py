"""Instruction tasks: a folder `jaxformer data convert-instructions` wrote, as a seqio task whose examples are
prompt + completion (+ EOS, already in the records) with the loss on the completion only (or on every token:
tasks.instruction_loss.prompt_loss = True). No objective runs on them; the pipeline packs them as any task,
with segment ids, so packed examples never attend to each other (data/pipeline/features.py).

    tasks.register_configured.vocabulary_path = %VOCABULARY
    tasks.register_configured.instruction_tasks = {'my_sft': %INSTRUCTIONS_DIR}
"""

import json
import os

import gin
import seqio
import tensorflow as tf

from jaxformer.data.ingest.instructions import FOLDER, SPLITS
from jaxformer.data.pipeline.cache import vocabulary_digest
from jaxformer.tasks.local import output_features, shuffle_buffer_size


@gin.configurable(module="tasks")
def instruction_loss(prompt_loss: bool = False) -> bool:
  """prompt_loss: the loss also counts the prompt's tokens (default: the completion's only)."""
  if not isinstance(prompt_loss, bool):
    raise ValueError(f"tasks.instruction_loss.prompt_loss={prompt_loss!r} must be True or False")
  return prompt_loss


def _stats(folder: str, vocabulary) -> dict:
  path = os.path.join(folder, "stats.json")
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
      f"{path} is missing: write {folder} with `jaxformer data convert-instructions --output_dir={folder}`"
    )
  with tf.io.gfile.GFile(path) as f:
    stats = json.load(f)
  if stats.get("vocabulary_sha256") != vocabulary_digest(vocabulary):
    raise ValueError(
      f"{folder} was tokenised with {stats.get('vocabulary')} (sha256 {str(stats.get('vocabulary_sha256'))[:12]}), "
      f"not with VOCABULARY={getattr(vocabulary, 'path', None) or vocabulary.model_path}: convert it again with "
      "this run's tokenizer"
    )
  return stats


def _to_targets(prompt_loss: bool):
  @seqio.map_over_dataset
  @tf.autograph.experimental.do_not_convert
  def to_targets(example):
    prompt = tf.cast(example["prompt_ids"], tf.int32)
    completion = tf.cast(example["completion_ids"], tf.int32)
    targets = tf.concat([prompt, completion], 0)
    on_prompt = tf.ones_like(prompt) if prompt_loss else tf.zeros_like(prompt)
    return {
      "targets": targets,
      "targets_loss": tf.concat([on_prompt, tf.ones_like(completion)], 0),
      "targets_prefix": tf.zeros_like(targets),
    }

  return to_targets


CONVERTED_FOR = {}  # task name -> (folder, the --max_length it was converted for)


def check_lengths(mixture_or_task_name: str, length: int) -> None:
  """ValueError when an instruction task of the run holds records longer than its rows: seqio would cut
  them at the end, where the completion and its EOS are."""
  task = seqio.get_mixture_or_task(mixture_or_task_name)
  for sub in getattr(task, "tasks", [task]):
    if sub.name in CONVERTED_FOR and CONVERTED_FOR[sub.name][1] > length:
      folder, converted = CONVERTED_FOR[sub.name]
      raise ValueError(
        f"{folder} was converted for records of up to {converted} tokens (--max_length) and "
        f"TASK_FEATURE_LENGTHS['targets']={length}: longer records would lose their completions; convert it "
        f"again with --max_length={length}, or lengthen the rows"
      )


def instruction_task(name: str, folder: str, vocabulary) -> seqio.Task:
  """Registers (or re-registers) the task over a convert-instructions folder."""
  CONVERTED_FOR[name] = (folder, _stats(folder, vocabulary)["max_length"])
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  patterns = {split: os.path.join(folder, FOLDER, f"{split}-*.tfrecord") for split in SPLITS}
  ids = tf.io.FixedLenSequenceFeature([], tf.int64, allow_missing=True)
  source = seqio.TFExampleDataSource(
    split_to_filepattern=patterns, feature_description={"prompt_ids": ids, "completion_ids": ids}
  )
  return seqio.TaskRegistry.add(
    name,
    source=source,
    output_features=output_features(vocabulary),
    preprocessors=[_to_targets(instruction_loss())],
    shuffle_buffer_size=shuffle_buffer_size(),
  )
