"""Vocabularies: a SentencePiece BPE with CodeGen2's sentinels, and one over a HuggingFace
`tokenizers` file (to continue CodeGen2's own checkpoints with their BPE).

Ids of the SentencePiece model: 0 <pad>, 1 <|endoftext|> (EOS), 2 <unk>, then the user symbols
<sep>, <eom>, <mask_1> ... <mask_K> (contiguous), "\\n", runs of 2-31 spaces, runs of 2-9 tabs.
seqio hard-codes pad = 0 (packing and loss masks test != 0).
"""

import os
import re

import gin
import numpy as np
import seqio
import tensorflow as tf

PAD, EOS, UNK = "<pad>", "<|endoftext|>", "<unk>"
SEP, EOM = "<sep>", "<eom>"
MIN_MASKS = 64
# A literal sentinel in a document is escaped (a WORD JOINER after '<') so that it is read as
# text, never as the special token: see escape_sentinels.
SENTINEL_PATTERN = r"<(sep|eom|mask_[0-9]+|\|endoftext\||pad|unk)>"
ESCAPE = "\u2060"


def mask_piece(k: int) -> str:
  return f"<mask_{k}>"


def user_symbols(num_masks: int) -> list[str]:
  spaces = ["\u2581" * n for n in range(2, 32)]  # whitespace runs are matched as runs of '▁'
  tabs = ["\t" * n for n in range(2, 10)]
  return [SEP, EOM] + [mask_piece(k) for k in range(1, num_masks + 1)] + ["\n"] + spaces + tabs


def iter_documents(corpus_dir: str, kinds=("pl", "nl"), split="train"):
  """Yields the text of each document in the local corpus (python side, for tokenizer training)."""
  for kind in kinds:
    pattern = os.path.join(corpus_dir, kind, f"{split}-*.tfrecord")
    for record in tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(pattern))).as_numpy_iterator():
      example = tf.train.Example.FromString(record)
      yield example.features.feature["text"].bytes_list.value[0].decode("utf-8")


@gin.configurable(module="vocabulary")
def train_tokenizer(
  corpus_dir: str,
  output_path: str,
  vocab_size: int = 2048,
  num_masks: int = MIN_MASKS,
  max_documents: int = 20000,
  max_sentence_length: int = 1 << 20,
  overwrite: bool = False,
) -> str:
  """Trains the SentencePiece BPE on the corpus's train split; returns the .model path.

  Options keep code exact: byte fallback, no normalisation, no whitespace folding, digits split.
  The model is trained under a temporary name and renamed into place when complete; an existing
  model is replaced only with overwrite=True.
  """
  import sentencepiece as spm

  from jaxformer.data.corpus import check_corpus

  if num_masks < MIN_MASKS:
    raise ValueError(f"vocabulary.train_tokenizer.num_masks={num_masks}: CodeGen2 needs at least {MIN_MASKS}")
  check_corpus(corpus_dir)
  symbols = user_symbols(num_masks)
  if vocab_size < len(symbols) + 256 + 3 + 64:
    raise ValueError(
      f"vocabulary.train_tokenizer.vocab_size={vocab_size} is too small for {len(symbols)} "
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


def _train_bpe(spm, documents, prefix, vocab_size, symbols, max_documents, max_sentence_length) -> None:
  spm.SentencePieceTrainer.train(
    sentence_iterator=(d for i, d in zip(range(max_documents), documents)),
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


class CodeGenVocabulary(seqio.SentencePieceVocabulary):
  """seqio's SentencePiece vocabulary plus CodeGen2's sentinel ids."""

  def __init__(self, model_path: str):
    if not tf.io.gfile.exists(model_path):
      raise FileNotFoundError(
        f"no tokenizer at {model_path}; train one with `jaxformer data train-tokenizer --output={model_path}`"
      )
    super().__init__(model_path, extra_ids=0)
    self.model_path = model_path
    proto = self.tokenizer
    self.sep_id = proto.piece_to_id(SEP)
    self.eom_id = proto.piece_to_id(EOM)
    self.mask_base_id = proto.piece_to_id(mask_piece(1))
    self.num_masks = 0
    while proto.piece_to_id(mask_piece(self.num_masks + 1)) == self.mask_base_id + self.num_masks:
      self.num_masks += 1
    if proto.pad_id() != 0 or proto.eos_id() != 1 or self.sep_id == proto.unk_id() or self.num_masks == 0:
      raise ValueError(f"{model_path} is not a jaxformer tokenizer (needs pad 0, eos 1, <sep>, <eom>, <mask_k>)")

  def mask_id(self, k: int) -> int:
    """Id of <mask_k>, k >= 1."""
    if not 1 <= k <= self.num_masks:
      raise ValueError(f"<mask_{k}>: this vocabulary has {self.num_masks} masks")
    return self.mask_base_id + k - 1

  def decode_with_specials(self, ids) -> str:
    """Decodes ids with <pad>, <|endoftext|> and the sentinels written out, for people to read."""
    proto = self.tokenizer
    out, run = [], []
    for i in (int(x) for x in np.asarray(ids).reshape(-1)):
      if proto.is_control(i) or proto.is_unknown(i):
        out.append(proto.decode(run))
        run = []
        out.append(proto.id_to_piece(i))
      else:
        run.append(i)
    out.append(proto.decode(run))
    return "".join(out)


def escape_sentinels(text: tf.Tensor) -> tf.Tensor:
  """TF op: '<sep>' in a document becomes '<\\u2060sep>', so only our code makes sentinel tokens."""
  return tf.strings.regex_replace(text, SENTINEL_PATTERN, "<" + ESCAPE + r"\1>")


def escape_sentinels_text(text: str) -> str:
  """Python twin of escape_sentinels, for prompts (inference reads text as training did)."""
  return re.sub(SENTINEL_PATTERN, "<" + ESCAPE + r"\1>", text)


def unescape_sentinels(text: str) -> str:
  return re.sub("<" + ESCAPE + SENTINEL_PATTERN[1:], r"<\1>", text)


class TokenizersVocabulary(seqio.Vocabulary):
  """A seqio.Vocabulary over a HuggingFace `tokenizers` file (tokenizer.json), e.g. CodeGen2's BPE.

  TF encoding goes through tf.numpy_function, so a tf.data iterator over it cannot be
  checkpointed; use it for fine-tuning and sampling, and SentencePiece for resumable pretraining.
  """

  def __init__(self, tokenizer_json: str, eos_token: str = EOS, pad_token: str | None = None):
    from tokenizers import Tokenizer

    if not os.path.exists(tokenizer_json):
      raise FileNotFoundError(f"no tokenizers file at {tokenizer_json}")
    self.path = tokenizer_json
    self.tokenizer = Tokenizer.from_file(tokenizer_json)
    self._eos = self.tokenizer.token_to_id(eos_token)
    if self._eos is None:
      raise ValueError(f"{tokenizer_json}: no {eos_token!r} token")
    self._pad = self.tokenizer.token_to_id(pad_token) if pad_token else None
    super().__init__(extra_ids=0)

  @property
  def eos_id(self):
    return self._eos

  @property
  def pad_id(self):
    return 0 if self._pad is None else self._pad

  @property
  def unk_id(self):
    return None

  @property
  def _base_vocab_size(self):
    return self.tokenizer.get_vocab_size(with_added_tokens=True)

  def _encode(self, s):
    return self.tokenizer.encode(s, add_special_tokens=False).ids

  def _decode(self, ids):
    return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

  def _encode_tf(self, s):
    to_text = lambda b: (b.item() if isinstance(b, np.ndarray) else b).decode("utf-8")
    ids = tf.numpy_function(lambda b: np.asarray(self._encode(to_text(b)), np.int32), [s], tf.int32)
    return tf.ensure_shape(ids, [None])

  def _decode_tf(self, ids):
    return tf.numpy_function(lambda x: self._decode(x.tolist()).encode("utf-8"), [ids], tf.string)

  def __eq__(self, other):
    return isinstance(other, TokenizersVocabulary) and other.path == self.path


def load_vocabulary(path: str):
  """A SentencePiece .model as CodeGenVocabulary, or a tokenizer.json as TokenizersVocabulary."""
  return TokenizersVocabulary(path) if path.endswith(".json") else CodeGenVocabulary(path)
