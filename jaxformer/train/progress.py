"""What the trainer shows while it runs: a tqdm bar on a terminal, one plain line per log period when
the output goes to a file (a log holds readable lines, not a carriage-return stream)."""

import sys

from jaxformer.train import mfu as mfu_lib


def describe(step: int, total: int, record: dict) -> str:
  """One log period as text: loss, throughput and MFU under both accountings."""
  return (
    f"step {step}/{total}: loss {record['loss']:.4f} | {record['tokens_per_second']:,.0f} tok/s | "
    f"MFU 6N {mfu_lib.format_mfu(record['mfu_6n'])}, 6N+attn {mfu_lib.format_mfu(record['mfu_6n_attention'])}"
  )


class Progress:
  """enabled=False shows nothing; stream defaults to stderr for the bar and stdout for plain lines."""

  def __init__(self, enabled: bool, total: int, initial: int, terminal: bool | None = None):
    self.total = total
    self.enabled = enabled
    terminal = sys.stderr.isatty() if terminal is None else terminal
    self._bar = None
    if enabled and terminal:
      from tqdm import tqdm

      self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

  def log(self, step: int, record: dict) -> None:
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.set_postfix_str(describe(step, self.total, record).split(": ", 1)[1])
    else:
      print(describe(step, self.total, record), flush=True)

  def update(self, steps: int = 1) -> None:
    if self._bar is not None:
      self._bar.update(steps)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
