"""Where metrics go: MODEL_DIR/metrics.jsonl (remotely, numbered chunks in MODEL_DIR/metrics/),
TensorBoard event files, optionally Weights & Biases, and a loss plot at the end. Only process 0 writes."""

import io
import json
import os

import jax

from jaxformer import fs
from jaxformer.train.tracking import WandbConfig, WandbWriter


class MetricsLog:
  """Appends one JSON object per record (RecordLog) and mirrors scalars to TensorBoard (and W&B)."""

  def __init__(self, model_dir: str, wandb: WandbConfig | None = None, run_config: dict | None = None):
    """Opens the logs of MODEL_DIR (process 0 only; elsewhere every call does nothing).

    Args:
      model_dir: the run's directory, local or gs://.
      wandb: when given and enabled, every TensorBoard scalar also goes to Weights & Biases.
      run_config: the hyperparameters W&B records with the run (ignored without W&B).
    """
    self.enabled = jax.process_index() == 0
    self._writer = None
    self._records = None
    if self.enabled:
      from clu import metric_writers

      fs.makedirs(model_dir)
      self._records = RecordLog(model_dir)
      self._writer = metric_writers.SummaryWriter(os.path.join(model_dir, "tensorboard"))
    self._wandb = WandbWriter(wandb, model_dir, run_config) if self.enabled and wandb and wandb.enabled else None

  def write(self, step: int, values: dict, prefix: str = "", **fields):
    """Logs one record at a step.

    Args:
      step: the training step.
      values: metric name -> number (numpy and jax scalars too); strings and None go to metrics.jsonl only.
      prefix: prepended to each name in TensorBoard and W&B, e.g. 'train/' or 'eval/local_pl/'.
      **fields: extra metrics.jsonl fields (e.g. split, task); numeric ones are logged as scalars too.
    """
    if not self.enabled:
      return
    record = {"step": int(step), **fields, **{k: _plain(v) for k, v in values.items()}}
    self._records.append(record)
    scalars = {f"{prefix}{k}": v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
    self._writer.write_scalars(int(step), scalars)
    self._writer.flush()
    if self._wandb is not None:
      self._wandb.write(step, scalars)

  def close(self):
    """Closes TensorBoard and finishes the W&B run."""
    if self._writer is not None:
      self._writer.close()
    if self._wandb is not None:
      self._wandb.close()
      self._wandb = None


def _plain(value):
  try:
    value = value.item()
  except AttributeError:
    pass
  return value if isinstance(value, (int, float, str, bool)) or value is None else float(value)


class RecordLog:
  """The run's metric records as JSON lines, written at a cost that does not grow with the run.

  Locally: appended to MODEL_DIR/metrics.jsonl. Remotely (gs://, where an object cannot be appended
  to and each write replaces it whole): numbered chunk files MODEL_DIR/metrics/NNNNNN.jsonl of at
  most `chunk_lines` lines each; a write rewrites only the open chunk, and a restarted run opens a
  new chunk after the last one instead of reading the run's history. The zero-padded names are the
  index: read_metrics lists the folder and reads the chunks in name order.
  """

  def __init__(self, model_dir: str, chunk_lines: int = 100):
    self.model_dir = model_dir
    self.remote = fs.is_remote(model_dir)
    self.chunk_lines = chunk_lines
    self._lines: list[str] = []
    self._chunk = (max(_chunk_numbers(model_dir), default=-1) + 1) if self.remote else None

  @property
  def path(self) -> str:
    """The file the next record goes to."""
    if not self.remote:
      return os.path.join(self.model_dir, METRICS_FILE)
    return os.path.join(self.model_dir, METRICS_CHUNKS, f"{self._chunk:06d}.jsonl")

  def append(self, record: dict) -> None:
    line = json.dumps(record)
    if not self.remote:
      with open(self.path, "a") as f:
        f.write(line + "\n")
      return
    if len(self._lines) == self.chunk_lines:  # the open chunk is full: start the next one
      self._chunk, self._lines = self._chunk + 1, []
    self._lines.append(line)
    fs.write(self.path, "\n".join(self._lines) + "\n")


METRICS_FILE = "metrics.jsonl"
METRICS_CHUNKS = "metrics"


def _chunk_numbers(model_dir: str) -> list[int]:
  folder = os.path.join(model_dir, METRICS_CHUNKS)
  if not fs.exists(folder):
    return []
  names = [n.rstrip("/") for n in fs.listdir(folder)]
  return sorted(int(n[: -len(".jsonl")]) for n in names if n.endswith(".jsonl") and n[: -len(".jsonl")].isdigit())


def read_metrics(model_dir: str) -> list[dict]:
  """Every record of the run in the order written: metrics.jsonl, then the remote chunks."""
  paths = [os.path.join(model_dir, METRICS_FILE)]
  paths += [os.path.join(model_dir, METRICS_CHUNKS, f"{n:06d}.jsonl") for n in _chunk_numbers(model_dir)]
  records = []
  for path in paths:
    if fs.exists(path):
      with fs.open(path) as f:
        records += [json.loads(line) for line in f if line.strip()]
  return records


def final_train_eval(model_dir: str, records: list[dict] | None = None) -> dict:
  """{task: loss} of the last eval the trainer logged in MODEL_DIR/metrics.jsonl (records: read already)."""
  evals = [r for r in (read_metrics(model_dir) if records is None else records) if r.get("split") == "eval"]
  if not evals:
    return {}
  last = max(r["step"] for r in evals)
  return {r["task"]: r["loss"] for r in evals if r["step"] == last}


def train_totals(model_dir: str, records: list[dict] | None = None) -> dict:
  """{steps, supervised_tokens} of MODEL_DIR/metrics.jsonl: the tokens under the training loss. Each train
  record sums its window's (loss_tokens_window over window_steps steps since the record before): their
  total, scaled to the run's steps where a resumed run's windows do not tile it. Records without
  windows (older runs) give the mean logged step's loss_tokens times the steps. records: read already."""
  records = read_metrics(model_dir) if records is None else records
  logged = {r["step"]: r for r in records if r.get("split") == "train" and "loss_tokens" in r}
  if not logged:
    return {}
  steps = max(logged)  # the last record per step wins: a resumed run logs its steps again
  windows = [r for r in logged.values() if "window_steps" in r]
  if windows:
    per_step = sum(r["loss_tokens_window"] for r in windows) / sum(r["window_steps"] for r in windows)
  else:
    per_step = sum(r["loss_tokens"] for r in logged.values()) / len(logged)
  return {"steps": steps, "supervised_tokens": per_step * steps}


def plot_losses(model_dir: str) -> str | None:
  """MODEL_DIR/loss.png: train loss and each task's eval loss against step (last value per step wins)."""
  records = read_metrics(model_dir)
  if not records or jax.process_index() != 0:
    return None
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  series = {}
  for r in records:
    if "loss" not in r:
      continue
    name = f"eval {r['task']}" if r.get("split") == "eval" else "train"
    series.setdefault(name, {})[r["step"]] = r["loss"]
  fig, ax = plt.subplots(figsize=(7, 4))
  for name, points in sorted(series.items()):
    steps = sorted(points)
    ax.plot(steps, [points[s] for s in steps], marker="o" if name != "train" else None, label=name)
  ax.set_xlabel("step")
  ax.set_ylabel("cross-entropy (nats/token)")
  ax.set_title(os.path.basename(os.path.normpath(model_dir)))
  ax.legend()
  ax.grid(alpha=0.3)
  path = os.path.join(model_dir, "loss.png")
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=100)
  plt.close(fig)
  fs.write(path, buffer.getvalue(), mode="wb")
  return path
