"""Vocabularies: a SentencePiece BPE with CodeGen2's sentinels, and one over a HuggingFace
`tokenizers` file (CodeGen2's own byte-level BPE, to continue its checkpoints).

Ids of the SentencePiece model: 0 <pad>, 1 <|endoftext|> (EOS), 2 <unk>, then the user symbols
<sep>, <eom>, <mask_1> ... <mask_K>, "\\n", runs of 2-31 spaces, runs of 2-9 tabs. CodeGen2's
tokenizer.json has other ids (<sep> 50299, <eom> 50300, <mask_1> 51199, <mask_2> 51198, ...):
code looks every special token up by its string (SpecialTokens), never by an assumed id.
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


class SpecialTokens:
  """CodeGen2's special tokens of a vocabulary, found by their strings (never by assumed ids).

  Subclasses set eos_id, sep_id and eom_id (None when absent), mask_ids (the ids of <mask_1>,
  <mask_2>, ... while present, in any order of ids: CodeGen2's count down from the top) and bos_id
  (what the model reads before a document's first token, or None: it reads the tokens alone).
  """

  sep_id: int | None
  eom_id: int | None
  mask_ids: tuple[int, ...]
  _bos: int | None

  @property
  def bos_id(self) -> int | None:
    return self._bos

  @property
  def num_masks(self) -> int:
    return len(self.mask_ids)

  def mask_id(self, k: int) -> int:
    """Id of <mask_k>, k >= 1."""
    if not 1 <= k <= self.num_masks:
      raise ValueError(f"<mask_{k}>: {self.source} has {self.num_masks} masks")
    return self.mask_ids[k - 1]

  def missing(self, needs) -> list[str]:
    """The strings among needs ('<sep>', '<eom>', '<mask_1>', ...) this vocabulary has no token for."""
    have = {SEP: self.sep_id is not None, EOM: self.eom_id is not None}
    have.update({mask_piece(k): True for k in range(1, self.num_masks + 1)})
    return [n for n in needs if not have.get(n, False)]

  def require(self, needs, what: str) -> None:
    """Raises ValueError naming `what` and the missing strings, if any."""
    missing = self.missing(needs)
    if missing:
      raise ValueError(f"{what} needs {', '.join(missing)}, which the vocabulary {self.source} does not have")


def _mask_ids(lookup) -> tuple[int, ...]:
  ids, k = [], 1
  while (i := lookup(mask_piece(k))) is not None:
    ids.append(i)
    k += 1
  return tuple(ids)


class CodeGenVocabulary(SpecialTokens, seqio.SentencePieceVocabulary):
  """seqio's SentencePiece vocabulary plus CodeGen2's sentinel ids.

  Our convention: the model reads <pad> (id 0) before each document, as a BOS; the exported HF
  tokenizer prepends it too, so both sides encode a prompt to the same ids.
  """

  def __init__(self, model_path: str):
    if not tf.io.gfile.exists(model_path):
      raise FileNotFoundError(
        f"no tokenizer at {model_path}; train one with `jaxformer data train-tokenizer --output={model_path}`"
      )
    super().__init__(model_path, extra_ids=0)
    self.model_path = self.source = model_path
    proto = self.tokenizer
    if proto.pad_id() != 0 or proto.eos_id() != 1:
      raise ValueError(f"{model_path} is not a jaxformer tokenizer (needs <pad> at id 0 and {EOS} at id 1)")

    def lookup(piece):
      i = proto.piece_to_id(piece)
      return None if i == proto.unk_id() else i

    self.sep_id, self.eom_id = lookup(SEP), lookup(EOM)
    self.mask_ids = _mask_ids(lookup)
    self._bos = 0

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


class TokenizersVocabulary(SpecialTokens, seqio.Vocabulary):
  """A seqio.Vocabulary over a HuggingFace `tokenizers` file (tokenizer.json), e.g. CodeGen2's BPE.

  Special tokens are looked up by their strings. The BOS is whatever the tokenizer's own
  post-processor puts in front of a text (CodeGen2's: nothing, so the model reads the tokens alone).
  TF encoding calls the tokenizer through tf.numpy_function, a pure function of the text, so the
  tf.data iterator is checkpointed with its external state ignored (pipeline.get_dataset).
  """

  def __init__(self, tokenizer_json: str, eos_token: str = EOS):
    from tokenizers import Tokenizer

    if not tf.io.gfile.exists(tokenizer_json):
      raise FileNotFoundError(f"no tokenizers file at {tokenizer_json}")
    self.path = self.source = tokenizer_json
    try:
      with tf.io.gfile.GFile(tokenizer_json) as f:
        self.tokenizer = Tokenizer.from_str(f.read())
    except Exception as e:  # tokenizers raises its own exception type for a malformed file
      raise ValueError(f"{tokenizer_json}: not a HuggingFace tokenizers file ({e})") from e
    self._eos = self.tokenizer.token_to_id(eos_token)
    if self._eos is None:
      raise ValueError(f"{tokenizer_json}: no {eos_token!r} token")
    lookup = self.tokenizer.token_to_id
    self.sep_id, self.eom_id = lookup(SEP), lookup(EOM)
    self.mask_ids = _mask_ids(lookup)
    plain = self.tokenizer.encode("x", add_special_tokens=False).ids
    framed = self.tokenizer.encode("x", add_special_tokens=True).ids
    self._bos = framed[0] if len(framed) > len(plain) and framed[1:] == plain[: len(framed) - 1] else None
    super().__init__(extra_ids=0)

  @property
  def eos_id(self):
    return self._eos

  @property
  def pad_id(self):
    return 0  # seqio pads with 0; the pipeline marks real tokens apart from padding (features.py)

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

  def decode_with_specials(self, ids) -> str:
    return self._decode(np.asarray(ids).reshape(-1).tolist())

  def _encode_tf(self, s):
    to_text = lambda b: (b.item() if isinstance(b, np.ndarray) else b).decode("utf-8")
    ids = tf.numpy_function(lambda b: np.asarray(self._encode(to_text(b)), np.int32), [s], tf.int32, stateful=False)
    return tf.ensure_shape(ids, [None])

  def _decode_tf(self, ids):
    return tf.numpy_function(lambda x: self._decode(x.tolist()).encode("utf-8"), [ids], tf.string, stateful=False)

  def __eq__(self, other):
    return isinstance(other, TokenizersVocabulary) and other.path == self.path


def load_vocabulary(path: str):
  """A SentencePiece .model as CodeGenVocabulary, or a tokenizer.json as TokenizersVocabulary."""
  return TokenizersVocabulary(path) if path.endswith(".json") else CodeGenVocabulary(path)


# What a HuggingFace tokenizer directory may hold beside tokenizer.json; `import` keeps them in
# MODEL_DIR/vocabulary/ and `export` writes them back, so HF loads the tokenizer as it was shipped.
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def vocabulary_file_name(path: str) -> str:
  """The name a run keeps its vocabulary under (MODEL_DIR/vocabulary/), whatever the source's name."""
  return "tokenizer.json" if path.endswith(".json") else "spm.model"
