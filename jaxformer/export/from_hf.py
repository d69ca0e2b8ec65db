"""`jaxformer import`: a HuggingFace CodeGen directory -> an orbax checkpoint jaxformer trains
(fine-tuning) and samples from, with MODEL_DIR/config.gin and the vocabulary beside it."""

import json
import os
import shutil

import jax
import numpy as np

from jaxformer import checkpoint, runlock
from jaxformer.export import codegen_layout as layout
from jaxformer.model import ModelConfig, param_shapes


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


def detect_qkv_groups(hf: dict) -> int:
  """CodeGen2-1B/3.7B ship remote code (auto_map) whose QKV uses 8 groups; upstream uses 4."""
  return 8 if "auto_map" in hf else 4


def read_hf(hf_dir: str, qkv_groups: int | None = None) -> tuple[ModelConfig, dict, int]:
  """(ModelConfig, our params as numpy, QKV groups used)."""
  config_path = os.path.join(hf_dir, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{config_path} is missing: not a HuggingFace model directory")
  try:
    with open(config_path) as f:
      hf = json.load(f)
  except ValueError as e:
    raise ValueError(f"{config_path}: not JSON ({e})") from e
  config = layout.model_config_from_hf(hf, config_path)
  groups = qkv_groups or detect_qkv_groups(hf)
  get = _tensor_reader(hf_dir)
  shapes = param_shapes(config)
  params = {}
  for leaf in layout.LEAVES:
    value = layout.our_leaf(leaf, get, config, groups).astype(np.float32)
    expected = layout.get_path(shapes, leaf.path).shape
    if value.shape != tuple(expected):
      raise ValueError(
        f"{hf_dir}: {leaf.hf_name} gives shape {value.shape} for {'/'.join(leaf.path)}, "
        f"expected {tuple(expected)} from config.json"
      )
    layout.set_path(params, leaf.path, value)
  return config, params, groups


def config_gin(config: ModelConfig, vocabulary: str | None) -> str:
  lines = ["# Written by `jaxformer import`: the model as HuggingFace described it."]
  for field in (
    "vocab_size",
    "num_layers",
    "d_model",
    "num_heads",
    "rotary_dim",
    "max_length",
    "mlp_ratio",
    "layer_norm_epsilon",
    "dtype",  # HF computes in float32: sample and eval on the import match it (bfloat16 drifts by ~0.04)
  ):
    lines.append(f"ModelConfig.{field} = {getattr(config, field)!r}")
  lines.append(f"MODEL_VOCAB_SIZE = {config.vocab_size}")
  if vocabulary:
    lines.append(f"VOCABULARY_PATH = {vocabulary!r}")
  return "\n".join(lines) + "\n"


def import_hf(hf_dir: str, model_dir: str, qkv_groups: int | None = None) -> dict:
  """Writes MODEL_DIR (checkpoint at step 0 with the parameters, config.gin, vocabulary/)."""
  model_dir = os.path.abspath(model_dir)
  existing = [n for n in ("config.gin", "checkpoints", "vocabulary") if os.path.exists(os.path.join(model_dir, n))]
  if existing:
    raise ValueError(f"--model_dir={model_dir} already holds {', '.join(existing)}; import into a new directory")
  config, params, groups = read_hf(hf_dir, qkv_groups)
  with runlock.RunLock(model_dir, "import"):
    return _write_run(hf_dir, model_dir, config, params, groups)


def _write_run(hf_dir: str, model_dir: str, config, params, groups: int) -> dict:
  partial = f"{model_dir}.partial-{os.getpid()}"
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(os.path.join(partial, "vocabulary"))
  try:
    vocabulary = None
    for name in ("spm.model", "tokenizer.json"):
      if os.path.exists(os.path.join(hf_dir, name)):
        shutil.copy(os.path.join(hf_dir, name), os.path.join(partial, "vocabulary", name))
        vocabulary = os.path.join(model_dir, "vocabulary", name)
        break
    with open(os.path.join(partial, "config.gin"), "w") as f:
      f.write(config_gin(config, vocabulary))
    manager = checkpoint.make_manager(partial, checkpoint_period=1, async_save=False)
    checkpoint.save(manager, 0, {"params": jax.tree.map(np.asarray, params)}, force=True)
    manager.wait_until_finished()
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
  return {"model_dir": model_dir, "qkv_groups": groups, "vocabulary": vocabulary, "config": config}
