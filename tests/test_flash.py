"""The Pallas flash kernel (interpret mode on CPU) against the dense-mask XLA attention."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import sharding
from jaxformer.models.common.attention import attention_mask, xla_attention
from jaxformer.models.common.flash import block_bounds, flash_attention
from tests.model_util import init, random_tokens, tiny

# Float32 throughout: both paths accumulate in float32, so they agree to rounding.
TOLERANCE = 2e-5


def _packed_rows(length: int):
  """Row 0: two documents with their own prefixes, then padding (segment 0); row 1: causal, one
  document; row 2: prefix-LM, one document whose prefix ends mid-block; row 3 (hostile): an id
  that comes back after another document, an id above the length, prefix flags mid-document."""
  segment_ids = np.zeros((4, length), np.int32)
  prefix = np.zeros((4, length), np.int32)
  a, b = length * 2 // 5, length * 9 // 10
  segment_ids[0, :a], segment_ids[0, a:b] = 1, 2
  prefix[0, :5], prefix[0, a : a + 9] = 1, 1
  segment_ids[1] = 1
  segment_ids[2], prefix[2, : length // 3] = 1, 1
  segment_ids[3] = 7
  segment_ids[3, 10:20], segment_ids[3, 25:30] = 3, 10**6
  prefix[3, 12:16], prefix[3, 22:27] = 1, 1
  return jnp.asarray(segment_ids), jnp.asarray(prefix)


def _qkv(length, heads=2, head_dim=16, seed=0):
  rng = np.random.default_rng(seed)
  return [jnp.asarray(rng.normal(size=(4, length, heads, head_dim)), jnp.float32) for _ in range(3)]


@pytest.mark.parametrize("length, block_q, block_k", [(50, 16, 16), (37, 8, 16)])
@pytest.mark.slow
def test_flash_equals_xla_attention_and_its_gradients(length, block_q, block_k):
  # Lengths that are not a multiple of the block are padded inside; packing, prefixes, padding
  # and hostile segment ids all in one batch.
  segment_ids, prefix = _packed_rows(length)
  q, k, v = _qkv(length)
  weights = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), jnp.float32)

  def loss(attend):
    return lambda q, k, v: jnp.sum(attend(q, k, v) * weights)

  dense = lambda q, k, v: xla_attention(q, k, v, attention_mask(segment_ids, prefix))
  flash = lambda q, k, v: flash_attention(q, k, v, segment_ids, prefix, block_q=block_q, block_k=block_k)
  np.testing.assert_allclose(flash(q, k, v), dense(q, k, v), atol=TOLERANCE)
  want = jax.grad(loss(dense), argnums=(0, 1, 2))(q, k, v)
  got = jax.grad(loss(flash), argnums=(0, 1, 2))(q, k, v)
  for name, g, w in zip("qkv", got, want, strict=True):
    np.testing.assert_allclose(g, w, atol=TOLERANCE, err_msg=f"d{name}")


def test_flash_visits_only_the_tiles_the_mask_can_reach():
  length, block = 256, 32
  n = length // block

  def tiles(segment_ids, prefix):
    (k_lo, k_hi), (q_lo, q_hi) = block_bounds(jnp.asarray(segment_ids), jnp.asarray(prefix), block, block)
    return int(jnp.sum(k_hi - k_lo)), int(jnp.sum(q_hi - q_lo))

  one = np.ones((1, length), np.int32)
  causal = n * (n + 1) // 2
  assert tiles(one, 0 * one) == (causal, causal)  # 36 of 64: the diagonal and below
  prefix = np.zeros((1, length), np.int32)
  prefix[0, : 3 * block] = 1  # a three-block prefix adds its square's upper triangle
  assert tiles(one, prefix) == (causal + 3, causal + 3)
  packed = np.repeat(np.arange(1, 5), length // 4)[None].astype(np.int32)  # four documents of two blocks
  assert tiles(packed, 0 * packed) == (4 * 3, 4 * 3)


@pytest.mark.slow
def test_flash_model_equals_xla_model_logits_and_gradients():
  # The whole tiny model, packed documents with prefixes and padding, same parameters.
  config = tiny()
  length = 40
  model, params = init(config)
  tokens = jnp.asarray(random_tokens(config, 4, length))
  segment_ids, prefix = _packed_rows(length)
  positions = jnp.asarray(np.tile(np.arange(length), (4, 1)), jnp.int32)

  def loss(model):
    def f(params):
      logits = model.apply({"params": params}, tokens, positions, segment_ids, prefix)
      return jnp.sum(jnp.where(segment_ids[..., None] > 0, logits, 0.0) ** 2) / length, logits

    return jax.jit(jax.value_and_grad(f, has_aux=True))

  (_, want_logits), want = loss(model)(params)
  flash_model = type(model)(dataclasses.replace(config, attention="flash"))
  (_, got_logits), got = loss(flash_model)(params)
  np.testing.assert_allclose(got_logits, want_logits, atol=2e-3)
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(g, w, atol=2e-3, err_msg=jax.tree_util.keystr(path))


def test_flash_under_a_mesh_runs_per_shard():
  # On a (data, fsdp, tensor) = (2, 2, 2) mesh the kernel runs in shard_map over batch and heads;
  # the result is the unsharded one.
  config = tiny(attention="flash")
  model, params = init(config)
  tokens = jnp.asarray(random_tokens(config, 4, 32))
  segment_ids = jnp.asarray(np.repeat([[1] * 20 + [2] * 12], 4, axis=0), jnp.int32)
  prefix = jnp.asarray(np.repeat([[1] * 6 + [0] * 26], 4, axis=0), jnp.int32)
  apply = lambda p, t: model.apply({"params": p}, t, segment_ids=segment_ids, prefix_mask=prefix)
  want = jax.jit(apply)(params, tokens)
  mesh = sharding.make_mesh((2, 2, 2), devices=jax.devices()[:8], dcn_mesh_shape=(1, 1, 1))
  rules = sharding.logical_axis_rules()
  with sharding.activation_sharding(mesh, rules):
    lowered = jax.jit(apply).lower(params, tokens)
    assert "shard_map" in lowered.as_text() or "sdy.manual_computation" in lowered.as_text()
    got = lowered.compile()(params, tokens)
  np.testing.assert_allclose(got, want, atol=2e-4)
  # Splits shard_map cannot make stop with the binding to change, never a silently wrong result.
  four_ways = sharding.make_mesh((1, 1, 8), devices=jax.devices()[:8], dcn_mesh_shape=(1, 1, 1))
  with sharding.activation_sharding(four_ways, rules), pytest.raises(ValueError, match="heads of 4 does not split"):
    jax.jit(apply).lower(params, tokens)
  head_dim_split = [(name, {"heads": None, "kv": "tensor"}.get(name, axes)) for name, axes in rules]
  with sharding.activation_sharding(mesh, head_dim_split), pytest.raises(ValueError, match="needs 'kv' unsharded"):
    jax.jit(lambda p, t: apply(p, t)).lower(params, tokens)  # a new function: jit's trace cache ignores flax's rules


def test_flash_compiles_for_tpu_and_needs_no_score_matrix():
  # Mosaic (libtpu) compiles forward and backward ahead of time for a v4 chip; at length 2048 the
  # dense path's temporaries hold [batch, heads, 2048, 2048] float32 scores, the kernel's do not.
  from jaxformer.plan import topology_devices

  device = topology_devices("v4-8")[0][0]
  batch, length, heads, head_dim = 2, 2048, 4, 128
  mesh = jax.sharding.Mesh(np.array([device]), ("data",))
  shape = jax.ShapeDtypeStruct((batch, length, heads, head_dim), jnp.bfloat16)
  ids = jax.ShapeDtypeStruct((batch, length), jnp.int32)

  def temporaries(attend):
    loss = lambda q, k, v, s, p: jnp.sum(attend(q, k, v, s, p).astype(jnp.float32))
    step = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    with jax.set_mesh(mesh):
      compiled = step.lower(shape, shape, shape, ids, ids).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  flash = temporaries(lambda q, k, v, s, p: flash_attention(q, k, v, s, p, backend="tpu"))
  dense = temporaries(lambda q, k, v, s, p: xla_attention(q, k, v, attention_mask(s, p)))
  scores = batch * heads * length * length * 4
  assert dense > scores > 8 * flash, (dense, flash)


@pytest.mark.parametrize("length,head_dim,dtype", [(2048, 128, jnp.bfloat16), (300, 64, jnp.float32)])
def test_flash_lowers_for_nvidia_gpus_through_triton(length, head_dim, dtype):
  # Pallas turns the kernel into Triton IR while lowering, on this CPU host: an operation Triton
  # cannot express fails here. Compiling the IR to PTX, and running it, needs a GPU.
  q = jax.ShapeDtypeStruct((2, length, 4, head_dim), dtype)
  ids = jax.ShapeDtypeStruct((2, length), jnp.int32)

  def loss(q, k, v, s, p):
    return flash_attention(q, k, v, s, p, backend="triton").astype(jnp.float32).sum()

  lowered = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(q, q, q, ids, ids).lower(lowering_platforms=("cuda",))
  text = lowered.as_text()
  assert text.count("__gpu$xla.gpu.triton") == 3  # forward, dq, dk/dv
  assert "num_warps = 4" in text and "stablehlo.dot_general" not in text  # attention runs in the kernels only


@pytest.mark.parametrize("kv_heads, window", [(2, 0), (1, 0), (2, 9), (4, 13)])
@pytest.mark.slow
def test_every_kernel_handles_grouped_and_multi_query_attention_and_windows(kv_heads, window):
  """xla, jax's dispatcher and flash on packed prefix-LM rows with 4 query heads sharing kv_heads heads
  (and a sliding window), against HF's reference: K and V repeated per query head, dense mask."""
  length = 40
  segment_ids, prefix = _packed_rows(length)
  rng = np.random.default_rng(3)
  q = jnp.asarray(rng.normal(size=(4, length, 4, 16)), jnp.float32)
  k, v = (jnp.asarray(rng.normal(size=(4, length, kv_heads, 16)), jnp.float32) for _ in range(2))
  mask = attention_mask(segment_ids, prefix, window)
  repeat = lambda x: jnp.repeat(x, 4 // kv_heads, axis=2)  # what transformers' repeat_kv does
  reference = lambda q, k, v: xla_attention(q, repeat(k), repeat(v), mask)
  kernels = {
    "xla": lambda q, k, v: xla_attention(q, k, v, mask),
    "jax": lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask),
    "flash": lambda q, k, v: flash_attention(q, k, v, segment_ids, prefix, block_q=16, block_k=16, window=window),
  }
  weights = jnp.asarray(rng.normal(size=q.shape), jnp.float32)
  loss = lambda attend: lambda q, k, v: jnp.sum(attend(q, k, v) * weights)
  want = jax.grad(loss(reference), argnums=(0, 1, 2))(q, k, v)
  for name, attend in kernels.items():
    np.testing.assert_allclose(attend(q, k, v), reference(q, k, v), atol=TOLERANCE, err_msg=name)
    got = jax.grad(loss(attend), argnums=(0, 1, 2))(q, k, v)
    for part, g, w in zip("qkv", got, want, strict=True):
      np.testing.assert_allclose(g, w, atol=TOLERANCE, err_msg=f"{name} d{part}")


def test_a_window_narrows_the_tiles_flash_visits():
  length, block = 256, 32
  one = np.ones((1, length), np.int32)
  (k_lo, k_hi), _ = block_bounds(jnp.asarray(one), jnp.asarray(0 * one), block, block, window=block)
  assert int(jnp.sum(k_hi - k_lo)) == 2 * (length // block) - 1  # the diagonal and one block back


def test_flash_under_a_mesh_with_fewer_kv_heads_than_the_tensor_axis():
  # Multi-query attention (one kv head) with query heads split 2 ways: each device keeps the kv head.
  from jaxformer.models import LlamaConfig

  config = LlamaConfig(
    vocab_size=97, num_layers=2, d_model=32, num_heads=4, num_kv_heads=1, mlp_dim=48, dtype="float32"
  )
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.1, jnp.float32), config_params(config))
  tokens = jnp.asarray(rng.integers(0, 97, (4, 32)), jnp.int32)
  segment_ids = jnp.asarray(np.repeat([[1] * 20 + [2] * 12], 4, axis=0), jnp.int32)
  prefix = jnp.asarray(np.repeat([[1] * 6 + [0] * 26], 4, axis=0), jnp.int32)
  run = lambda c: jax.jit(lambda p, t: c.module().apply({"params": p}, t, segment_ids=segment_ids, prefix_mask=prefix))
  want = run(config)(params, tokens)
  mesh = sharding.make_mesh((2, 2, 2), devices=jax.devices()[:8], dcn_mesh_shape=(1, 1, 1))
  with sharding.activation_sharding(mesh, sharding.logical_axis_rules()):
    got = run(config.replace(attention="flash"))(params, tokens)
  np.testing.assert_allclose(got, want, atol=2e-4)


def config_params(config):
  from jaxformer.models import param_shapes

  return param_shapes(config)
