"""Which infill prompt a run answers: the formats its objectives trained (from the run's config), or
for a run that trained none (an imported checkpoint, a causal run) the formats its vocabulary can write."""

from jaxformer.objectives import fim as fim_lib
from jaxformer.objectives.base import OBJECTIVES, InfillFormat
from jaxformer.objectives.mixture import DEFAULT_RATES, normalized_rates, objective_settings


def trained_as_prefix_lm(rates: dict | None) -> bool:
  """Whether a run with these OBJECTIVE_RATES (and the parsed gin settings) trained bidirectional
  prefixes (sampling then reads the prompt as one)."""
  settings = objective_settings(dict(rates or DEFAULT_RATES))
  return any(OBJECTIVES[name].trains_bidirectional(values) for name, values in settings.items())


def trained_infill_formats(rates: dict | None) -> list[InfillFormat]:
  """The infill formats of the objectives OBJECTIVE_RATES uses, in objective id order, defaults first."""
  if not rates:
    return []
  normalized = normalized_rates(rates)
  formats = []
  for objective, rate in zip(OBJECTIVES.values(), normalized):
    if rate > 0:
      formats.extend(objective.infill_formats(objective.settings()))
  return formats


def vocabulary_infill_formats(special) -> list[InfillFormat]:
  """The formats a vocabulary has every token for: CodeGen2's masks first, then FIM in each spelling."""
  candidates = list(OBJECTIVES["span_corruption"].infill_formats(None))
  for spelling in fim_lib.SPELLINGS:
    candidates.extend(OBJECTIVES["fim"].infill_formats(fim_lib.FIM(spelling=spelling, spm_rate=0.5)))
  return [f for f in candidates if not special.missing(f.needs)]


def choose_infill_format(rates: dict | None, special, requested: str | None = None) -> InfillFormat:
  """The infill format to prompt with.

  Args:
    rates: the run's OBJECTIVE_RATES (None: unknown, e.g. an imported checkpoint).
    special: the run's vocabulary's SpecialTokens.
    requested: --infill_format, or None for the run's default (the first format it trained).
  Raises:
    ValueError, one line: a requested format the run did not train, or no format the vocabulary can write.
  """
  trained = trained_infill_formats(rates)
  available = trained or vocabulary_infill_formats(special)
  names = [f.name for f in available]
  if requested is not None:
    if requested not in names:
      where = f"the run trained {names} (OBJECTIVE_RATES={rates})" if trained else f"its vocabulary can write {names}"
      raise ValueError(f"--infill_format={requested!r} contradicts the run: {where}")
    return available[names.index(requested)]
  if not available:
    raise ValueError(
      f"infill: the run trained no infill format (OBJECTIVE_RATES={rates}) and its vocabulary {special.source} "
      "has neither CodeGen2's <sep>/<eom>/<mask_1> nor FIM's sentinels"
    )
  return available[0]
