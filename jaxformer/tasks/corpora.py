"""Tasks over real corpora, configured in gin:

    tasks.register_configured.vocabulary_path = "/path/spm.model"   # or a tokenizer.json
    tasks.register_configured.file_tasks = {"the_stack_python": "gs://bucket/stack-python"}
    tasks.register_configured.tfds_tasks = {"wiki": ("wikipedia/20230601.en:1.0.0", "text")}
    tasks.register_configured.mixtures = {"stack_pile": [("the_stack_python", 0.8), ("pile", 0.2)]}

A file task reads a folder written by `jaxformer data convert` (TFRecord, so the data iterator
can be checkpointed); a TFDS task reads a prepared TFDS dataset under TFDS_DATA_DIR.
"""

import os

import gin
import seqio
import tensorflow as tf

from jaxformer.data.pipeline.vocabulary import load_vocabulary
from jaxformer.tasks.local import add_mixture, text_source, text_task


def converted_source(folder: str) -> seqio.DataSource:
  patterns = {split: os.path.join(folder, "text", f"{split}-*.tfrecord") for split in ("train", "validation")}
  if not tf.io.gfile.glob(patterns["train"]):
    raise FileNotFoundError(
      f"{folder} holds no converted shards ({patterns['train']}); write them with "
      f"`jaxformer data convert --input='FILES*.jsonl.gz' --output_dir={folder}`"
    )
  return text_source(patterns)


def tfds_source(tfds_name: str, data_dir: str | None = None) -> seqio.DataSource:
  return seqio.TfdsDataSource(
    tfds_name=tfds_name, tfds_data_dir=data_dir, splits={"train": "train", "validation": "validation"}
  )


@gin.configurable(module="tasks")
def register_configured(
  vocabulary_path: str | None = None,
  file_tasks: dict | None = None,
  tfds_tasks: dict | None = None,
  mixtures: dict | None = None,
  tfds_data_dir: str | None = None,
  instruction_tasks: dict | None = None,
) -> None:
  """Registers the gin-configured file and TFDS tasks and mixtures.

  tfds_tasks: {task name: (TFDS name with version, text feature key)}, read from tfds_data_dir
  (default: TFDS's own, $TFDS_DATA_DIR); the datasets must be prepared there already.
  instruction_tasks: {task name: a `jaxformer data convert-instructions` folder} (tasks/instructions.py).
  """
  file_tasks, tfds_tasks, mixtures = file_tasks or {}, tfds_tasks or {}, mixtures or {}
  instruction_tasks = instruction_tasks or {}
  if (file_tasks or tfds_tasks or instruction_tasks) and not vocabulary_path:
    raise ValueError(
      "tasks.register_configured.vocabulary_path is not set (a SentencePiece .model or a tokenizers .json)"
    )
  vocabulary = load_vocabulary(vocabulary_path) if vocabulary_path else None
  for name, folder in file_tasks.items():
    text_task(name, converted_source(folder), vocabulary)
  for name, (tfds_name, text_key) in tfds_tasks.items():
    text_task(name, tfds_source(tfds_name, tfds_data_dir), vocabulary, text_key=text_key)
  for name, folder in instruction_tasks.items():
    from jaxformer.tasks.instructions import instruction_task

    instruction_task(name, folder, vocabulary)
  for name, tasks_and_rates in mixtures.items():
    add_mixture(name, [tuple(x) for x in tasks_and_rates])
