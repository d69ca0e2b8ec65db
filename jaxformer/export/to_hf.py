"""`jaxformer export`: a run's checkpoint -> a HuggingFace CodeGenForCausalLM directory.

Tensors stream one of our leaves at a time (restored alone from the orbax checkpoint), are
split per layer, converted and written into safetensors shards; host memory peaks near the
largest stacked leaf plus one shard, never at the whole model. The output appears at its path
only when complete (written beside it, then renamed).
"""

import json
import os
import shutil
import warnings

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxformer import checkpoint
from jaxformer.export import codegen_layout as layout
from jaxformer.model import ModelConfig
from jaxformer.plan import param_shapes

TORCH_DTYPES = ("float32", "bfloat16", "float16")


class PrefixLMWarning(UserWarning):
  """The checkpoint was trained with bidirectional prefixes; HF CodeGen attends causally."""


def _abstract_leaf(shape_dtype, path):
  device = jax.local_devices(backend="cpu")[0]
  sharding = NamedSharding(jax.sharding.Mesh(np.array([device]), ("x",)), PartitionSpec())
  tree = {}
  layout.set_path(tree, path, jax.ShapeDtypeStruct(shape_dtype.shape, shape_dtype.dtype, sharding=sharding))
  return tree


def _write_shards(tensors, directory: str, dtype: str, max_shard_bytes: int) -> dict:
  """Writes (name, numpy) pairs into safetensors shards as they come; returns the weight map."""
  import torch  # pylint: disable=import-outside-toplevel
  from safetensors.torch import save_file  # pylint: disable=import-outside-toplevel
  torch_dtype = getattr(torch, dtype)
  shard, shard_bytes, names_by_shard = {}, 0, []

  def flush():
    nonlocal shard, shard_bytes
    if shard:
      save_file(shard, os.path.join(directory, f"shard-{len(names_by_shard):05d}.tmp"), metadata={"format": "pt"})
      names_by_shard.append(list(shard))
      shard, shard_bytes = {}, 0

  for name, array in tensors:
    tensor = torch.from_numpy(np.asarray(array, np.float32)).to(torch_dtype).contiguous()
    size = tensor.numel() * tensor.element_size()
    if shard and shard_bytes + size > max_shard_bytes:
      flush()
    shard[name] = tensor
    shard_bytes += size
  flush()

  weight_map = {}
  total = len(names_by_shard)
  for k, names in enumerate(names_by_shard):
    final = "model.safetensors" if total == 1 else f"model-{k + 1:05d}-of-{total:05d}.safetensors"
    os.rename(os.path.join(directory, f"shard-{k:05d}.tmp"), os.path.join(directory, final))
    weight_map.update({name: final for name in names})
  if total > 1:
    index = {"metadata": {}, "weight_map": weight_map}
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
      json.dump(index, f, indent=1)
  return weight_map


def export_params(read_leaf, config: ModelConfig, output: str, vocabulary_path: str | None, dtype: str = "float32",
                  qkv_groups: int = 4, max_shard_bytes: int = 2 << 30, prefix_lm: bool = False) -> str:
  """Writes the HF directory at `output` from read_leaf(Leaf) -> numpy (our leaf, all layers).

  Raises ValueError for a bad dtype or an existing output; leaves nothing at `output` on failure.
  """
  if dtype not in TORCH_DTYPES:
    raise ValueError(f"--dtype={dtype}: choose one of {TORCH_DTYPES}")
  output = os.path.abspath(output)
  if os.path.exists(output):
    raise ValueError(f"--output={output} exists; choose a new directory")
  if config.num_heads % qkv_groups:
    raise ValueError(f"{config.num_heads} heads cannot be written as {qkv_groups} QKV groups")
  if prefix_lm:
    warnings.warn("this checkpoint was trained with prefix-LM (bidirectional prefix) attention; HF CodeGen "
                  "attends causally, so the exported model sees prompts causally", PrefixLMWarning, stacklevel=2)
  partial = f"{output}.partial-{os.getpid()}"
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  try:
    tensors = (pair for leaf in layout.LEAVES
               for pair in layout.hf_tensors(leaf, read_leaf(leaf), config, qkv_groups))
    _write_shards(tensors, partial, dtype, max_shard_bytes)
    # The model reads <pad> (0) as BOS; HF infers attention masks from pad_token_id when none is
    # given, so HF's pad is <|endoftext|> (as GPT-2 and CodeGen do) and never masks the BOS.
    bos, eos = 0, 1
    pad = eos
    with open(os.path.join(partial, "config.json"), "w") as f:
      json.dump(layout.hf_config(config, bos, eos, pad, dtype), f, indent=1)
    with open(os.path.join(partial, "generation_config.json"), "w") as f:
      json.dump({"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad}, f, indent=1)
    if vocabulary_path:
      if vocabulary_path.endswith(".json"):
        shutil.copy(vocabulary_path, os.path.join(partial, "tokenizer.json"))
      else:
        from jaxformer.export.tokenizer import save_hf_tokenizer  # pylint: disable=import-outside-toplevel
        save_hf_tokenizer(vocabulary_path, partial, config.max_length)
    os.rename(partial, output)
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise
  return output


def export_checkpoint(model_dir: str, config: ModelConfig, output: str, vocabulary_path: str | None,
                      step: int | None = None, **kwargs) -> tuple[str, int]:
  """export_params reading each leaf alone from MODEL_DIR's checkpoint (latest, or `step`)."""
  shapes = param_shapes(config)
  steps_seen = []

  def read_leaf(leaf):
    abstract = _abstract_leaf(layout.get_path(shapes, leaf.path), leaf.path)
    params, restored_step = checkpoint.restore_params(model_dir, abstract, step)
    steps_seen.append(restored_step)
    return np.asarray(layout.get_path(params, leaf.path))

  path = export_params(read_leaf, config, output, vocabulary_path, **kwargs)
  return path, steps_seen[0]


def export_in_memory(params, config: ModelConfig, output: str, vocabulary_path: str | None = None, **kwargs) -> str:
  """export_params from a parameter tree already in memory (tests, notebooks)."""
  return export_params(lambda leaf: np.asarray(layout.get_path(params, leaf.path)), config, output,
                       vocabulary_path, **kwargs)
