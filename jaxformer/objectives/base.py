"""What an objective is, and the registry of them.

An objective turns `tokens` (int32 [n], one chunk of one document, ending in EOS when the chunk ends
the document) into aligned int32 sequences with seeded, stateless TF ops:
  targets         the token sequence the model reads and predicts,
  targets_loss    1 where the loss counts,
  targets_prefix  1 on bidirectional (prefix) tokens,
plus `objective`, the objective's stable id (which may be another objective's, e.g. FIM's chunks that
stay causal LM), and `objective_info`, int32 [2] the objective may fill for its statistics.

Each objective owns, besides `apply`: the special tokens it needs, the tokens it may add, its
inversion for `data show`, its statistics for `data stats`, and the infill prompt formats a run
trained on it samples with. Adding one is one module with one `@register`ed subclass and one gin file.
"""

import abc
import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import tensorflow as tf

from jaxformer.data.pipeline.vocabulary import SpecialTokens


def output(targets, loss, prefix, objective_id, info=None) -> dict:
  """The objective's example: targets, targets_loss, targets_prefix, objective, objective_info."""
  return {
    "targets": tf.cast(targets, tf.int32),
    "targets_loss": tf.cast(loss, tf.int32),
    "targets_prefix": tf.cast(prefix, tf.int32),
    "objective": tf.cast(objective_id, tf.int32),
    "objective_info": tf.zeros([2], tf.int32) if info is None else tf.cast(info, tf.int32),
  }


@dataclasses.dataclass(frozen=True)
class Context:
  """What an objective may use besides the tokens and its seed: the vocabulary's special tokens, each
  objective's settings by name (its gin-configured settings object, or None), and the vocabulary
  (for objectives that look at token texts)."""

  special: SpecialTokens
  settings: dict
  vocabulary: Any = None

  def of(self, name: str):
    return self.settings.get(name)


@dataclasses.dataclass(frozen=True)
class InfillFormat:
  """How a run trained on an objective is asked to fill in the middle.

  name: what --infill_format calls it ('codegen2', 'psm', 'spm').
  needs: the special tokens (strings) the prompt uses.
  build(special, prefix_ids, suffix_ids) -> prompt ids (after the BOS, which the sampler adds).
  stops(special) -> ids that end the middle.
  tokens: the strings of the format's special tokens, for the record (objectives.json) and export.
  """

  name: str
  objective: str
  needs: tuple[str, ...]
  build: Callable
  stops: Callable
  tokens: dict = dataclasses.field(default_factory=dict)

  def prompt(self, special: SpecialTokens, prefix_ids: list[int], suffix_ids: list[int]) -> list[int]:
    special.require(self.needs, f"infill format {self.name!r}")
    return list(self.build(special, list(prefix_ids), list(suffix_ids)))


class Objective(abc.ABC):
  """One training objective (see the module docstring); subclasses set name and id and override apply.

  id: stable across builds (written into each run's objectives.json); never reuse one.
  own_eos: the format writes its own <|endoftext|>, so it gets the chunk without the document's.
  bidirectional: trains a bidirectional prefix (sampling then reads the prompt as one).
  settings_class: the gin-configured dataclass of its settings (objectives.SpanCorruption, ...), or None.
  """

  name: ClassVar[str]
  id: ClassVar[int]
  own_eos: ClassVar[bool] = False
  bidirectional: ClassVar[bool] = False
  settings_class: ClassVar[type | None] = None

  def settings(self):
    """Its settings, with the gin bindings (None when it has none)."""
    return self.settings_class() if self.settings_class else None

  def needs(self, settings) -> tuple[str, ...]:
    """The special tokens (strings) the format writes, besides EOS."""
    return ()

  def overhead(self, settings) -> int:
    """Tokens the objective may add to a chunk."""
    return 0

  def check_length(self, settings, feature_length: int, chunk: int) -> None:
    """Raises ValueError when chunks of `chunk` tokens are too short for the objective (none: any length)."""
    return None

  def trains_bidirectional(self, settings) -> bool:
    return self.bidirectional

  @abc.abstractmethod
  def apply(self, tokens, seed, context: Context) -> dict:
    """The objective's example (`output(...)`) of one chunk."""

  def invert(self, targets, context: Context) -> list[int]:
    """The source chunk's tokens, from the targets (ValueError when they are not this format)."""
    return [int(t) for t in targets]

  def example_stats(self, example: dict, context: Context) -> dict:
    """Values of one example for `data stats`: {key: number or list of numbers}, collected per key."""
    return {}

  def summarize(self, collected: dict, edges: list[int], settings) -> dict:
    """Entries `data stats` adds to this objective's report from the collected values (and its settings)."""
    return {}

  def describe(self, entry: dict) -> list[str]:
    """Lines `data stats` prints for this objective's report entry."""
    return []

  def plots(self, entry: dict) -> list[tuple]:
    """Bar charts for `data stats --png`: (title, xlabel, ylabel, x values, heights) each."""
    return []

  def infill_formats(self, settings) -> list[InfillFormat]:
    """The infill prompts a model trained on this objective answers, the default first."""
    return []


OBJECTIVES: dict[str, Objective] = {}


def register(cls):
  """Class decorator: adds one instance of an Objective subclass to OBJECTIVES (kept in id order)."""
  for other in OBJECTIVES.values():
    if other.id == cls.id or other.name == cls.name:
      raise ValueError(f"objective {cls.name!r} (id {cls.id}) clashes with {other.name!r} (id {other.id})")
  OBJECTIVES[cls.name] = cls()
  ordered = sorted(OBJECTIVES.items(), key=lambda item: item[1].id)
  OBJECTIVES.clear()
  OBJECTIVES.update(ordered)
  return cls


def by_id(objective_id: int) -> Objective:
  """The objective whose id the `objective` feature holds."""
  for objective in OBJECTIVES.values():
    if objective.id == objective_id:
      return objective
  raise ValueError(f"no objective has id {objective_id}; known: { {o.name: o.id for o in OBJECTIVES.values()} }")
