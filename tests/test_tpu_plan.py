"""`jaxformer plan --topology`: the real train step compiled ahead of time for TPU (libtpu), and
multi-slice meshes (DCN) on TPU topologies and on two processes."""

import json
import subprocess

import jax
import pytest
import train_util
from test_multihost import _logs, _start_pair

from jaxformer import config as config_lib
from jaxformer import plan, sharding

SMALL = ["TASK_FEATURE_LENGTHS = {'targets': 256}", "BATCH_SIZE = 8"]


def test_topology_names():
  assert plan.parse_topology("v4-256")["name"] == "v4:4x4x8"
  assert plan.parse_topology("v4-32")["chips"] == 16
  assert plan.parse_topology("v5litepod-16")["name"] == "v5e:4x4"
  assert plan.parse_topology("v6e-8")["name"] == "v6e:2x4"
  assert plan.parse_topology("v5p-128")["hbm_bytes"] == 95 * 2**30
  assert plan.parse_topology("v4:2x2x2")["chips"] == 8
  with pytest.raises(ValueError, match="accelerator type such as v4-32"):
    plan.parse_topology("tpu-32")
  with pytest.raises(ValueError, match="not a slice size"):
    plan.parse_topology("v4-24")


@pytest.mark.slow
def test_tiny_train_step_compiles_for_v4_and_reports_memory_flops_and_step_time():
  # 4 scanned layers and 2 microbatches: both loops whose body XLA's cost analysis counts once
  config_lib.parse_gin(
    ["runs/local_tiny.gin"], SMALL + ["ModelConfig.num_layers = 4", "train.StepConfig.microbatches = 2"]
  )
  report = plan.tpu_plan(topology="v4-8")
  assert report["libtpu_topology"] == "v4:2x2x1" and report["devices"] == 4
  assert report["device_kind"] == "TPU v4" and report["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
  m = report["memory_per_device"]
  assert m["arguments"] > 0 and m["generated_code"] > 0
  assert m["total"] == m["arguments"] + m["outputs"] - m["aliased"] + m["temporaries"] + m["generated_code"]
  assert report["hbm_per_device"] == 32 * 2**30 and report["fits"]
  # XLA's count (unrolled, no remat here) is the model's matmuls plus attention, softmax and the rest
  assert 0.9 < report["xla_flops_per_step"] / report["model_flops_per_step_6n_attention"] < 1.6
  assert report["predicted_step_seconds"] > 0
  # the compiled program's step time: a positive, finite figure with its source named
  seconds = report["compiler_step_seconds"]
  assert 0 < seconds < 1 and report["compiler_step_source"] in (
    "optimal_seconds",
    "roofline (compute-bound)",
    "roofline (memory-bound)",
  )
  assert 0 < report["compiler_roofline_seconds"] < 1 and 0 < report["compiler_mfu"] < 1
  assert report["compiler_mfu"] == pytest.approx(report["model_flops_per_step_6n_attention"] / (4 * 275e12 * seconds))
  # every layer of every microbatch counted: per-device FLOPs x devices match the unrolled one-microbatch
  # global count (the scanned program alone would show one layer of one microbatch, under 1/4 of it)
  assert 0.95 < report["compiler_flops_per_device"] * 4 / report["xla_flops_per_step"] < 1.1
  assert report["compiler_loops_left"] == 0  # no compiler loop (windowed einsum) hides FLOPs either


def test_a_batch_too_big_for_hbm_does_not_fit():
  config_lib.parse_gin(["runs/local_tiny.gin"], ["TASK_FEATURE_LENGTHS = {'targets': 2048}", "BATCH_SIZE = 2048"])
  report = plan.tpu_plan(topology="v5litepod-4")
  assert report["device_kind"] == "TPU v5 lite" and report["hbm_per_device"] == 16 * 2**30
  m = report["memory_per_device"]
  assert not report["fits"] and m["total"] > 16 * 2**30
  assert "RESOURCE_EXHAUSTED" in m["compiler"] and m["temporaries"] > 100 * 2**30


@pytest.mark.slow
def test_two_slices_put_the_data_axis_across_slices():
  config_lib.parse_gin(["runs/local_tiny.gin"], SMALL + ["sharding.make_mesh.dcn_mesh_shape = (2, 1, 1)"])
  devices, _ = plan.topology_devices("v4-8", num_slices=2)
  mesh = sharding.make_mesh(devices=devices)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  assert [{d.slice_index for d in row.ravel()} for row in mesh.devices] == [{0}, {1}]
  report = plan.tpu_plan(topology="v4-8", num_slices=2)
  assert report["devices"] == 8 and report["fits"]
  with pytest.raises(ValueError, match="asks for 4 slices but the devices come from 2 slices"):
    sharding.make_mesh(devices=devices, dcn_mesh_shape=(4, 1, 1))


@pytest.mark.slow
def test_plan_cli_reads_the_topology_from_the_run_gin():
  result = subprocess.run(
    [
      train_util.JAXFORMER,
      "plan",
      "--gin_file=runs/local_tiny.gin",
      "--gin.plan.tpu_plan.topology='v4-8'",
      "--gin.TASK_FEATURE_LENGTHS={'targets': 256}",
      "--json",
    ],
    capture_output=True,
    text=True,
    env=train_util.env(),
    check=True,
    timeout=300,
  )
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["tpu"]["topology"] == "v4-8" and report["tpu"]["fits"] is True
  assert "fits" in result.stdout and "predicted step time at 40% MFU (6N + causal attn)" in result.stdout
  assert report["tpu"]["compiler_step_seconds"] > 0 and "compiler step time" in result.stdout


@pytest.mark.slow
def test_two_processes_as_two_slices_train(local_corpus, tmp_path):
  flags = train_util.small_run_flags(local_corpus, steps=2, checkpoint_period=2) + [
    "--gin.sharding.make_mesh.mesh_shape=(1, -1, 1)",
    "--gin.sharding.make_mesh.dcn_mesh_shape=(2, 1, 1)",
  ]
  run = str(tmp_path / "dcn")
  for p in _start_pair(run, flags, "a"):
    assert p.wait(timeout=300) == 0, _logs(run, "a")
  assert "mesh {'data': 2, 'fsdp': 4, 'tensor': 1} over 8 devices of 2 process(es)" in _logs(run, "a")[0]
  assert sorted(train_util.train_losses(run)) == [1, 2]
  assert jax.device_count() == 8  # this process is untouched
