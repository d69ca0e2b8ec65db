"""The chunked loss (train.StepConfig.loss_chunk_length): the same sums and gradients as full logits, the
same parameter tree, and no [batch, length, vocab] float32 logits in the compiled step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_util import init, jitted_apply, random_tokens, tiny

from jaxformer.models import head_logits, param_shapes
from jaxformer.train.step import _sums, make_eval_step


def _batch(config, batch, length, seed=2):
  targets = random_tokens(config, batch, length, seed=seed)
  weights = np.ones_like(targets)
  weights[:, -4:] = 0  # tokens without loss, unevenly spread
  weights[1, :7] = 0
  return {
    "decoder_target_tokens": targets,
    "decoder_input_tokens": random_tokens(config, batch, length, seed=seed + 1),
    "decoder_loss_weights": weights,
    "decoder_segment_ids": np.ones_like(targets),
    "decoder_positions": np.broadcast_to(np.arange(length), targets.shape).copy(),
    "decoder_causal_attention": (np.arange(length) < 5).astype(np.int32)[None].repeat(batch, 0),  # a prefix
  }


def _loss_and_grads(model, params, batch, chunk):
  fn = jax.value_and_grad(lambda p: _sums(model, p, batch, 1e-3, chunk), has_aux=True)
  (_, sums), grads = jax.jit(fn)(params)
  return jax.device_get(sums), jax.device_get(grads)


def test_hidden_state_keeps_the_parameter_tree_and_gives_the_logits():
  config = tiny()
  model, params = init(config)
  tokens = random_tokens(config, 2, 12)
  # Initialising for the hidden state still creates lm_head/kernel and lm_head/bias.
  hidden_tree = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, return_hidden=True)["params"])
  assert jax.tree.structure(hidden_tree) == jax.tree.structure(param_shapes(config, boxed=True))
  hidden = jax.jit(lambda p, t: model.apply({"params": p}, t, return_hidden=True))(params, tokens)
  assert hidden.shape == (2, 12, config.d_model)
  logits = jax.jit(lambda p, h: head_logits(config, p["lm_head"], h))(params, hidden)
  np.testing.assert_allclose(logits, jitted_apply(model)(params, tokens), rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_chunked_loss_sums_and_gradients_equal_full_logits():
  config = tiny(num_layers=1)  # one layer compiles in half the time; every layer's gradient flows the same way
  model, params = init(config)
  batch = _batch(config, 3, 24)
  # Half the targets are the model's own argmax, so "correct" counts something.
  predicted = jitted_apply(model)(params, batch["decoder_input_tokens"], prefix_mask=batch["decoder_causal_attention"])
  batch["decoder_target_tokens"][:, ::2] = predicted.argmax(-1)[:, ::2]
  full_sums, full_grads = _loss_and_grads(model, params, batch, 0)
  full_eval = jax.jit(make_eval_step(model))(params, batch)
  assert full_sums["weight"] == np.sum(batch["decoder_loss_weights"])
  assert full_sums["z_loss"] > 0 and full_sums["correct"] > 0
  chunk = 10  # a scan over two chunks of 10, then a remainder of 4 (length 24)
  sums, grads = _loss_and_grads(model, params, batch, chunk)
  assert full_sums.keys() == sums.keys()
  for k in sums:  # float32: the chunks add the same terms in another order
    np.testing.assert_allclose(sums[k], full_sums[k], rtol=1e-5, err_msg=f"{k}, chunk {chunk}")
  assert jax.tree.structure(grads) == jax.tree.structure(full_grads)
  for (path, g_full), g in zip(jax.tree_util.tree_flatten_with_path(full_grads)[0], jax.tree.leaves(grads)):
    # Every parameter, lm_head included: within 1e-5 of the leaf's largest gradient.
    message = f"{jax.tree_util.keystr(path)}, chunk {chunk}"
    np.testing.assert_allclose(g, g_full, rtol=1e-5, atol=1e-5 * np.abs(g_full).max(), err_msg=message)
  chunked_eval = jax.jit(make_eval_step(model, chunk))(params, batch)
  for k in full_eval:
    np.testing.assert_allclose(chunked_eval[k], full_eval[k], rtol=1e-5, err_msg=k)


def test_chunked_loss_never_holds_the_full_logits():
  # A vocabulary large against everything else: the [2, 256, 16384] float32 logits are 32 MiB, the
  # parameters 4 MiB and the attention scores 0.5 MiB per layer.
  config = tiny(vocab_size=16384, num_layers=1, num_heads=2)
  model = init(config)[0]
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), param_shapes(config))
  batch = _batch(config, 2, 256)
  logits_bytes = 2 * 256 * config.vocab_size * 4

  def compiled(chunk):
    fn = jax.value_and_grad(lambda p: _sums(model, p, batch, 1e-3, chunk), has_aux=True)
    compiled = jax.jit(fn).lower(params).compile()
    return compiled.memory_analysis().temp_size_in_bytes, "f32[2,256,16384]" in compiled.as_text()

  (chunked, chunked_has_logits), (full, full_has_logits) = compiled(16), compiled(0)
  print(f"temp: chunked {chunked / 2**20:.1f} MiB, full {full / 2**20:.1f} MiB, logits {logits_bytes / 2**20} MiB")
  # Measured on CPU: 9.6 MiB chunked (two chunks' logits of 2 MiB, the gradients), 67.5 MiB full.
  assert full > logits_bytes and full_has_logits  # what the test catches: full logits, forward or backward
  assert chunked < logits_bytes / 2 and not chunked_has_logits


def test_unrolled_chunks_count_every_chunk_in_xla_flops():
  # plan counts XLA FLOPs with scan_layers=False, where the chunk loop is unrolled too: every chunk
  # counts, plus the backward's recompute of each chunk's logits (2 x batch x length x embed x vocab).
  config = tiny(vocab_size=4096, num_layers=1, scan_layers=False)
  model = init(config)[0]
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), param_shapes(config))
  batch = _batch(config, 2, 64)

  def flops(chunk):
    fn = jax.value_and_grad(lambda p: _sums(model, p, batch, 1e-3, chunk), has_aux=True)
    cost = jax.jit(fn).lower(params).cost_analysis()
    return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])

  recompute = 2 * 2 * 64 * config.d_model * config.vocab_size
  full, chunked = flops(0), flops(16)  # measured: 1.228e8 and 1.590e8
  assert full + recompute <= chunked < full + 1.2 * recompute
