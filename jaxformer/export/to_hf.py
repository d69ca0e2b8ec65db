"""`jaxformer export`: a run's checkpoint -> a HuggingFace directory of its family's class (CodeGenForCausalLM,
LlamaForCausalLM, Qwen2ForCausalLM, Starcoder2ForCausalLM) that `from_pretrained` loads without flags.

Tensors stream one of our leaves at a time (restored alone, as numpy, from the orbax
checkpoint), are split per layer, converted and appended to safetensors shards whose headers are
planned from the shapes; host memory peaks near the largest stacked leaf, never the whole model.
The output appears at its path only when complete (written beside it, then renamed).
"""

import json
import os
import shutil
import warnings

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxformer import checkpoint
from jaxformer.models import FamilyConfig, param_shapes
from jaxformer.models.common import hf_leaves as layout

TORCH_DTYPES = ("float32", "bfloat16", "float16")


class PrefixLMWarning(UserWarning):
  """The checkpoint was trained with bidirectional prefixes; HF CodeGen attends causally."""


def _abstract_leaf(shape_dtype, path):
  device = jax.local_devices(backend="cpu")[0]
  sharding = NamedSharding(jax.sharding.Mesh(np.array([device]), ("x",)), PartitionSpec())
  tree = {}
  layout.set_path(tree, path, jax.ShapeDtypeStruct(shape_dtype.shape, shape_dtype.dtype, sharding=sharding))
  return tree


SAFETENSORS_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


def _plan_shards(names_and_shapes, dtype: str, max_shard_bytes: int):
  """Groups (name, shape) in emission order into shards; returns [(file name, [(name, shape, nbytes)])]."""
  itemsize = np.dtype(_numpy_dtype(dtype)).itemsize
  shards, current, current_bytes = [], [], 0
  for name, shape in names_and_shapes:
    nbytes = int(np.prod(shape)) * itemsize
    if current and current_bytes + nbytes > max_shard_bytes:
      shards.append(current)
      current, current_bytes = [], 0
    current.append((name, tuple(shape), nbytes))
    current_bytes += nbytes
  if current:
    shards.append(current)
  total = len(shards)
  names = (
    ["model.safetensors"] if total == 1 else [f"model-{k + 1:05d}-of-{total:05d}.safetensors" for k in range(total)]
  )
  return list(zip(names, shards))


def _numpy_dtype(dtype: str):
  if dtype == "bfloat16":
    import ml_dtypes

    return ml_dtypes.bfloat16
  return np.dtype(dtype)


def _write_shards_streaming(tensors, plan, directory: str, dtype: str) -> None:
  """Writes safetensors files tensor by tensor: each file's header is planned up front from the
  shapes, then each tensor's bytes are appended as it arrives and dropped, so memory holds one
  tensor at a time (the safetensors library would build each whole file in memory first)."""
  numpy_dtype = _numpy_dtype(dtype)
  files = iter(plan)
  handle, expected = None, []
  for name, array in tensors:
    if not expected:
      if handle:
        handle.close()
      file_name, entries = next(files)
      header, offset = {"__metadata__": {"format": "pt"}}, 0
      for entry_name, shape, nbytes in entries:
        header[entry_name] = {
          "dtype": SAFETENSORS_DTYPES[dtype],
          "shape": list(shape),
          "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
      encoded = json.dumps(header, separators=(",", ":")).encode()
      encoded += b" " * (-len(encoded) % 8)
      handle = open(os.path.join(directory, file_name), "wb")
      handle.write(len(encoded).to_bytes(8, "little") + encoded)
      expected = [(n, s) for n, s, _ in entries]
    want_name, want_shape = expected.pop(0)
    if name != want_name or tuple(array.shape) != want_shape:
      raise RuntimeError(f"export order mismatch: got {name} {array.shape}, planned {want_name} {want_shape}")
    handle.write(np.ascontiguousarray(array, dtype=numpy_dtype).tobytes())
  if handle:
    handle.close()
  if len(plan) > 1:
    index = {"metadata": {}, "weight_map": {n: f for f, entries in plan for n, _, _ in entries}}
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
      json.dump(index, f, indent=1)


def _hf_names_and_shapes(config: FamilyConfig, options: dict):
  """(HF name, HF shape) in the order export emits them, from shapes alone."""
  shapes = param_shapes(config)
  for leaf in config.hf.leaves(config, **options):
    shape = layout.get_path(shapes, leaf.path).shape
    one = np.empty(shape[1:] if leaf.per_layer else shape, np.float32)  # pages never touched
    hf_shape = leaf.to_hf(one, config, options).shape
    for i in range(shape[0] if leaf.per_layer else 1):
      yield leaf.hf_name.format(i=i), hf_shape


def export_params(
  read_leaf,
  config: FamilyConfig,
  output: str,
  vocabulary_path: str | None,
  dtype: str = "float32",
  qkv_groups: int = 4,
  max_shard_bytes: int = 2 << 30,
  prefix_lm: bool = False,
) -> str:
  """Writes the HF directory at `output` from read_leaf(Leaf) -> numpy (our leaf, all layers).

  Raises ValueError for a bad dtype or an existing output; leaves nothing at `output` on failure.
  """
  if dtype not in TORCH_DTYPES:
    raise ValueError(f"--dtype={dtype}: choose one of {TORCH_DTYPES}")
  output = os.path.abspath(output)
  if os.path.exists(output):
    raise ValueError(f"--output_dir={output} exists; choose a new directory")
  options = {"groups": qkv_groups} if config.family == "codegen" else {}
  if config.family == "codegen" and config.num_heads % qkv_groups:
    raise ValueError(f"{config.num_heads} heads cannot be written as {qkv_groups} QKV groups")
  if prefix_lm:
    warnings.warn(
      "this checkpoint was trained with prefix-LM (bidirectional prefix) attention; HF CodeGen "
      "attends causally, so the exported model sees prompts causally",
      PrefixLMWarning,
      stacklevel=2,
    )
  partial = f"{output}.partial-{os.getpid()}"
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  try:
    plan = _plan_shards(_hf_names_and_shapes(config, options), dtype, max_shard_bytes)
    leaves = config.hf.leaves(config, **options)
    tensors = (pair for leaf in leaves for pair in layout.hf_tensors(leaf, read_leaf(leaf), config, options))
    _write_shards_streaming(tensors, plan, partial, dtype)
    bos, eos = _special_ids(vocabulary_path)
    # HF infers attention masks from pad_token_id when none is given, so HF's pad is <|endoftext|>
    # (as GPT-2 and CodeGen do) and never masks our BOS.
    pad = eos
    with open(os.path.join(partial, "config.json"), "w") as f:
      json.dump(config.hf.hf_config(config, bos, eos, pad, dtype, **options), f, indent=1)
    with open(os.path.join(partial, "generation_config.json"), "w") as f:
      json.dump({"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad}, f, indent=1)
    if vocabulary_path:
      if vocabulary_path.endswith(".json"):
        _save_tokenizers_json(vocabulary_path, partial, config.max_length)
      else:
        from jaxformer.export.tokenizer import save_hf_tokenizer

        save_hf_tokenizer(vocabulary_path, partial, config.max_length)
    os.rename(partial, output)
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise
  return output


def _special_ids(vocabulary_path: str | None) -> tuple[int, int]:
  """(bos, eos) for HF's config: ours read <pad> (0) as BOS and end with <|endoftext|> (1); a
  tokenizer.json's are looked up by string (no BOS of its own: HF starts an empty prompt at EOS)."""
  if not vocabulary_path or not vocabulary_path.endswith(".json"):
    return 0, 1
  from jaxformer.data.pipeline.vocabulary import TokenizersVocabulary

  vocabulary = TokenizersVocabulary(vocabulary_path)
  return (vocabulary.eos_id if vocabulary.bos_id is None else vocabulary.bos_id), vocabulary.eos_id


def _save_tokenizers_json(path: str, output_dir: str, max_length: int) -> None:
  """tokenizer.json with the HF files that came with it (an import's), or a tokenizer_config.json
  written for it, so AutoTokenizer loads it and encodes as training did (no BOS added)."""
  from jaxformer.data.pipeline.vocabulary import EOS, HF_TOKENIZER_FILES

  source = os.path.dirname(path)
  shutil.copy(path, os.path.join(output_dir, "tokenizer.json"))
  companions = [n for n in HF_TOKENIZER_FILES[1:] if os.path.exists(os.path.join(source, n))]
  if "tokenizer_config.json" in companions:
    for name in companions:
      shutil.copy(os.path.join(source, name), os.path.join(output_dir, name))
    return
  from transformers import PreTrainedTokenizerFast

  PreTrainedTokenizerFast(
    tokenizer_file=path, eos_token=EOS, pad_token=EOS, model_max_length=max_length, clean_up_tokenization_spaces=False
  ).save_pretrained(output_dir)


def export_checkpoint(
  model_dir: str, config: FamilyConfig, output: str, vocabulary_path: str | None, step: int | None = None, **kwargs
) -> tuple[str, int]:
  """export_params reading each leaf alone from MODEL_DIR's checkpoint (latest, or `step`)."""
  shapes = param_shapes(config)
  steps_seen = []

  def read_leaf(leaf):
    abstract = _abstract_leaf(layout.get_path(shapes, leaf.path), leaf.path)
    verify = not steps_seen  # the checksums once, before the first leaf
    params, restored_step = checkpoint.restore_params(model_dir, abstract, step, as_numpy=True, verify=verify)
    steps_seen.append(restored_step)
    return layout.get_path(params, leaf.path)

  path = export_params(read_leaf, config, output, vocabulary_path, **kwargs)
  return path, steps_seen[0]


def export_in_memory(params, config: FamilyConfig, output: str, vocabulary_path: str | None = None, **kwargs) -> str:
  """export_params from a parameter tree already in memory (tests, notebooks)."""
  return export_params(
    lambda leaf: np.asarray(layout.get_path(params, leaf.path)), config, output, vocabulary_path, **kwargs
  )
