"""A jax.profiler trace of chosen train steps, for TensorBoard's profile plugin (`train` and `bench`)."""

import logging

import jax

from jaxformer import errors

log = logging.getLogger("jaxformer")


class StepProfiler:
  """Traces steps start, ..., stop - 1 (1-based step numbers, as logged) into log_dir.

  Call before(step) just before dispatching step number `step` and after(step, *outputs) just after;
  close() in a finally. Dispatch is asynchronous (the loop reads metrics one step late), so the trace
  stops only once the last traced step's outputs are ready: its device work is inside the trace.
  TensorBoard reads the trace from log_dir/plugins/profile/<run>/*.xplane.pb.
  """

  def __init__(self, log_dir: str, steps: tuple[int, int] | None, name: str = "train.train.profile_steps"):
    self.log_dir, self.active, self.done = log_dir, False, steps is None
    if steps is not None:
      if not isinstance(steps, (tuple, list)) or len(steps) != 2:
        raise errors.GinConfigError(f"{name}={steps!r}: give (start, stop), e.g. (10, 12) for steps 10 and 11")
      errors.require_int(f"{name}[0]", steps[0], 1)
      errors.require_int(f"{name}[1]", steps[1], steps[0] + 1)
    self.start, self.stop = steps or (0, 0)

  def before(self, step: int) -> None:
    if not self.done and not self.active and self.start <= step < self.stop:
      jax.profiler.start_trace(self.log_dir)
      self.active = True

  def after(self, step: int, *outputs) -> None:
    if self.active and step >= self.stop - 1:
      jax.block_until_ready(outputs)
      self.close()
      log.info("profiled steps %d-%d into %s", self.start, step, self.log_dir)

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active, self.done = False, True
