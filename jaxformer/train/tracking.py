"""Optional Weights & Biases logging: every scalar MetricsLog writes to TensorBoard also goes to W&B.

Off by default; gin turns it on (`train.WandbConfig.enabled = True`, needs `pip install -e ".[wandb]"`).
The run id is kept in MODEL_DIR/wandb_run_id, so a resumed training run continues the same W&B run.
Only process 0 logs.
"""

import dataclasses
import os
import secrets
import string
import tempfile

import gin
import jax

from jaxformer import fs

MODES = ("online", "offline", "disabled")
RUN_ID_FILE = "wandb_run_id"


@gin.configurable(module="train")
@dataclasses.dataclass(frozen=True)
class WandbConfig:
  """Where and how training metrics go to Weights & Biases (gin: train.WandbConfig.*).

  Attributes:
    enabled: log to W&B at all.
    project: the W&B project.
    entity: the W&B team or user; None: the logged-in user's default.
    name: the run's display name; None: MODEL_DIR's base name.
    mode: 'online', 'offline' (written under MODEL_DIR/wandb for `wandb sync`) or 'disabled'.
    tags: the run's tags.
  """

  enabled: bool = False
  project: str = "jaxformer"
  entity: str | None = None
  name: str | None = None
  mode: str = "online"
  tags: tuple = ()

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"train.WandbConfig.mode={self.mode!r}: use one of {', '.join(MODES)}")
    if not isinstance(self.project, str) or not self.project:
      raise ValueError(f"train.WandbConfig.project={self.project!r} must be a non-empty string")
    if isinstance(self.tags, str) or not all(isinstance(t, str) for t in self.tags):
      raise ValueError(f"train.WandbConfig.tags={self.tags!r} must be a list of strings")
    # gin gives lists; a tuple keeps the frozen config hashable.
    object.__setattr__(self, "tags", tuple(self.tags))


def _new_run_id() -> str:
  # W&B run ids are short lowercase alphanumerics, as wandb's own generator makes them.
  alphabet = string.ascii_lowercase + string.digits
  return "".join(secrets.choice(alphabet) for _ in range(8))


def run_id(model_dir: str) -> str:
  """The W&B run id of MODEL_DIR: read from MODEL_DIR/wandb_run_id, or made and written there.

  Args:
    model_dir: the run's directory, local or gs://.
  Returns:
    The id (8 lowercase letters and digits for a new run).
  """
  path = os.path.join(model_dir, RUN_ID_FILE)
  if fs.exists(path):
    with fs.open(path) as f:
      existing = f.read().strip()
    if existing:
      return existing
  new = _new_run_id()
  fs.write(path, new + "\n")
  return new


class WandbWriter:
  """One W&B run for one MODEL_DIR; `write` logs scalars at a step, `close` finishes the run.

  Only process 0 creates it (MetricsLog does so), so multi-host runs log once.
  """

  def __init__(self, config: WandbConfig, model_dir: str, run_config: dict | None = None):
    """Starts (or resumes) the run.

    Args:
      config: the WandbConfig (enabled or not: the caller decides whether to build a writer).
      model_dir: the run's directory, local or gs://; holds wandb_run_id and, when local, wandb/.
      run_config: the hyperparameters to record as the W&B run's config.
    Raises:
      ValueError: wandb is not installed, or this is not process 0.
    """
    if jax.process_index() != 0:
      raise ValueError(f"WandbWriter on process {jax.process_index()}: only process 0 logs to W&B")
    try:
      import wandb
    except ImportError as e:
      raise ValueError('train.WandbConfig.enabled = True needs the wandb package: pip install -e ".[wandb]"') from e
    model_dir = fs.resolve(model_dir)
    # wandb writes its run files to a local folder: MODEL_DIR itself, or a temp dir for gs://.
    local_dir = tempfile.mkdtemp(prefix="jaxformer-wandb-") if fs.is_remote(model_dir) else model_dir
    fs.makedirs(model_dir)
    self.run_id = run_id(model_dir)
    self._run = wandb.init(
      project=config.project,
      entity=config.entity,
      name=config.name or os.path.basename(os.path.normpath(model_dir)),
      mode=config.mode,
      tags=list(config.tags),
      dir=local_dir,
      id=self.run_id,
      resume="allow",
      config=dict(run_config or {}),
    )

  def write(self, step: int, scalars: dict) -> None:
    """Logs scalars (name -> number) at a training step.

    Args:
      step: the training step (W&B's x axis).
      scalars: names as TensorBoard has them, e.g. 'train/loss', to int or float values.
    """
    if self._run is not None:
      self._run.log(dict(scalars), step=int(step))

  def close(self) -> None:
    """Finishes the run (flushes it to W&B, or to the offline run folder); later writes are dropped."""
    if self._run is not None:
      self._run.finish()
      self._run = None
