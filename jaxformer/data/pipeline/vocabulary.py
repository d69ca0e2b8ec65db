"""The vocabularies a run reads: a SentencePiece BPE with CodeGen2's sentinels (trained by
data/ingest/tokenizer.py), and one over a HuggingFace `tokenizers` file (CodeGen2's own byte-level
BPE, to continue its checkpoints).

Ids of the SentencePiece model: 0 <pad>, 1 <|endoftext|> (EOS), 2 <unk>, then the user symbols
<sep>, <eom>, <mask_1> ... <mask_K>, "\\n", runs of 2-31 spaces, runs of 2-9 tabs. CodeGen2's
tokenizer.json has other ids (<sep> 50299, <eom> 50300, <mask_1> 51199, <mask_2> 51198, ...):
code looks every special token up by its string (SpecialTokens), never by an assumed id.
"""

import dataclasses
import re

import numpy as np
import seqio
import tensorflow as tf

PAD, EOS, UNK = "<pad>", "<|endoftext|>", "<unk>"
SEP, EOM = "<sep>", "<eom>"
# A literal sentinel in a document is escaped (a WORD JOINER after '<') so that it is read as
# text, never as the special token: see escape_sentinels.
# FIM's sentinels in every spelling objectives/fim.py knows (StarCoder's, SantaCoder's, Qwen's) too.
_CODEGEN2_SENTINELS = r"sep|eom|mask_[0-9]+|\|endoftext\||pad|unk"
_FIM_SENTINELS = r"fim[_-](?:prefix|middle|suffix|pad)|\|fim_(?:prefix|middle|suffix|pad)\|"
SENTINEL_PATTERN = f"<({_CODEGEN2_SENTINELS}|{_FIM_SENTINELS})>"
ESCAPE = "\u2060"


def mask_piece(k: int) -> str:
  return f"<mask_{k}>"


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
  """The special tokens of one vocabulary, found by their strings (never by assumed ids).

  The one description of special tokens that objectives, sampling, evals and export read
  (`vocabulary.special`).

  source: the vocabulary's file, for messages.
  eos: id of <|endoftext|>. bos: what the model reads before a document's first token, or None (it
  reads the tokens alone).
  tokens: every special token the vocabulary holds (control and user pieces, HF added tokens) by
  its string: <sep>, <eom>, <mask_k>, <fim_prefix>, <|fim_prefix|>, ...
  continuation: (first, last) ids of the byte pieces <0x80>..<0xBF> that continue a UTF-8 character
  (objectives never cut inside one), or (-1, -2) where there are none.
  """

  source: str
  eos: int
  bos: int | None
  tokens: dict = dataclasses.field(default_factory=dict)
  continuation: tuple[int, int] = (-1, -2)

  def id_of(self, token: str) -> int | None:
    return self.tokens.get(token)

  @property
  def sep(self) -> int | None:
    return self.id_of(SEP)

  @property
  def eom(self) -> int | None:
    return self.id_of(EOM)

  @property
  def masks(self) -> tuple[int, ...]:
    """Ids of <mask_1>, <mask_2>, ... while present (in any order of ids: CodeGen2's count down)."""
    ids, k = [], 1
    while (i := self.id_of(mask_piece(k))) is not None:
      ids.append(i)
      k += 1
    return tuple(ids)

  @property
  def num_masks(self) -> int:
    return len(self.masks)

  def mask_id(self, k: int) -> int:
    """Id of <mask_k>, k >= 1."""
    masks = self.masks
    if not 1 <= k <= len(masks):
      raise ValueError(f"<mask_{k}>: {self.source} has {len(masks)} masks")
    return masks[k - 1]

  def missing(self, needs) -> list[str]:
    """The strings among needs ('<sep>', '<mask_1>', '<fim_prefix>', ...) this vocabulary has no token for."""
    return [n for n in needs if self.id_of(n) is None]

  def require(self, needs, what: str) -> None:
    """Raises ValueError naming `what` and the missing strings, if any."""
    missing = self.missing(needs)
    if missing:
      raise ValueError(f"{what} needs {', '.join(missing)}, which the vocabulary {self.source} does not have")


def _special_piece(piece: str) -> bool:
  """A piece spelled like a special token: <...>, not a byte piece <0x..>."""
  return len(piece) > 2 and piece[0] == "<" and piece[-1] == ">" and not re.fullmatch(r"<0x[0-9A-F]{2}>", piece)


class CodeGenVocabulary(seqio.SentencePieceVocabulary):
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

    specials = {proto.id_to_piece(i): i for i in range(proto.get_piece_size()) if _special_piece(proto.id_to_piece(i))}
    first, last = proto.piece_to_id("<0x80>"), proto.piece_to_id("<0xBF>")
    bytes_ok = last - first == 0xBF - 0x80 and not proto.is_unknown(first)
    self.special = SpecialTokens(model_path, proto.eos_id(), 0, specials, (first, last) if bytes_ok else (-1, -2))

  @property
  def bos_id(self) -> int | None:
    return self.special.bos

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
    specials = {t.content: i for i, t in self.tokenizer.get_added_tokens_decoder().items()}
    for token, i in self.tokenizer.get_vocab(with_added_tokens=False).items():  # sentinels a BPE keeps as pieces
      if token in (SEP, EOM) or re.fullmatch(r"<mask_[0-9]+>", token):
        specials.setdefault(token, i)
    plain = self.tokenizer.encode("x", add_special_tokens=False).ids
    framed = self.tokenizer.encode("x", add_special_tokens=True).ids
    bos = framed[0] if len(framed) > len(plain) and framed[1:] == plain[: len(framed) - 1] else None
    self.special = SpecialTokens(tokenizer_json, self._eos, bos, specials)
    super().__init__(extra_ids=0)

  @property
  def bos_id(self) -> int | None:
    return self.special.bos

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
