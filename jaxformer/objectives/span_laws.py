"""Span sampling for span corruption: how many spans an example gets and how many tokens they mask.

`SpanCorruption` (gin: objectives.SpanCorruption.*) names the laws; `noise_and_spans` draws from them
with stateless TF ops seeded per example, so the tf.data iterator stays checkpointable. The laws and
their defaults are explained in docs/RECIPE.md.
"""

import dataclasses
import itertools
import math

import gin
import tensorflow as tf

# Laws for the number of spans K per example (each a pmf over 1..max_spans, see span_count_pmf).
NUM_SPANS_LAWS = ("truncated_poisson", "poisson", "geometric", "uniform", "noise_density")
# Laws for how many tokens the K spans mask together.
SPAN_LENGTH_LAWS = ("fraction", "noise_density")
LOSS_PLACEMENTS = ("infill", "sequence")


@gin.configurable(module="objectives")
@dataclasses.dataclass(frozen=True)
class SpanCorruption:
  """How many spans an example masks and how long they are (gin: objectives.SpanCorruption.*).

  num_spans_law: the law of the span count K, at most max_spans:
    'truncated_poisson'  Poisson(poisson_lambda) conditioned on 1 <= K <= max_spans (InCoder's law);
    'poisson'            1 + Poisson(poisson_lambda), capped at max_spans;
    'geometric'          P(K = k) = geometric_p (1 - geometric_p)^(k-1), capped at max_spans;
    'uniform'            uniform on [1, max_spans];
    'noise_density'      round(noise_density * n / mean_span_length) (the rule before these laws).
  span_length_law: how many tokens the K spans mask together, split over them at random:
    'fraction'           a share of the chunk drawn uniformly in [min_fraction, max_fraction];
    'noise_density'      round(noise_density * n).
  Every span has at least one token; a chunk too short for K spans gets fewer.
  """

  noise_density: float = 0.15
  mean_span_length: float = 5.0
  max_spans: int = 16
  num_spans_law: str = "truncated_poisson"
  poisson_lambda: float = 1.0
  geometric_p: float = 0.5
  span_length_law: str = "fraction"
  min_fraction: float = 0.0
  max_fraction: float = 0.5
  bidirectional_prefix: bool = False  # the corrupted document as a prefix-LM prefix (an ablation)
  # Where the loss goes (LOSS_PLACEMENT): 'infill' counts only the tokens after <sep> (the masks, spans
  # and <eom>s the model will be asked to write), 'sequence' every token, the corrupted document too.
  # docs/RECIPE.md, "Loss placement", says why 'infill' is the default.
  loss_placement: str = "sequence"

  def __post_init__(self):
    if self.loss_placement not in LOSS_PLACEMENTS:
      raise ValueError(
        f"objectives.SpanCorruption.loss_placement (LOSS_PLACEMENT) = {self.loss_placement!r} "
        f"is not one of {list(LOSS_PLACEMENTS)}"
      )
    if self.num_spans_law not in NUM_SPANS_LAWS:
      raise ValueError(
        f"objectives.SpanCorruption.num_spans_law={self.num_spans_law!r} is not one of {list(NUM_SPANS_LAWS)}"
      )
    if self.span_length_law not in SPAN_LENGTH_LAWS:
      raise ValueError(
        f"objectives.SpanCorruption.span_length_law={self.span_length_law!r} is not one of {list(SPAN_LENGTH_LAWS)}"
      )
    if not isinstance(self.max_spans, int) or self.max_spans < 1:
      raise ValueError(f"objectives.SpanCorruption.max_spans={self.max_spans!r} must be an integer >= 1")
    if not 0.0 <= self.min_fraction <= self.max_fraction <= 1.0:
      raise ValueError(
        f"objectives.SpanCorruption: need 0 <= min_fraction ({self.min_fraction}) <= max_fraction "
        f"({self.max_fraction}) <= 1"
      )
    if self.poisson_lambda < 0 or not 0.0 < self.geometric_p <= 1.0:
      raise ValueError(
        f"objectives.SpanCorruption: poisson_lambda={self.poisson_lambda} must be >= 0 and "
        f"geometric_p={self.geometric_p} in (0, 1]"
      )
    if self.noise_density <= 0 or self.mean_span_length <= 0:
      raise ValueError("objectives.SpanCorruption: noise_density and mean_span_length must be positive")

  def overhead(self) -> int:
    """Tokens the format adds to a chunk: a mask in the text, a mask and <eom> per span, EOS, <sep>."""
    return 3 * self.max_spans + 2


def span_count_pmf(config: SpanCorruption, max_spans: int) -> list[float]:
  """P(K = k) for k = 1..max_spans under config.num_spans_law (not 'noise_density', which depends on n).

  Args: config: the SpanCorruption settings; max_spans: the cap (config.max_spans or fewer masks).
  Returns: max_spans probabilities summing to 1.
  """
  law, lam, p = config.num_spans_law, config.poisson_lambda, config.geometric_p
  ks = range(1, max_spans + 1)
  if law == "uniform":
    weights = [1.0 for _ in ks]
  elif law == "geometric":
    weights = [p * (1 - p) ** (k - 1) for k in ks]
  elif law == "poisson":  # 1 + Poisson(lam)
    weights = [math.exp(-lam) * lam ** (k - 1) / math.factorial(k - 1) for k in ks]
  elif law == "truncated_poisson":  # Poisson(lam) given 1 <= K <= max_spans, in logs: exp(-lam) may underflow
    if lam == 0:
      return [1.0] + [0.0] * (max_spans - 1)
    logs = [k * math.log(lam) - math.lgamma(k + 1) for k in ks]
    weights = [math.exp(w - max(logs)) for w in logs]
  else:
    raise ValueError(f"no fixed law of the span count for num_spans_law={law!r}")
  if law in ("poisson", "geometric"):
    weights[-1] += max(0.0, 1.0 - sum(weights))  # capped: the tail's mass goes to max_spans
  total = sum(weights)
  return [w / total for w in weights]


def random_segmentation(num_items, num_segments, seed):
  """num_segments positive int32 lengths summing to num_items (num_items >= num_segments >= 1)."""
  order = tf.argsort(tf.random.stateless_uniform([num_items - 1], seed))
  cuts = tf.sort(order[: num_segments - 1]) + 1
  bounds = tf.concat([[0], cuts, [num_items]], axis=0)
  return bounds[1:] - bounds[:-1]


def noise_and_spans(n, seed, config: SpanCorruption, max_spans: int):
  """Masked tokens and span count of an n-token chunk (int32 scalars), drawn by config's laws.

  The draws fold fixed constants into `seed` (stateless, so the tf.data iterator stays checkpointable);
  the 'noise_density' laws draw nothing and give the same spans as before the laws existed.
  """
  n_float = tf.cast(n, tf.float32)
  density_noise = tf.clip_by_value(tf.cast(tf.round(n_float * config.noise_density), tf.int32), 1, n - 1)
  if config.num_spans_law == "noise_density":
    num_spans = tf.cast(tf.round(tf.cast(density_noise, tf.float32) / config.mean_span_length), tf.int32)
  else:
    # Inverse-CDF draw from a fixed pmf: one uniform, no data-dependent branches.
    cdf = tf.constant(list(itertools.accumulate(span_count_pmf(config, max_spans)))[:-1], tf.float32)
    draw = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 1))
    num_spans = 1 + tf.cast(tf.searchsorted(cdf, [draw], side="right")[0], tf.int32)
  if config.span_length_law == "noise_density":
    num_noise = density_noise
  else:
    fraction = tf.random.stateless_uniform(
      [], tf.random.experimental.stateless_fold_in(seed, 2), minval=config.min_fraction, maxval=config.max_fraction
    )
    # At least one token per drawn span, and at least one token left unmasked.
    num_noise = tf.maximum(tf.cast(tf.round(n_float * fraction), tf.int32), num_spans)
    num_noise = tf.clip_by_value(num_noise, 1, n - 1)
  # Interior non-noise gaps need >= 1 token each: n - num_noise >= num_spans - 1.
  num_spans = tf.clip_by_value(num_spans, 1, tf.minimum(tf.minimum(max_spans, num_noise), n - num_noise + 1))
  return num_noise, num_spans
