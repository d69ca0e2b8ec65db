"""`jaxformer data train-tokenizer`: the SentencePiece BPE with CodeGen2's sentinels, trained on the
local corpus layout (`data build-local`). The vocabularies a run reads are data/pipeline/vocabulary.py.

Ids of the model: 0 <pad>, 1 <|endoftext|> (EOS), 2 <unk>, then the user symbols <sep>, <eom>,
<mask_1> ... <mask_K>, FIM's four sentinels in the spelling objectives.FIM.spelling names (StarCoder's
<fim_prefix> <fim_middle> <fim_suffix> <fim_pad> by default), "\\n", runs of 2-31 spaces, runs of 2-9 tabs.
"""

import os
import re

import gin
import tensorflow as tf

from jaxformer.data.pipeline.vocabulary import EOM, EOS, PAD, SEP, UNK, mask_piece

MIN_MASKS = 64


def user_symbols(num_masks: int, fim_tokens=()) -> list[str]:
  spaces = ["\u2581" * n for n in range(2, 32)]  # whitespace runs are matched as runs of '▁'
  tabs = ["\t" * n for n in range(2, 10)]
  masks = [mask_piece(k) for k in range(1, num_masks + 1)]
  return [SEP, EOM] + masks + list(fim_tokens) + ["\n"] + spaces + tabs


def iter_documents(corpus_dir: str, kinds=("pl", "nl"), split="train"):
  """Yields the text of each document in the local corpus (python side, for tokenizer training)."""
  for kind in kinds:
    pattern = os.path.join(corpus_dir, kind, f"{split}-*.tfrecord")
    for record in tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(pattern))).as_numpy_iterator():
      example = tf.train.Example.FromString(record)
      yield example.features.feature["text"].bytes_list.value[0].decode("utf-8")


@gin.configurable(module="tokenizer")
def train_tokenizer(
  corpus_dir: str,
  output_path: str,
  vocab_size: int = 2048,
  num_masks: int = MIN_MASKS,
  max_documents: int = 20000,
  max_sentence_length: int = 1 << 20,
  overwrite: bool = False,
  fim_spelling: str | None = None,
) -> str:
  """Trains the SentencePiece BPE on the corpus's train split; returns the .model path.

  Options keep code exact: byte fallback, no normalisation, no whitespace folding, digits split.
  The model is trained under a temporary name and renamed into place when complete; an existing
  model is replaced only with overwrite=True. fim_spelling: FIM's sentinels to add (None: the spelling
  objectives.FIM.spelling binds, StarCoder's by default; '' adds none).
  """
  import sentencepiece as spm

  from jaxformer.data.ingest.corpus import check_corpus

  if num_masks < MIN_MASKS:
    raise ValueError(f"tokenizer.train_tokenizer.num_masks={num_masks}: CodeGen2 needs at least {MIN_MASKS}")
  check_corpus(corpus_dir)
  from jaxformer.objectives import fim

  spelling = fim.FIM().spelling if fim_spelling is None else fim_spelling
  if spelling and spelling not in fim.SPELLINGS:
    raise ValueError(f"tokenizer.train_tokenizer.fim_spelling={spelling!r} is not one of {list(fim.SPELLINGS)}")
  symbols = user_symbols(num_masks, fim.SPELLINGS[spelling] if spelling else ())
  if vocab_size < len(symbols) + 256 + 3 + 64:
    raise ValueError(
      f"tokenizer.train_tokenizer.vocab_size={vocab_size} is too small for {len(symbols)} "
      "symbols, 256 byte pieces and merges"
    )
  documents = iter_documents(corpus_dir)
  final = output_path[: -len(".model")] if output_path.endswith(".model") else output_path
  if os.path.exists(final + ".model") and not overwrite:
    raise FileExistsError(f"--output={final}.model exists; pass --overwrite to replace it")
  os.makedirs(os.path.dirname(os.path.abspath(final)), exist_ok=True)
  prefix = f"{final}.partial-{os.getpid()}"
  try:
    _train_bpe(spm, documents, prefix, vocab_size, symbols, max_documents, max_sentence_length)
    for suffix in (".vocab", ".model"):  # the .model last: it is what readers look for
      os.replace(prefix + suffix, final + suffix)
  finally:
    for suffix in (".vocab", ".model"):
      if os.path.exists(prefix + suffix):
        os.remove(prefix + suffix)
  return final + ".model"


# SentencePiece's BPE trainer ends the whole process (a CHECK in bpe_model_trainer.h, exit 255) on a
# "word", text between spaces, of over 65,535 symbols: a data file of short space-free lines is one.
MAX_RUN_CHARS = 4096


def bounded_runs(text: str, limit: int = MAX_RUN_CHARS):
  """The text as one training sentence or, where a run without spaces is longer than `limit`
  characters, cut there into sentences whose runs are at most `limit` long."""
  start = 0
  for match in re.finditer(f"[^ ]{{{limit + 1},}}", text):
    if match.start() > start:
      yield text[start : match.start()]
    run = match.group()
    yield from (run[i : i + limit] for i in range(0, len(run), limit))
    start = match.end()
  if start == 0 or start < len(text):
    yield text[start:]


def _train_bpe(spm, documents, prefix, vocab_size, symbols, max_documents, max_sentence_length) -> None:
  spm.SentencePieceTrainer.train(
    sentence_iterator=(s for _, d in zip(range(max_documents), documents) for s in bounded_runs(d)),
    model_prefix=prefix,
    vocab_size=vocab_size,
    model_type="bpe",
    byte_fallback=True,
    split_digits=True,
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    add_dummy_prefix=False,
    allow_whitespace_only_pieces=True,
    split_by_whitespace=True,
    max_sentence_length=max_sentence_length,
    input_sentence_size=0,
    character_coverage=0.9995,
    pad_id=0,
    eos_id=1,
    unk_id=2,
    bos_id=-1,
    pad_piece=PAD,
    eos_piece=EOS,
    unk_piece=UNK,
    user_defined_symbols=symbols,
    num_threads=os.cpu_count() or 1,
    minloglevel=2,
  )
