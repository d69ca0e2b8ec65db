"""`jaxformer import`: a HuggingFace directory (CodeGen, Llama, Qwen2, StarCoder2: the family is read from
config.json's model_type) -> an orbax checkpoint jaxformer trains
(fine-tuning) and samples from, with MODEL_DIR/config.gin and the vocabulary beside it."""

import dataclasses
import importlib
import json
import os
import shutil

import jax
import numpy as np

from jaxformer import checkpoint, models, runlock
from jaxformer.data.pipeline.vocabulary import HF_TOKENIZER_FILES
from jaxformer.models import FamilyConfig, param_shapes
from jaxformer.models.common import hf_leaves as layout


def _tensor_reader(hf_dir: str):
  """get(name) -> float32 numpy for safetensors (single or sharded) or pytorch_model.bin."""
  index = os.path.join(hf_dir, "model.safetensors.index.json")
  single = os.path.join(hf_dir, "model.safetensors")
  if os.path.exists(index) or os.path.exists(single):
    from safetensors import safe_open

    def opened(path):
      try:
        return safe_open(path, framework="pt")
      except Exception as e:  # safetensors raises its own error type for a damaged header
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from e

    if os.path.exists(index):
      try:
        with open(index) as f:
          weight_map = json.load(f)["weight_map"]
      except (ValueError, KeyError) as e:
        raise ValueError(f"{index}: not a safetensors index with a weight_map ({e})") from e
    else:
      with opened(single) as f:
        weight_map = {name: "model.safetensors" for name in f.keys()}

    def get(name):
      if name not in weight_map:
        raise ValueError(f"{hf_dir}: tensor {name!r} is missing")
      path = os.path.join(hf_dir, weight_map[name])
      with opened(path) as f:
        try:
          return f.get_tensor(name).float().numpy()
        except Exception as e:  # a truncated file fails only when the tensor's bytes are read
          raise ValueError(f"{path}: tensor {name!r} does not read ({e})") from e

    return get
  binary = os.path.join(hf_dir, "pytorch_model.bin")
  if os.path.exists(binary):
    import torch

    state = torch.load(binary, map_location="cpu", weights_only=True)

    def get(name):
      if name not in state:
        raise ValueError(f"{binary}: tensor {name!r} is missing")
      return state[name].float().numpy()

    return get
  raise FileNotFoundError(f"{hf_dir} holds no model.safetensors(.index.json) or pytorch_model.bin")


def read_hf(hf_dir: str, qkv_groups: int | None = None) -> tuple[FamilyConfig, dict, dict]:
  """(our config, our params as numpy, the layout options used: CodeGen's QKV groups)."""
  config_path = os.path.join(hf_dir, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{config_path} is missing: not a HuggingFace model directory")
  try:
    with open(config_path) as f:
      hf = json.load(f)
  except ValueError as e:
    raise ValueError(f"{config_path}: not JSON ({e})") from e
  family = models.for_hf(hf.get("model_type"), config_path)
  hf_layout = importlib.import_module(family.hf_module)
  config = hf_layout.config_from_hf(hf, config_path)
  options = hf_layout.layout_options(hf_dir, hf, qkv_groups=qkv_groups)
  get = _tensor_reader(hf_dir)
  shapes = param_shapes(config)
  params = {}
  for leaf in hf_layout.leaves(config, **options):
    value = layout.our_leaf(leaf, get, config, options).astype(np.float32)
    expected = layout.get_path(shapes, leaf.path).shape
    if value.shape != tuple(expected):
      raise ValueError(
        f"{hf_dir}: {leaf.hf_name.format(i='*')} gives shape {value.shape} for {'/'.join(leaf.path)}, "
        f"expected {tuple(expected)} from config.json"
      )
    layout.set_path(params, leaf.path, value)
  return config, params, options


def config_gin(config: FamilyConfig) -> str:
  """The run's config.gin: the model as HuggingFace described it, and nothing else, so it goes beside any
  run gin without the two binding a setting twice (the data's VOCABULARY is bound apart: README)."""
  name = config.gin_name
  lines = [
    "# Written by `jaxformer import`: the model as HuggingFace described it.",
    f"models.bound.config = @{name}()",
  ]
  # HF computes in float32: sample and eval on the import match it (bfloat16 drifts by ~0.04)
  defaults = type(config)()
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if field.name == "dtype" or value != getattr(defaults, field.name):
      value = dict(value) if field.name == "rope_scaling" else value
      lines.append(f"{name}.{field.name} = {value!r}")
  return "\n".join(lines) + "\n"


DTYPES = ("float32", "bfloat16")


def import_hf(hf_dir: str, model_dir: str, qkv_groups: int | None = None, dtype: str = "float32") -> dict:
  """Writes MODEL_DIR (checkpoint at step 0 with the parameters, config.gin, vocabulary/).

  dtype: what sample, eval and train compute in (ModelConfig.dtype); float32 matches HF's default.
  """
  if dtype not in DTYPES:
    raise ValueError(f"--dtype={dtype}: choose one of {DTYPES}")
  model_dir = os.path.abspath(model_dir)
  existing = [n for n in ("config.gin", "checkpoints", "vocabulary") if os.path.exists(os.path.join(model_dir, n))]
  if existing:
    raise ValueError(f"--model_dir={model_dir} already holds {', '.join(existing)}; import into a new directory")
  config, params, options = read_hf(hf_dir, qkv_groups)
  config = dataclasses.replace(config, dtype=dtype)
  created = not os.path.exists(model_dir)
  try:
    with runlock.RunLock(model_dir, "import"):
      return _write_run(hf_dir, model_dir, config, params, options)
  except BaseException:
    if created and os.path.isdir(model_dir) and not os.listdir(model_dir):
      os.rmdir(model_dir)  # the folder the lock made: a refused import leaves nothing
    raise


def _check_vocabulary_fits(path: str, hf_dir: str, config) -> None:
  """A tokenizer with more ids than the model's embedding would make sample feed out-of-range ids."""
  from jaxformer.data.pipeline.vocabulary import load_vocabulary

  size = load_vocabulary(path).vocab_size
  if size > config.vocab_size:
    raise ValueError(
      f"{hf_dir}: its tokenizer has {size} ids but config.json's vocab_size is {config.vocab_size}: a token "
      "past the embedding would be read out of range; import a matching model and tokenizer"
    )


def _copy_vocabulary(hf_dir: str, target: str) -> str | None:
  """Copies the source's tokenizer into target; returns the vocabulary's file name there, or None.

  Our own exports carry spm.model (the exact SentencePiece model). Otherwise tokenizer.json and the
  HF files beside it; a checkpoint with only GPT-2-style vocab.json and merges.txt gets its
  tokenizer.json written from them by transformers.
  """
  if os.path.exists(os.path.join(hf_dir, "spm.model")):
    shutil.copy(os.path.join(hf_dir, "spm.model"), os.path.join(target, "spm.model"))
    return "spm.model"
  if not os.path.exists(os.path.join(hf_dir, "tokenizer.json")):
    if not all(os.path.exists(os.path.join(hf_dir, n)) for n in ("vocab.json", "merges.txt")):
      return None
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(hf_dir, use_fast=True).backend_tokenizer.save(os.path.join(target, "tokenizer.json"))
  for name in HF_TOKENIZER_FILES:
    if os.path.exists(os.path.join(hf_dir, name)):
      shutil.copy(os.path.join(hf_dir, name), os.path.join(target, name))
  return "tokenizer.json"


def _write_run(hf_dir: str, model_dir: str, config, params, options: dict) -> dict:
  partial = f"{model_dir}.partial-{os.getpid()}"
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(os.path.join(partial, "vocabulary"))
  try:
    vocabulary = _copy_vocabulary(hf_dir, os.path.join(partial, "vocabulary"))
    if vocabulary:
      _check_vocabulary_fits(os.path.join(partial, "vocabulary", vocabulary), hf_dir, config)
    vocabulary = vocabulary and os.path.join(model_dir, "vocabulary", vocabulary)
    with open(os.path.join(partial, "config.gin"), "w") as f:
      f.write(config_gin(config))
    manager = checkpoint.make_manager(partial, checkpoint_period=1, async_save=False)
    checkpoint.save(manager, 0, {"params": jax.tree.map(np.asarray, params)}, force=True)
    checkpoint.seal(manager)
    manager.close()
    if os.path.exists(model_dir):
      for entry in os.listdir(partial):
        os.rename(os.path.join(partial, entry), os.path.join(model_dir, entry))
      os.rmdir(partial)
    else:
      os.rename(partial, model_dir)
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise
  return {"model_dir": model_dir, "options": options, "vocabulary": vocabulary, "config": config}
