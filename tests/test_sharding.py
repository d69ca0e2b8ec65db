"""Sharding: mesh shapes from gin, parameters born sharded, sharded forward == single device."""

import gin
import jax
import numpy as np
import pytest
from model_util import init, jitted_apply, random_tokens, tiny

from jaxformer import sharding
from jaxformer.train import setup as setup_lib
from jaxformer.train.step import StepConfig


def test_mesh_shape_fills_minus_one_and_checks_product():
  assert sharding.resolve_mesh_shape((2, -1, 1), 8) == (2, 4, 1)
  with pytest.raises(ValueError, match="mesh_shape"):
    sharding.resolve_mesh_shape((3, -1, 1), 8)
  with pytest.raises(ValueError, match="covers 4"):
    sharding.resolve_mesh_shape((2, 2, 1), 8)


def test_mesh_shape_and_rules_come_from_gin():
  gin.parse_config("""
      sharding.make_mesh.mesh_shape = (2, -1, 2)
      sharding.logical_axis_rules.rules = [("batch", "data"), ("embed", None), ("mlp", ["fsdp", "tensor"])]
  """)
  mesh = sharding.make_mesh()
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  rules = sharding.logical_axis_rules()
  assert sharding.logical_to_spec(("batch", "embed", "mlp"), rules) == jax.P("data", None, ("fsdp", "tensor"))


def test_rules_naming_an_unknown_mesh_axis_fail_clearly():
  with pytest.raises(ValueError, match="mesh axis 'model'"):
    sharding.logical_axis_rules(rules=[("heads", "model")])


def test_parameters_are_created_sharded_on_a_2x2x2_mesh():
  config = tiny(d_model=64, mlp_ratio=4)
  mesh = sharding.make_mesh((2, 2, 2))
  setup = setup_lib.build(config, StepConfig(), total_steps=10_000, mesh=mesh)
  params = setup.init_state(jax.random.key(0)).params  # created sharded, never whole on one device
  fc_in = params["layers"]["mlp"]["fc_in"]["kernel"]  # [layers, embed, mlp] -> (None, fsdp, tensor)
  assert fc_in.sharding.spec == jax.P(None, "fsdp", "tensor")
  shard_shapes = {s.data.shape for s in fc_in.addressable_shards}
  assert shard_shapes == {(config.num_layers, 32, 128)}  # each device holds a quarter
  embed = params["embed"]  # vocab 97 is odd: its tensor split is dropped, embed keeps fsdp
  assert embed.sharding.spec == jax.P(None, "fsdp")
  assert embed.addressable_shards[0].data.size * 2 == embed.size


def test_sharded_forward_equals_single_device():
  config = tiny(d_model=64)
  model, params = init(config)
  tokens = random_tokens(config, 4, 16)
  prefix = np.zeros_like(tokens)
  prefix[:, :5] = 1
  single = jitted_apply(model)(params, tokens, prefix_mask=prefix)

  mesh = sharding.make_mesh((2, 2, 2))
  rules = sharding.logical_axis_rules()
  _, shardings = sharding.sharded_param_shapes(config, mesh, rules)
  sharded_params = jax.device_put(params, shardings)
  batch_sharding = sharding.logical_to_sharding(("batch", "length"), mesh, rules)
  with sharding.activation_sharding(mesh, rules):
    sharded = jitted_apply(model)(
      sharded_params, jax.device_put(tokens, batch_sharding), prefix_mask=jax.device_put(prefix, batch_sharding)
    )
  np.testing.assert_allclose(sharded, single, atol=2e-5)


EMBEDDING_PROBE = r"""
import re, sys
sys.path.insert(0, "tests")
import jax, numpy as np
from model_util import init, tiny
from jaxformer import sharding
config = tiny(d_model=64, vocab_size=384)
model, params = init(config)
mesh = sharding.make_mesh((2, 2, 2))
rules = sharding.logical_axis_rules()
_, shardings = sharding.sharded_param_shapes(config, mesh, rules)
params = jax.device_put(params, shardings)
tokens = jax.device_put(np.arange(64).reshape(4, 16), sharding.logical_to_sharding(("batch", "length"), mesh, rules))
with sharding.activation_sharding(mesh, rules):
  hlo = jax.jit(jax.grad(lambda p, t: model.apply({"params": p}, t).mean())).lower(params, tokens).compile().as_text()
print("TABLE SHAPES", sorted(set(re.findall(r"f32\[(384|192),64\]", hlo))))
"""


@pytest.mark.slow
def test_sharded_embedding_lookup_never_gathers_the_whole_table(tmp_path):
  """On a (data 2, fsdp 2, tensor 2) mesh the [vocab, embed] table is split both ways. The lookup
  gathers it over fsdp only (each device sees vocab/2 rows, as every FSDP weight is gathered), so
  XLA never falls back to replicating it ("Involuntary full rematerialization")."""
  import os
  import subprocess
  import sys

  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0")  # XLA's SPMD warnings are log level 1
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # a cached executable would skip the partitioner and its warnings
  result = subprocess.run(
    [sys.executable, "-c", EMBEDDING_PROBE],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    cwd=os.path.dirname(os.path.dirname(__file__)),
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Involuntary full rematerialization" not in result.stderr, result.stderr[-3000:]
  shapes = result.stdout.split("TABLE SHAPES")[1]
  assert "192" in shapes and "384" not in shapes, shapes  # half the vocabulary per device, never all of it
