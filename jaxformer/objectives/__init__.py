"""Training objectives: causal LM, CodeGen2 span corruption, prefix-LM and FIM, each one module that
owns its format (base.py says what an objective owns), mixed per chunk by OBJECTIVE_RATES (mixture.py).

Adding an objective is one module with one `@base.register`ed class (a new stable id) imported here,
and one gin file in jaxformer/gin/objectives/.
"""

from jaxformer.objectives import causal, fim, prefix_lm, span_corruption  # noqa: F401 (each registers itself)
from jaxformer.objectives.base import OBJECTIVES, Context, InfillFormat, Objective, by_id, register  # noqa: F401
from jaxformer.objectives.fim import FIM  # noqa: F401 (objectives.FIM)
from jaxformer.objectives.infill import choose_infill_format, trained_as_prefix_lm, trained_infill_formats  # noqa: F401
from jaxformer.objectives.mixture import (  # noqa: F401
  all_settings,
  check_vocabulary,
  choose_objective,
  chunk_length,
  normalized_rates,
  objective_settings,
)
from jaxformer.objectives.span_laws import (  # noqa: F401 (objectives.SpanCorruption etc. are the public names)
  LOSS_PLACEMENTS,
  NUM_SPANS_LAWS,
  SPAN_LENGTH_LAWS,
  SpanCorruption,
  noise_and_spans,
  random_segmentation,
  span_count_pmf,
)
