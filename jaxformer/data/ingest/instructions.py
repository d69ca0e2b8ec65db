"""Instruction data (JSONL, local or gs://, .gz too) -> token records, once, as `data convert` does for
corpora: fine-tuning then reads native TFRecords, so its data position is saved and resumed exactly.

A line is {"prompt": ..., "completion": ...}, or {"messages": [{"role": ..., "content": ...}, ...]} ending in
an assistant message. Messages are rendered with the tokenizer's chat template (tokenizer_config.json's
`chat_template` beside a tokenizer.json, as HF ships it and `jaxformer import` keeps it) and otherwise with
PLAIN_TEMPLATE; the prompt is the conversation up to the last assistant message with the generation prompt,
the completion is the rest of the rendering. The completion's tokens end with EOS.

Written: OUTPUT_DIR/instructions/{train,validation}-00000-of-00001.tfrecord, tf.train.Examples of int64
`prompt_ids` and `completion_ids`, and OUTPUT_DIR/stats.json (counts, skips by reason with the first
FILE:LINE of each, the vocabulary's sha256, the context length). A line that is not JSON, lacks the fields,
is empty or is longer than the context is skipped and counted; a chat template that fails on a record
stops the conversion with the record's FILE:LINE.
"""

import dataclasses
import gzip
import hashlib
import json
import os

from jaxformer import fs
from jaxformer.data.pipeline.vocabulary import escape_sentinels_text
from jaxformer.errors import UserError

FOLDER = "instructions"
SPLITS = ("train", "validation")
# Without a chat template: each message as <|role|>, newline, content, newline; the generation prompt opens
# the assistant's turn. Documented in docs/FINETUNE.md.
PLAIN_TEMPLATE = "plain: <|role|>\\ncontent\\n per message, <|assistant|>\\n to generate"


@dataclasses.dataclass(frozen=True)
class InstructionOptions:
  max_length: int = 2048  # tokens of prompt + completion + EOS (the run's TASK_FEATURE_LENGTHS['targets'])
  validation_percent: int = 5  # share of records held out, by content hash
  prompt_field: str = "prompt"
  completion_field: str = "completion"
  messages_field: str = "messages"


class Skip(Exception):
  """A record that is skipped and counted (its reason is the message)."""


def _lines(path: str):
  """(line number, bytes) of a file, through gzip for .gz: each line is decoded on its own (a bad one is
  skipped, not the file)."""
  with gzip.open(fs.open(path, "rb")) if path.endswith(".gz") else fs.open(path, "rb") as f:
    yield from enumerate(f, 1)


def _text(raw: bytes) -> str:
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError:
    raise Skip("not UTF-8") from None


def _valid(text: str) -> str:
  try:
    text.encode("utf-8")  # a lone surrogate ("\ud800" in the JSON) is no text a tokenizer takes
  except UnicodeEncodeError:
    raise Skip("not valid Unicode (a lone surrogate)") from None
  return text


def chat_template(vocabulary_path: str) -> dict | None:
  """{"template", "bos_token", "eos_token"} from tokenizer_config.json beside a tokenizer.json, or None."""
  if not vocabulary_path.endswith(".json"):
    return None
  path = os.path.join(os.path.dirname(vocabulary_path), "tokenizer_config.json")
  if not fs.exists(path):
    return None
  with fs.open(path) as f:
    config = json.load(f)
  template = config.get("chat_template")
  if isinstance(template, list):  # several named templates: the default one
    template = next((t["template"] for t in template if t.get("name") == "default"), None)
  if not template:
    return None
  token = lambda v: v.get("content", "") if isinstance(v, dict) else (v or "")
  return {
    "template": template,
    "bos_token": token(config.get("bos_token")),
    "eos_token": token(config.get("eos_token")),
  }


def _compile(chat: dict):
  """The template as transformers renders it: a sandboxed jinja2 environment, trim_blocks and lstrip_blocks."""
  from jinja2.sandbox import ImmutableSandboxedEnvironment

  def raise_exception(message):
    raise ValueError(message)

  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
  env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
  env.globals["raise_exception"] = raise_exception
  template = env.from_string(chat["template"])
  tokens = {"bos_token": chat["bos_token"], "eos_token": chat["eos_token"]}
  return lambda messages, generate: template.render(messages=messages, add_generation_prompt=generate, **tokens)


def _plain(messages, generate: bool) -> str:
  text = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
  return text + ("<|assistant|>\n" if generate else "")


def _messages(value) -> list[dict]:
  if not isinstance(value, list) or not value:
    raise Skip("messages is not a non-empty list")
  for m in value:
    if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
      raise Skip("a message lacks a string role or content")
  if value[-1]["role"] != "assistant":
    raise Skip("the last message is not the assistant's")
  if not value[-1]["content"].strip():
    raise Skip("empty completion")
  return [dict(m, content=escape_sentinels_text(_valid(m["content"])), role=_valid(m["role"])) for m in value]


def texts(record, options: InstructionOptions, render) -> tuple[str, str]:
  """(prompt, completion) of one parsed line; Skip for one that is unusable."""
  if not isinstance(record, dict):
    raise Skip("not a JSON object")
  if options.messages_field in record:
    messages = _messages(record[options.messages_field])
    prompt = render(messages[:-1], True)
    whole = render(messages, False)
    if not whole.startswith(prompt):
      raise ValueError("the template does not render the conversation's start as the prompt it renders alone")
    return prompt, whole[len(prompt) :]
  prompt, completion = record.get(options.prompt_field), record.get(options.completion_field)
  if prompt is None or completion is None:
    fields = f"{options.prompt_field!r} and {options.completion_field!r}, or {options.messages_field!r}"
    raise Skip(f"no {fields}")
  if not isinstance(prompt, str) or not isinstance(completion, str):
    raise Skip("prompt or completion is not a string")
  if not prompt.strip():
    raise Skip("empty prompt")
  if not completion.strip():
    raise Skip("empty completion")
  return escape_sentinels_text(_valid(prompt)), escape_sentinels_text(_valid(completion))


def _example(prompt_ids, completion_ids):
  import tensorflow as tf

  feature = lambda ids: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(i) for i in ids]))
  features = {"prompt_ids": feature(prompt_ids), "completion_ids": feature(completion_ids)}
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def convert_instructions(
  input_pattern: str, output_dir: str, vocabulary_path: str, options: InstructionOptions, overwrite: bool = False
) -> dict:
  """Converts every file of input_pattern; returns the stats written to OUTPUT_DIR/stats.json."""
  import tensorflow as tf

  from jaxformer.data.pipeline.cache import vocabulary_digest
  from jaxformer.data.pipeline.vocabulary import load_vocabulary

  paths = sorted(fs.glob(input_pattern))
  if not paths:
    raise UserError(f"--input={input_pattern} matches no file")
  if not 0 <= options.validation_percent < 100:
    raise UserError(f"--validation_percent={options.validation_percent} must be in [0, 100)")
  vocabulary = load_vocabulary(vocabulary_path)
  chat = chat_template(vocabulary_path)
  render = _compile(chat) if chat else _plain
  counts = {split: 0 for split in SPLITS}
  tokens = {split: 0 for split in SPLITS}
  skipped, first_skip = {}, {}
  with fs.replaced_on_success(output_dir, overwrite) as partial:
    fs.makedirs(os.path.join(partial, FOLDER))
    writers = {s: tf.io.TFRecordWriter(os.path.join(partial, FOLDER, f"{s}-00000-of-00001.tfrecord")) for s in SPLITS}
    try:
      for path in paths:
        for line_number, line in _lines(path):
          where = f"{path}:{line_number}"
          if not line.strip():
            continue
          try:
            try:
              record = json.loads(_text(line))
            except json.JSONDecodeError:
              raise Skip("not JSON") from None
            try:
              prompt, completion = texts(record, options, render)
            except Skip:
              raise
            except Exception as e:  # the template's own error (jinja2's, raise_exception's)
              raise UserError(f"{where}: the chat template fails on this record: {e}") from None
            prompt_ids = list(vocabulary.encode(prompt))
            completion_ids = list(vocabulary.encode(completion)) + [vocabulary.eos_id]
            length = len(prompt_ids) + len(completion_ids)
            if length > options.max_length:
              raise Skip(f"longer than the context ({options.max_length} tokens)")
          except Skip as skip:
            reason = str(skip)
            skipped[reason] = skipped.get(reason, 0) + 1
            first_skip.setdefault(reason, where)
            continue
          key = hashlib.sha256(json.dumps([prompt, completion]).encode()).digest()
          split = "validation" if int.from_bytes(key[:4], "big") % 100 < options.validation_percent else "train"
          writers[split].write(_example(prompt_ids, completion_ids))
          counts[split] += 1
          tokens[split] += length
    finally:
      for writer in writers.values():
        writer.close()
    if not counts["train"]:
      raise UserError(f"--input={input_pattern}: no usable record for the train split (skipped: {skipped or 'none'})")
    stats = {
      "records": counts,
      "tokens": tokens,
      "skipped": skipped,
      "first_skipped": first_skip,
      "vocabulary": vocabulary_path,
      "vocabulary_sha256": vocabulary_digest(vocabulary),
      "max_length": options.max_length,
      "template": "chat_template of tokenizer_config.json" if chat else PLAIN_TEMPLATE,
    }
    fs.write(os.path.join(partial, "stats.json"), json.dumps(stats, indent=1) + "\n")
  return stats
