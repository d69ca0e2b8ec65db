"""A LoRA run to HuggingFace: merged (`export --merge`: a plain HF directory, kernels + alpha/rank * A @ B, no
peft needed) or adapters only (`export --adapters_only`: PEFT's layout, adapter_config.json and
adapter_model.safetensors, which `peft.PeftModel.from_pretrained` loads onto the exported base).

PEFT keeps lora_A.weight [rank, in] and lora_B.weight [out, rank] of each HF Linear and adds
(lora_alpha / r) * lora_B @ lora_A to its weight. Our adapters keep the kernel's axes ([*in, rank] and
[rank, *out]), and each family's HF layout (models/<family>/hf.py) turns a kernel into its HF weight by
transposes, reshapes and, for CodeGen's fused qkv_proj, a permutation of the output rows. Those maps are
read off the layout itself by converting index grids, so every family's adapters land exactly where its
kernels do.
"""

import json
import os
import shutil

import numpy as np

from jaxformer.models.common import hf_leaves as layout
from jaxformer.models.common import lora

TORCH_DTYPES = {"float32", "bfloat16", "float16"}


def _index_maps(leaf, kernel_shape: tuple, n_in: int, config, options: dict):
  """(in_order, out_order): HF column j reads our flattened input index in_order[j]; HF row i our flattened
  output index out_order[i]. ValueError when the leaf's conversion is not a pure rearrangement of a 2-D weight."""
  n_rows, n_cols = int(np.prod(kernel_shape[:n_in])), int(np.prod(kernel_shape[n_in:]))
  in_grid = np.broadcast_to(np.arange(n_rows, dtype=np.float64)[:, None], (n_rows, n_cols)).reshape(kernel_shape)
  out_grid = np.broadcast_to(np.arange(n_cols, dtype=np.float64)[None, :], (n_rows, n_cols)).reshape(kernel_shape)
  hf_in, hf_out = leaf.to_hf(in_grid, config, options), leaf.to_hf(out_grid, config, options)
  in_order, out_order = hf_in[0].astype(np.int64), hf_out[:, 0].astype(np.int64)
  if hf_in.ndim != 2 or not (np.all(hf_in == in_order[None, :]) and np.all(hf_out == out_order[:, None])):
    raise ValueError(f"{leaf.hf_name}: its HF layout is not a rearranged [out, in] Linear weight")
  return in_order, out_order


def _adapted(params: dict, leaf) -> dict | None:
  module = layout.get_path(params, leaf.path[:-1])
  return module if leaf.path[-1] == "kernel" and "lora_a" in module else None


def peft_tensors(params: dict, config, options: dict):
  """Yields (PEFT tensor name, array) for every adapter of the whole parameter tree (numpy, stacked layers)."""
  plain = config.replace(lora=None)
  for leaf in config.hf.leaves(plain, **options):
    module = _adapted(params, leaf)
    if module is None:
      continue
    a, b, kernel = module["lora_a"], module["lora_b"], module["kernel"]
    stacked = 1 if leaf.per_layer else 0
    n_in = a.ndim - 1 - stacked
    in_order, out_order = _index_maps(leaf, kernel.shape[stacked:], n_in, plain, options)
    name = leaf.hf_name.removesuffix(".weight")
    for i in range(kernel.shape[0] if stacked else 1):
      a_i, b_i = (a[i], b[i]) if stacked else (a, b)
      a2, b2 = a_i.reshape(-1, a_i.shape[-1]), b_i.reshape(b_i.shape[0], -1)
      prefix = "base_model.model." + name.format(i=i)
      yield f"{prefix}.lora_A.weight", np.ascontiguousarray(a2[in_order].T)
      yield f"{prefix}.lora_B.weight", np.ascontiguousarray(b2[:, out_order].T)


def target_modules(config, options: dict) -> list[str]:
  """The HF module names (q_proj, qkv_proj, ...) the run's targets are, for adapter_config.json."""
  plain = config.replace(lora=None)
  names = set()
  for leaf in config.hf.leaves(plain, **options):
    if leaf.path[-1] == "kernel" and len(leaf.path) >= 3 and lora.targeted(config.lora, leaf.path[-2], leaf.path[-3]):
      names.add(leaf.hf_name.removesuffix(".weight").rsplit(".", 1)[-1])
  return sorted(names)


def export_adapters(
  params: dict, config, output: str, base_model: str, dtype: str = "float32", qkv_groups: int = 4
) -> str:
  """Writes PEFT's adapter directory at `output` (must not exist); base_model: the HF base directory or hub
  name recorded as base_model_name_or_path; qkv_groups: as `export`'s (CodeGen's QKV layout). Returns it."""
  import torch
  from safetensors.torch import save_file

  options = {"groups": qkv_groups} if config.family == "codegen" else {}
  if dtype not in TORCH_DTYPES:
    raise ValueError(f"--dtype={dtype}: choose one of {sorted(TORCH_DTYPES)}")
  output = os.path.abspath(output)
  if os.path.exists(output):
    raise ValueError(f"--output_dir={output} exists; choose a new directory")
  torch_dtype = getattr(torch, dtype)
  tensors = {
    k: torch.from_numpy(np.asarray(v, np.float32)).to(torch_dtype) for k, v in peft_tensors(params, config, options)
  }
  lora_config = config.lora
  adapter_config = {
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
    "base_model_name_or_path": base_model,
    "r": lora_config.rank,
    "lora_alpha": lora_config.alpha,
    "lora_dropout": lora_config.dropout,
    "target_modules": target_modules(config, options),
    "bias": "none",
    "fan_in_fan_out": False,
    "use_rslora": False,
    "inference_mode": True,
  }
  partial = f"{output}.partial-{os.getpid()}"
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  try:
    save_file(tensors, os.path.join(partial, "adapter_model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(partial, "adapter_config.json"), "w") as f:
      json.dump(adapter_config, f, indent=1)
    os.rename(partial, output)
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise
  return output


def merged(params: dict, config):
  """(plain parameters with the adapters folded in, the plain config), numpy."""
  return lora.merge(params, config.lora, xp=np), config.replace(lora=None)
