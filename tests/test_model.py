"""Behaviour of the CodeGen prefix-LM: masks, packing, remat, scan, attention kernels."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_util import init, jitted_apply, random_tokens, tiny

from jaxformer.models import Decoder as Transformer
from jaxformer.models.common.attention import attention_mask
from jaxformer.models.common.rotary import apply_rotary


def test_mask_prefix_tokens_see_later_prefix_tokens_only():
  segments = jnp.array([[1, 1, 1, 1, 1, 2, 2, 0]])
  prefix = jnp.array([[1, 1, 1, 0, 0, 1, 0, 0]])
  mask = np.asarray(attention_mask(segments, prefix))[0, 0]
  assert mask[0, 2]  # prefix token sees a later prefix token
  assert not mask[0, 3] and not mask[1, 4]  # but not a later non-prefix token
  assert mask[3, 0] and mask[3, 3] and not mask[3, 4]  # non-prefix: causal
  assert not mask[5, 4] and not mask[6, 2]  # never across segments
  assert mask[6, 5] and not mask[5, 6]  # second segment has its own one-token prefix
  assert mask.diagonal().all()  # every token sees itself, so no row is empty


def test_prefix_changes_reach_back_only_inside_the_prefix():
  config = tiny()
  model, params = init(config)
  tokens = random_tokens(config, 1, 10)
  prefix = np.array([[1] * 5 + [0] * 5])
  changed_in_prefix, changed_after = tokens.copy(), tokens.copy()
  changed_in_prefix[0, 4] = (tokens[0, 4] + 1) % config.vocab_size
  changed_after[0, 7] = (tokens[0, 7] + 1) % config.vocab_size
  apply = jitted_apply(model)
  run = lambda t, p: apply(params, t, prefix_mask=p)
  base = run(tokens, prefix)
  # A later prefix token changes the logits of earlier prefix tokens...
  assert np.abs(run(changed_in_prefix, prefix)[0, :4] - base[0, :4]).max() > 1e-4
  # ...but in a causal decoder it cannot.
  causal = np.zeros_like(prefix)
  assert np.allclose(run(changed_in_prefix, causal)[0, :4], run(tokens, causal)[0, :4], atol=1e-6)
  # A non-prefix token never changes anything before it.
  assert np.allclose(run(changed_after, prefix)[0, :7], base[0, :7], atol=1e-6)
  assert np.abs(run(changed_after, prefix)[0, 7:] - base[0, 7:]).max() > 1e-4


def test_packed_documents_equal_separate_runs():
  config = tiny()
  model, params = init(config)
  doc_a, doc_b = random_tokens(config, 1, 6, seed=2), random_tokens(config, 1, 5, seed=3)
  prefix_a, prefix_b = np.array([[1, 1, 0, 0, 0, 0]]), np.array([[1, 1, 1, 0, 0]])
  apply = lambda *a, **k: jitted_apply(model)(params, *a, **k)
  alone_a = apply(doc_a, prefix_mask=prefix_a)
  alone_b = apply(doc_b, prefix_mask=prefix_b)
  packed = np.concatenate([doc_a, doc_b, np.zeros((1, 3), np.int32)], axis=1)
  segments = np.array([[1] * 6 + [2] * 5 + [0] * 3])
  positions = np.array([list(range(6)) + list(range(5)) + [0] * 3])
  prefix = np.concatenate([prefix_a, prefix_b, np.zeros((1, 3), np.int32)], axis=1)
  together = apply(packed, positions=positions, segment_ids=segments, prefix_mask=prefix)
  np.testing.assert_allclose(together[0, :6], alone_a[0], atol=1e-5)
  np.testing.assert_allclose(together[0, 6:11], alone_b[0], atol=1e-5)


def _loss_and_grads(config, params, tokens):
  model = Transformer(config)

  def loss(p):
    logits = model.apply({"params": p}, tokens[:, :-1])
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1).mean()

  return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("policy", ["full", "save_dots", "save_qkv_attn", "save_attn_mlp"])
@pytest.mark.slow
def test_remat_policies_give_the_same_gradients(policy):
  config = tiny()
  _, params = init(config)
  tokens = random_tokens(config, 2, 12)
  loss0, grads0 = _loss_and_grads(config, params, tokens)
  loss1, grads1 = _loss_and_grads(tiny(remat_policy=policy), params, tokens)
  assert np.isclose(loss0, loss1, atol=1e-6)
  for g0, g1 in zip(jax.tree.leaves(grads0), jax.tree.leaves(grads1)):
    np.testing.assert_allclose(g0, g1, atol=1e-6)
  assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(grads1))


def test_remat_full_recomputes_in_the_backward_pass():
  config, full = tiny(), tiny(remat_policy="full")
  _, params = init(config)
  tokens = random_tokens(config, 2, 12)
  count = lambda cfg: jax.jit(lambda p: _loss_and_grads(cfg, p, tokens)).lower(params).as_text().count("dot_general")
  assert count(full) > count(config)


def test_unrolled_layers_equal_scanned_layers():
  config = tiny()
  model, params = init(config)
  unrolled_model, unrolled = init(tiny(scan_layers=False))
  # Copy the scanned (stacked) weights into the per-layer tree.
  for i in range(config.num_layers):
    unrolled[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], params["layers"])
  for name in ("embed", "ln_f", "lm_head"):
    unrolled[name] = params[name]
  tokens = random_tokens(config, 2, 9)
  np.testing.assert_allclose(
    jitted_apply(model)(params, tokens), jitted_apply(unrolled_model)(unrolled, tokens), atol=1e-5
  )


def test_jax_dot_product_attention_matches_xla_kernel():
  config = tiny()
  model, params = init(config)
  other, _ = init(tiny(attention="jax"))
  tokens = random_tokens(config, 2, 10)
  prefix = np.array([[1, 1, 1, 0, 0, 0, 0, 0, 0, 0]] * 2)
  np.testing.assert_allclose(
    jitted_apply(model)(params, tokens, prefix_mask=prefix),
    jitted_apply(other)(params, tokens, prefix_mask=prefix),
    atol=1e-5,
  )


def test_rotary_is_interleaved_and_only_on_rotary_dims():
  x = jnp.arange(2 * 3 * 1 * 6, dtype=jnp.float32).reshape(2, 3, 1, 6)
  positions = jnp.broadcast_to(jnp.arange(3), (2, 3))
  out = apply_rotary(x, positions, rotary_dim=4)
  np.testing.assert_array_equal(out[..., 4:], x[..., 4:])  # untouched beyond rotary_dim
  np.testing.assert_allclose(out[:, 0], x[:, 0], atol=1e-6)  # position 0 is the identity
  # Pair (x0, x1) at position p rotates by angle p * 1.0 (first frequency).
  p, a, b = 2, x[0, 2, 0, 0], x[0, 2, 0, 1]
  np.testing.assert_allclose(
    out[0, 2, 0, :2], [a * np.cos(p) - b * np.sin(p), b * np.cos(p) + a * np.sin(p)], rtol=1e-5
  )


def test_bfloat16_compute_keeps_float32_params():
  config = tiny(dtype="bfloat16")
  model, params = init(config)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  logits = jitted_apply(model)(params, random_tokens(config, 1, 5))
  assert logits.dtype == jnp.float32


def test_bad_names_are_rejected():
  with pytest.raises(ValueError, match="remat_policy"):
    init(tiny(remat_policy="sometimes"))
  with pytest.raises(ValueError, match="attention"):
    init(tiny(attention="magic"))
  with pytest.raises(ValueError, match="divisible"):
    tiny(d_model=30)


def _residual_variance(num_layers: int, scheme: str) -> float:
  """Variance of the residual stream after the last block at init, over that of the embeddings."""
  config = tiny(num_layers=num_layers, d_model=64, num_heads=4, rotary_dim=4, init_scheme=scheme, scan_layers=False)
  model = Transformer(config)
  tokens = random_tokens(config, 4, 32)
  variables = model.init(jax.random.key(0), tokens)
  _, state = model.apply(
    variables,
    tokens,
    capture_intermediates=lambda m, _: m.name == f"layers_{num_layers - 1}",
    mutable=["intermediates"],
  )
  ((out, _),) = state["intermediates"][f"layers_{num_layers - 1}"]["__call__"]  # the last block's output
  params = variables["params"]
  if scheme == "depth_scaled":  # the residual-branch outputs are the kernels scaled down
    expected = 0.02 / np.sqrt(2 * num_layers)
    layers = params[f"layers_{num_layers - 1}"]
    for kernel in (layers["mlp"]["fc_out"]["kernel"].value, layers["attention"]["out"]["kernel"].value):
      assert abs(float(jnp.std(kernel)) / expected - 1) < 0.1
    assert abs(float(jnp.std(layers["mlp"]["fc_in"]["kernel"].value)) / 0.02 - 1) < 0.1
  embed = jnp.take(params["embed"].value, tokens, axis=0)
  return float(jnp.var(out) / jnp.var(embed))


@pytest.mark.slow
def test_depth_scaled_init_keeps_the_residual_stream_bounded_as_depth_grows():
  normal = [_residual_variance(layers, "normal") for layers in (2, 4, 12)]
  scaled = [_residual_variance(layers, "depth_scaled") for layers in (2, 4, 12)]
  assert normal[2] > 4 * normal[0]  # plain normal(0.02): every branch adds, growing with depth
  assert scaled[2] < 2 * scaled[0] and scaled[2] < normal[2] / 4, (normal, scaled)


def test_codegen2_sizes_with_the_project_recipe_scale_residual_outputs_down_with_depth():
  from jaxformer import config as config_lib
  from jaxformer.models import ModelConfig
  from jaxformer.models.common.layers import weight_init

  stds = {}
  for name in ("codegen2_1b", "codegen2_7b", "codegen2_16b"):  # 16, 32 and 34 layers, with the project's recipe
    config_lib.parse_gin([f"models/{name}.gin", "recipes/jaxformer.gin"], finalize=False)
    config = ModelConfig()
    assert config.init_scheme == "depth_scaled"
    sample = lambda residual, config=config: weight_init(config, "residual" if residual else "matrix", 256)(
      jax.random.key(0), (256, 256)
    )
    stds[config.num_layers] = float(jnp.std(sample(True)))
    assert abs(float(jnp.std(sample(False))) / 0.02 - 1) < 0.03  # other weights keep initializer_range
  for num_layers, std in stds.items():
    assert abs(std / (0.02 / np.sqrt(2 * num_layers)) - 1) < 0.03, (num_layers, std)
  assert stds[16] > stds[32] > stds[34]


@pytest.mark.slow
def test_the_codegen1_trainer_init_is_truncated_normal_by_fan_in_depth_and_vocabulary():
  """salesforce/jaxformer's scheme: haiku TruncatedNormal (cut at 2 std, so the sample's std is 0.88 of
  the parameter) with 1/sqrt(fan_in), (2/L)/sqrt(d_model) on residual outputs, 1/sqrt(vocab) embeddings."""
  config = tiny(vocab_size=512, num_layers=4, d_model=64, num_heads=4, rotary_dim=4, init_scheme="codegen1")
  config = config.replace(scan_layers=False)
  params = nn.unbox(config.module().init(jax.random.key(0), random_tokens(config, 1, 8))["params"])
  cut = 0.8796  # the std of a unit normal truncated to [-2, 2]
  layer = params["layers_0"]
  expected = {
    "embed": (params["embed"], 512**-0.5),
    "qkv": (layer["attention"]["qkv"]["kernel"], 64**-0.5),
    "fc_in": (layer["mlp"]["fc_in"]["kernel"], 64**-0.5),
    "fc_out": (layer["mlp"]["fc_out"]["kernel"], 2 / 4 * 64**-0.5),
    "attention out": (layer["attention"]["out"]["kernel"], 2 / 4 * 64**-0.5),
    "lm_head": (params["lm_head"]["kernel"], 64**-0.5),
  }
  for name, (x, std) in expected.items():
    x = np.asarray(x)
    assert abs(x.std() / (cut * std) - 1) < 0.1, (name, x.std(), cut * std)
    assert np.abs(x).max() <= 2 * std * (1 + 1e-6), name  # truncated at 2 std
  assert not np.any(np.asarray(layer["mlp"]["fc_in"]["bias"]))
