"""Fill-in-the-middle (Bavarian et al. 2022, "Efficient Training of Language Models to Fill in the
Middle"), as StarCoder trains it.

A chunk drawn for FIM becomes FIM with probability fim_rate (otherwise it stays causal LM): it is cut at
two uniformly random character positions into prefix P, middle M and suffix S, and written

  PSM  <fim_prefix> P <fim_suffix> S <fim_middle> M
  SPM  <fim_prefix> <fim_suffix> S <fim_middle> P M    (with probability spm_rate; StarCoder's variant)

followed by <|endoftext|> when the chunk ended its document. The cuts are snapped back to the start of
the token that holds the drawn character (a byte piece continuing a UTF-8 character goes with it), so
P, M and S are the chunk's own tokens: nothing is re-tokenized, the length grows by exactly three
sentinels, and `data show` inverts every example to its source tokens. The sentinels' spelling is a
setting (StarCoder's, SantaCoder's or Qwen2.5-Coder's); `data train-tokenizer` adds the chosen ones.
"""

import dataclasses

import gin
import numpy as np
import tensorflow as tf

from jaxformer.data.histograms import histogram, length_rows
from jaxformer.objectives import base
from jaxformer.objectives.causal import causal_output

# prefix, middle, suffix, pad: each model family's spelling of FIM's sentinels.
SPELLINGS = {
  "starcoder": ("<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"),  # StarCoder/2, DeepSeek's own differ
  "santacoder": ("<fim-prefix>", "<fim-middle>", "<fim-suffix>", "<fim-pad>"),
  "qwen": ("<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>"),  # Qwen2.5-Coder
}
LEVELS = ("context",)
PSM, SPM = 1, 2  # objective_info[0] of a FIM example


@gin.configurable(module="objectives")
@dataclasses.dataclass(frozen=True)
class FIM:
  """FIM's settings (gin: objectives.FIM.*); StarCoder's values are the defaults.

  fim_rate: the probability that a chunk drawn for 'fim' (OBJECTIVE_RATES) becomes FIM; the others
    stay causal LM (BigCode Megatron's --fim-rate; StarCoder trained 0.5).
  spm_rate: the share of FIM examples written SPM instead of PSM (--fim-spm-rate; StarCoder 0.5).
  level: 'context', each packed chunk (one chunk of one document) is split on its own.
  spelling: the sentinels: 'starcoder' (<fim_prefix>...), 'santacoder' (<fim-prefix>...), 'qwen'
    (<|fim_prefix|>...); an imported tokenizer must carry them.
  loss_on_sentinels: False takes the loss off the three sentinels (they are given at inference).
  """

  fim_rate: float = 0.5
  spm_rate: float = 0.5
  level: str = "context"
  spelling: str = "starcoder"
  loss_on_sentinels: bool = True

  def __post_init__(self):
    for name in ("fim_rate", "spm_rate"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"objectives.FIM.{name}={value!r} must be a number in [0, 1]")
    if self.level not in LEVELS:
      raise ValueError(
        f"objectives.FIM.level={self.level!r} is not one of {list(LEVELS)} (document-level FIM is not built: "
        "a chunk holds one document's tokens, so 'context' splits every document that fits one chunk whole)"
      )
    if self.spelling not in SPELLINGS:
      raise ValueError(f"objectives.FIM.spelling={self.spelling!r} is not one of {list(SPELLINGS)}")

  @property
  def tokens(self) -> tuple[str, str, str, str]:
    """(prefix, middle, suffix, pad) sentinel strings."""
    return SPELLINGS[self.spelling]


_WIDTHS: dict = {}


def character_widths(vocabulary) -> np.ndarray:
  """int32 [vocab size]: how many characters each token starts (special tokens 0, a UTF-8 continuation
  byte 0, a byte that starts a character 1). Cached per vocabulary."""
  key = id(vocabulary)
  if key in _WIDTHS and _WIDTHS[key][0] is vocabulary:
    return _WIDTHS[key][1]
  tokenizer = getattr(vocabulary, "tokenizer", None)
  size = vocabulary.vocab_size
  widths = np.ones(size, np.int32)
  if tokenizer is not None and hasattr(tokenizer, "id_to_piece"):  # SentencePiece
    for i in range(min(size, tokenizer.get_piece_size())):
      if tokenizer.is_control(i) or tokenizer.is_unknown(i):
        widths[i] = 0
        continue
      piece = tokenizer.id_to_piece(i)
      if tokenizer.is_byte(i):
        widths[i] = int(not 0x80 <= int(piece[3:5], 16) < 0xC0)
      else:
        widths[i] = 0 if piece in vocabulary.special.tokens else len(piece)
  elif tokenizer is not None and hasattr(tokenizer, "decode_batch"):  # HF tokenizers
    texts = tokenizer.decode_batch([[i] for i in range(size)], skip_special_tokens=False)
    specials = set(vocabulary.special.tokens.values())
    widths = np.asarray([0 if i in specials else len(t) for i, t in enumerate(texts)], np.int32)
  _WIDTHS[key] = (vocabulary, widths)
  return widths


@base.register
class FillInTheMiddle(base.Objective):
  name = "fim"
  id = 3
  settings_class = FIM

  def needs(self, settings):
    return settings.tokens[:3]

  def overhead(self, settings):
    return 3

  def check_length(self, settings, feature_length, chunk):
    if chunk < 2:
      raise ValueError(f"TASK_FEATURE_LENGTHS['targets']={feature_length} is too short for FIM (needs at least 5)")

  def apply(self, tokens, seed, context):
    settings, special = context.of(self.name), context.special
    prefix_id, middle_id, suffix_id = (special.id_of(t) for t in settings.tokens[:3])
    n = tf.size(tokens)
    ends = tf.cast(tf.logical_and(n > 0, tf.equal(tokens[tf.maximum(n - 1, 0)], special.eos)), tf.int32)
    body, tail = tokens[: n - ends], tokens[n - ends :]
    seeds = tf.random.experimental.stateless_split(seed, 2)
    draws = tf.random.stateless_uniform([2], seeds[0])
    widths = tf.gather(tf.constant(character_widths(context.vocabulary)), body)
    ends_at = tf.cumsum(widths)
    total = tf.reduce_sum(widths)
    cuts = tf.sort(tf.random.stateless_uniform([2], seeds[1], minval=0, maxval=total + 1, dtype=tf.int32))
    # The tokens that end at or before each drawn character position go before the cut.
    bounds = tf.searchsorted(ends_at, cuts, side="right", out_type=tf.int32)
    prefix, middle, suffix = body[: bounds[0]], body[bounds[0] : bounds[1]], body[bounds[1] :]
    psm = tf.concat([[prefix_id], prefix, [suffix_id], suffix, [middle_id], middle, tail], 0)
    spm = tf.concat([[prefix_id, suffix_id], suffix, [middle_id], prefix, middle, tail], 0)
    is_spm = draws[1] < settings.spm_rate
    targets = tf.where(is_spm, spm, psm)
    loss = tf.ones_like(targets)
    if not settings.loss_on_sentinels:
      loss = 1 - tf.cast(tf.reduce_any(targets[:, None] == tf.constant([prefix_id, middle_id, suffix_id]), 1), tf.int32)
    info = tf.stack([tf.where(is_spm, SPM, PSM), tf.size(middle)])
    fim = base.output(targets, loss, tf.zeros_like(targets), self.id, info)
    causal = causal_output(tokens)
    use = tf.cast(tf.logical_and(draws[0] < settings.fim_rate, tf.size(body) > 0), tf.int32)
    return {key: tf.ragged.stack([causal[key], fim[key]])[use] for key in fim}

  def invert(self, targets, context):
    settings, special = context.of(self.name), context.special
    prefix_id, middle_id, suffix_id = (special.id_of(t) for t in settings.tokens[:3])
    t = [int(x) for x in targets]
    if not t or t[0] != prefix_id or suffix_id not in t or middle_id not in t[t.index(suffix_id) :]:
      raise ValueError("FIM targets without <fim_prefix> ... <fim_suffix> ... <fim_middle>")
    s = t.index(suffix_id)
    m = t.index(middle_id, s)
    rest = t[m + 1 :]
    tail = rest[-1:] if rest and rest[-1] == special.eos else []
    # PSM: P between prefix and suffix, M after middle; SPM: P M together after middle (P empty before).
    return t[1:s] + rest[: len(rest) - len(tail)] + t[s + 1 : m] + tail

  def example_stats(self, example, context):
    mode, middle = (int(x) for x in example["objective_info"])
    return {"mode": mode, "middle_lengths": middle}

  def summarize(self, collected, edges, settings):
    modes = collected["mode"]
    return {
      "psm": sum(1 for m in modes if m == PSM),
      "spm": sum(1 for m in modes if m == SPM),
      "middle_lengths": histogram(collected["middle_lengths"], edges),
    }

  def describe(self, entry):
    h = entry["middle_lengths"]
    n = max(entry["examples"], 1)
    lines = [f"fim: {entry['psm']} PSM ({entry['psm'] / n:.1%}), {entry['spm']} SPM ({entry['spm'] / n:.1%})"]
    if h["n"]:
      lines.append(
        f"  middle length (tokens): mean {h['mean']:.1f}, p10/p50/p90 {h['p10']:.0f}/{h['p50']:.0f}/{h['p90']:.0f}, "
        f"max {h['max']:.0f}"
      )
      lines.extend(length_rows(h))
    return lines

  def plots(self, entry):
    h = entry["middle_lengths"]
    return [("FIM middle length", "tokens (bin start)", "examples", h["edges"], h["counts"])]

  def infill_formats(self, settings):
    pre, mid, suf, _ = settings.tokens
    tokens = {"prefix": pre, "middle": mid, "suffix": suf}
    ids = lambda special: [special.id_of(x) for x in (pre, mid, suf)]

    def psm(special, p, s):
      prefix_id, middle_id, suffix_id = ids(special)
      return [prefix_id] + p + [suffix_id] + s + [middle_id]

    def spm(special, p, s):
      prefix_id, middle_id, suffix_id = ids(special)
      return [prefix_id, suffix_id] + s + [middle_id] + p

    end = lambda special: (special.eos,)
    formats = [
      base.InfillFormat(name, self.name, (pre, mid, suf), build, end, tokens)
      for name, build in (("psm", psm), ("spm", spm))
    ]
    trained = [
      f for f in formats if (f.name == "psm" and settings.spm_rate < 1) or (f.name == "spm" and settings.spm_rate > 0)
    ]
    return trained if settings.spm_rate <= 0.5 else trained[::-1]  # the more often trained first
