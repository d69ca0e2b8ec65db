"""Decoding: the KV cache equals the full forward pass; greedy is the argmax path; sampling is
seeded; prefix-LM prompts are bidirectional."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_util import init, jitted_apply, random_tokens, tiny

from jaxformer.infer.sample import generate, generate_full_forward, sample_logits


def _cache(model, batch, length):
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((batch, length), jnp.int32), decode=True))[
    "cache"
  ]
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


@pytest.mark.parametrize("prefix_length", [0, 4])
def test_kv_cache_logits_equal_the_full_forward_pass(prefix_length):
  config = tiny()
  model, params = init(config)
  tokens = random_tokens(config, 2, 12, seed=4)
  prefix = np.zeros_like(tokens)
  prefix[:, :prefix_length] = 1
  full = jitted_apply(model)(params, tokens, prefix_mask=prefix)
  apply = jax.jit(
    lambda p, c, t, pos, pre: model.apply(
      {"params": p, "cache": c}, t, positions=pos, prefix_mask=pre, decode=True, mutable=["cache"]
    )
  )
  cache = _cache(model, 2, 16)
  split = 6  # prefill 6 tokens (the prefix inside them), then one token at a time
  positions = np.broadcast_to(np.arange(12), (2, 12))
  logits, variables = apply(params, cache, tokens[:, :split], positions[:, :split], prefix[:, :split])
  pieces = [np.asarray(logits)]
  cache = variables["cache"]
  for i in range(split, 12):
    logits, variables = apply(params, cache, tokens[:, i : i + 1], positions[:, i : i + 1], prefix[:, i : i + 1])
    cache = variables["cache"]
    pieces.append(np.asarray(logits))
  np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-5)


def test_greedy_cache_decoding_equals_the_argmax_path():
  config = tiny()
  model, params = init(config, seed=3)
  prompts = [random_tokens(config, 1, 5, seed=1)[0].tolist(), random_tokens(config, 1, 9, seed=2)[0].tolist()]
  cached = generate(model, params, prompts, 15)
  reference = generate_full_forward(model, params, prompts, 15)
  assert cached == reference
  # And the argmax path for the first prompt: the causal model's logits at t read tokens up to t alone, so
  # one forward pass over BOS, the prompt and the completion gives each step's argmax (one compile, not 15).
  sequence = np.array([[0, *prompts[0], *cached[0]]], np.int32)
  logits = jitted_apply(model)(params, sequence)[0, len(prompts[0]) : -1]
  assert np.argmax(logits, axis=-1).tolist() == cached[0]


@pytest.mark.slow
def test_stop_ids_cut_each_row_and_prefix_lm_prompts_decode_like_the_reference():
  config = tiny()
  model, params = init(config, seed=3)
  prompt = random_tokens(config, 1, 6, seed=1)[0].tolist()
  free = generate(model, params, [prompt], 12)[0]
  stopped = generate(model, params, [prompt], 12, stop_ids=(free[3],))[0]
  assert stopped == free[: free.index(free[3])]
  assert generate(model, params, [prompt], 12, prefix_lm=True) == generate_full_forward(
    model, params, [prompt], 12, prefix_lm=True
  )


def test_sampling_is_reproducible_with_a_seed_and_respects_top_k():
  config = tiny()
  model, params = init(config, seed=3)
  prompt = random_tokens(config, 1, 6, seed=1)[0].tolist()
  a = generate(model, params, [prompt] * 3, 10, temperature=1.0, seed=7)
  assert a == generate(model, params, [prompt] * 3, 10, temperature=1.0, seed=7)
  assert a != generate(model, params, [prompt] * 3, 10, temperature=1.0, seed=8)
  logits = jnp.array([[0.0, 5.0, 4.0, -1.0]] * 200)
  draws = np.asarray(sample_logits(logits, jax.random.key(0), temperature=5.0, top_k=2))
  assert set(draws.tolist()) == {1, 2}
  draws = np.asarray(sample_logits(logits, jax.random.key(0), temperature=1.0, top_p=0.5))
  assert set(draws.tolist()) == {1}
