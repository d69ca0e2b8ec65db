"""Decode speed: jaxformer's KV-cache `generate` and, for comparison, HF `generate` on the same
weights exported to a HuggingFace directory (`jaxformer bench --decode [--compare_hf]`)."""

import tempfile
import time

import jax
import numpy as np

from jaxformer import models
from jaxformer.infer.sample import generate
from jaxformer.models import param_shapes


def random_params(config, seed: int = 0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 0.02).astype(np.float32), param_shapes(config))


def _prompts(config, batch, prompt_length, seed=1):
  rng = np.random.default_rng(seed)
  return [rng.integers(2, config.vocab_size, prompt_length).tolist() for _ in range(batch)]


def jax_tokens_per_second(config, params, batch: int, prompt_length: int, new_tokens: int, repeats: int = 3) -> float:
  model = config.module()
  prompts = _prompts(config, batch, prompt_length)
  generate(model, params, prompts, new_tokens)  # compile
  start = time.perf_counter()
  for _ in range(repeats):
    generate(model, params, prompts, new_tokens)
  return repeats * batch * new_tokens / (time.perf_counter() - start)


def hf_tokens_per_second(
  hf_dir: str, config, batch: int, prompt_length: int, new_tokens: int, repeats: int = 3
) -> float:
  import torch
  from transformers import CodeGenForCausalLM

  model = CodeGenForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
  ids = torch.tensor([[0] + p for p in _prompts(config, batch, prompt_length)])
  kwargs = dict(
    max_new_tokens=new_tokens,
    min_new_tokens=new_tokens,
    do_sample=False,
    use_cache=True,
    attention_mask=torch.ones_like(ids),
    pad_token_id=1,
  )
  with torch.no_grad():
    model.generate(ids, **kwargs)  # warm up
    start = time.perf_counter()
    for _ in range(repeats):
      model.generate(ids, **kwargs)
  return repeats * batch * new_tokens / (time.perf_counter() - start)


def decode_bench(batch_sizes=(1, 8), prompt_length: int = 64, new_tokens: int = 128, compare_hf: bool = False) -> dict:
  """tokens/s (generated tokens, greedy, float32) per batch size for the gin-bound model with random weights."""
  config = models.bound()
  params = random_params(config)
  report = {
    "device_kind": jax.devices()[0].device_kind,
    "prompt_length": prompt_length,
    "new_tokens": new_tokens,
    "jaxformer": {},
    "hf": {},
  }
  for batch in batch_sizes:
    report["jaxformer"][batch] = jax_tokens_per_second(config, params, batch, prompt_length, new_tokens)
  if compare_hf:
    from jaxformer.export.to_hf import export_in_memory

    with tempfile.TemporaryDirectory() as tmp:
      hf_dir = export_in_memory(params, config, f"{tmp}/hf")
      for batch in batch_sizes:
        report["hf"][batch] = hf_tokens_per_second(hf_dir, config, batch, prompt_length, new_tokens)
  return report
