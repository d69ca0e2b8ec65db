"""The run's own copy of its tokenizer (MODEL_DIR/vocabulary/): written at the start of a run, and the check
that a resumed or fine-tuned run trains with the same one."""

import hashlib
import os

from jaxformer import checkpoint, fs
from jaxformer.errors import UserError


def keep_vocabulary(vocabulary, model_dir: str):
  """Copies the vocabulary file into MODEL_DIR/vocabulary/ (as spm.model or tokenizer.json), so
  sample, eval and export need no corpus; HF tokenizer files beside a tokenizer.json go with it."""
  from jaxformer.data.pipeline.vocabulary import HF_TOKENIZER_FILES, vocabulary_file_name

  source = _vocabulary_source(vocabulary)
  if not source:
    return
  target = os.path.join(model_dir, "vocabulary", vocabulary_file_name(source))
  if source.endswith(".json") and fs.resolve(source) != fs.resolve(target):
    for name in HF_TOKENIZER_FILES[1:]:
      beside = os.path.join(os.path.dirname(source), name)
      if fs.exists(beside):
        fs.makedirs(os.path.dirname(target))
        fs.copy(beside, os.path.join(os.path.dirname(target), name))
  if fs.resolve(source) != fs.resolve(target):
    fs.makedirs(os.path.dirname(target))
    fs.copy(source, target)


def _vocabulary_source(vocabulary) -> str | None:
  return getattr(vocabulary, "model_path", None) or getattr(vocabulary, "path", None)


def _file_sha256(path: str) -> str:
  with fs.open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def check_run_vocabulary(model_dir: str, vocabulary, switch: bool) -> None:
  """A run's tokenizer is part of the run: resuming (or fine-tuning an import) with another is refused,
  naming both digests, unless train.train.switch_vocabulary says it is meant."""
  kept, source = checkpoint.find_vocabulary(model_dir), _vocabulary_source(vocabulary)
  if kept is None or source is None or fs.resolve(source) == fs.resolve(kept) or switch:
    return
  ours, theirs = _file_sha256(kept), _file_sha256(source)
  if ours != theirs:
    raise UserError(
      f"{kept} (sha256 {ours[:12]}) is the tokenizer this run was trained with, and VOCABULARY={source} "
      f"(sha256 {theirs[:12]}) is another: bind VOCABULARY to the run's own, or set "
      "--gin.train.train.switch_vocabulary=True to train on with the new one (it replaces the run's copy)"
    )
