"""The settings of the code eval during training (gin: train.CodeEvalConfig.*). The eval itself is
jaxformer/evals/during_training.py; the CLI hands it to the trainer as a hook, so train/ runs no eval code."""

import dataclasses

import gin


@gin.configurable(module="train")
@dataclasses.dataclass(frozen=True)
class CodeEvalConfig:
  """What the code eval during training runs (gin: train.CodeEvalConfig.*).

  Attributes:
    period: run it every this many steps; 0 never.
    humaneval_problems: the first N HumanEval problems, one greedy completion each (pass@1).
    infill_tasks: the first N infill tasks of each kind in infill_kinds (exact match and pass@1), prompted
      in the run's infill format; skipped when the run has none (no infill objective, and a vocabulary
      with neither CodeGen2's masks nor FIM's sentinels).
    infill_kinds: HumanEval-Infilling kinds: 'single_line', 'multi_line', 'random_span'.
    max_new_tokens: tokens generated per completion at most.
    batch_size: prompts per generate call.
    timeout: wall seconds each program may run in the sandbox.
  """

  period: int = 0
  humaneval_problems: int = 8
  infill_tasks: int = 16
  infill_kinds: tuple = ("single_line",)
  max_new_tokens: int = 128
  batch_size: int = 8
  timeout: float = 3.0

  def __post_init__(self):
    for name, lowest in (("period", 0), ("humaneval_problems", 0), ("infill_tasks", 0)):
      _check_int(name, getattr(self, name), lowest)
    kinds = ("single_line", "multi_line", "random_span")  # evals/infilling.py KINDS (train/ imports no evals)
    if not isinstance(self.infill_kinds, (tuple, list)) or not set(self.infill_kinds) <= set(kinds):
      raise ValueError(f"train.CodeEvalConfig.infill_kinds={self.infill_kinds!r} must be a list of {list(kinds)}")
    for name in ("max_new_tokens", "batch_size"):
      _check_int(name, getattr(self, name), 1)
    if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) or not self.timeout > 0:
      raise ValueError(f"train.CodeEvalConfig.timeout={self.timeout!r} must be a positive number of seconds")

  def due(self, step: int) -> bool:
    """Whether the eval runs at this step.

    Args:
      step: the training step just completed.
    Returns:
      True when period > 0 and step is a positive multiple of it.
    """
    return self.period > 0 and step > 0 and step % self.period == 0


def _check_int(name: str, value, lowest: int) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
    raise ValueError(f"train.CodeEvalConfig.{name}={value!r} must be an integer >= {lowest}")
