"""`jaxformer plan`: parameter counts, FLOPs and state bytes of a model config (costs), the real train
step compiled ahead of time for a TPU slice (tpu), and the text report of both (report)."""

from jaxformer.plan.costs import ADAM_STATE_PER_PARAM, count_params, plan_report
from jaxformer.plan.report import format_report
from jaxformer.plan.tpu import TPU_FAMILIES, parse_topology, topology_devices, tpu_plan

__all__ = [
  "ADAM_STATE_PER_PARAM",
  "TPU_FAMILIES",
  "count_params",
  "format_report",
  "parse_topology",
  "plan_report",
  "topology_devices",
  "tpu_plan",
]
