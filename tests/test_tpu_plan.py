"""`jaxformer plan --topology`: the real train step compiled ahead of time for TPU (libtpu), and
multi-slice meshes (DCN) on TPU topologies and on two processes."""

import json

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
  # FSDP over 4 devices: every layer's weights are all-gathered (bf16, forward and backward: at least
  # twice the bf16 parameters, times 3/4 of each gathered), and the gradients reduce-scattered
  params = report["params"]
  assert report["collective_bytes_per_device"] > 2 * 2 * params * 3 / 4 / 4
  assert report["communication_seconds"] > 0 and report["dcn_seconds"] == 0
  assert report["step_seconds_serial"] == pytest.approx(seconds + report["communication_seconds"])
  assert report["step_seconds_overlapped"] == max(seconds, report["communication_seconds"])
  assert report["bound"] in ("compute", "memory", "communication")
  assert report["mfu_serial"] <= report["mfu_overlapped"] <= report["compiler_mfu"] * (1 + 1e-9)


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
  # the gradients' all-reduce across the slices, which libtpu compiles as megascale host transfers
  assert 0 < report["dcn_seconds"] < report["communication_seconds"]
  with pytest.raises(ValueError, match="asks for 4 slices but the devices come from 2 slices"):
    sharding.make_mesh(devices=devices, dcn_mesh_shape=(4, 1, 1))


@pytest.mark.slow
def test_plan_cli_reads_the_topology_from_the_run_gin():
  code, out, err = train_util.cli(
    "plan",
    "--gin_file=runs/local_tiny.gin",
    "--gin.plan.tpu_plan.topology='v4-8'",
    "--gin.TASK_FEATURE_LENGTHS={'targets': 256}",
    "--json",
  )
  assert code == 0, err
  report = json.loads(out.strip().splitlines()[-1])
  assert report["tpu"]["topology"] == "v4-8" and report["tpu"]["fits"] is True
  assert "fits" in out and "predicted step time at 40% MFU (6N + causal attn)" in out
  assert report["tpu"]["compiler_step_seconds"] > 0 and "compiler step time" in out


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


@pytest.mark.slow
def test_plan_fit_compiles_candidates_ranks_them_and_writes_a_run_gin_that_trains(local_corpus, tmp_path, monkeypatch):
  fit_gin = tmp_path / "fit.gin"
  flags = ["--gin_file=runs/local_tiny.gin", "--gin.TASK_FEATURE_LENGTHS={'targets': 128}", "--gin.BATCH_SIZE=16"]
  monkeypatch.chdir(tmp_path)  # from a folder that is not the checkout
  code, out, err = train_util.cli(
    "plan", *flags, "--topology=v5litepod-8", "--fit", "--max_compiles=2", f"--fit_gin={fit_gin}"
  )
  assert code == 0, err
  assert "plan --fit: " in out and "[1/2] " in out and "[2/2] " in out and "[3/" not in out  # --max_compiles
  header = next(line for line in out.splitlines() if line.startswith("candidate"))
  assert "overlapped ms" in header and "serial ms" in header and "bound" in header
  winner = out.split("fastest that fits: ")[1].split(";")[0]
  text = fit_gin.read_text()
  assert winner in text and "include 'runs/local_tiny.gin'" in text and "sharding.make_mesh.mesh_shape = (" in text
  assert text.count("BATCH_SIZE = 16") == 1  # the run's binding is not written twice
  # the written gin trains as is on the 8 simulated CPU devices (the slice's 8 chips)
  run = tmp_path / "run"
  code, _, err = train_util.cli(
    "train",
    f"--gin_file={fit_gin}",
    f"--gin.MODEL_DIR='{run}'",
    f"--gin.CORPUS_DIR='{local_corpus}'",
    "--gin.TRAIN_STEPS=1",
    "--gin.optimizer.learning_rate_schedule.warmup_steps=0",
    "--gin.EVAL_PERIOD=0",
    "--gin.train.train.sample_prompt=None",
    "--gin.train.train.final_eval=False",
  )
  assert code == 0, err
  assert train_util.train_losses(str(run)).keys() == {1}


@pytest.mark.parametrize(
  "flags, message",
  [
    (["--topology=h100-8"], "compiles ahead of time for TPU only"),
    (["--topology=v5litepod-8", "--gin.BATCH_SIZE=7"], r"no mesh divides BATCH_SIZE=\[7\] over 8 devices"),
    (["--topology=v5litepod-8", "--time_budget=5"], r"--time_budget=5: one compile needs"),
    (["--topology=v9-8"], "accelerator type such as v4-32"),
  ],
)
def test_plan_fit_bad_input_is_one_line(capsys, flags, message):
  from jaxformer import cli

  assert cli.main(["plan", "--gin_file=runs/local_tiny.gin", "--fit", *flags]) != 0
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and __import__("re").search(message, err[0]), err


def test_collectives_are_read_from_every_hlo_spelling_and_timed_by_the_ring_formulas():
  from jaxformer.plan import collectives

  hlo = """
%all-reduce-scatter.1 (p: f32[128,64]) -> f32[32,64] {
  %all-reduce.9 = f32[128,64]{1,0} all-reduce(f32[128,64]{1,0} %p), replica_groups={{0,1,2,3}}, to_apply=%add
}
ENTRY %main (a: bf16[32,64]) -> bf16[128,64] {
  %all-gather.1 = bf16[128,64]{1,0} all-gather(bf16[32,64]{1,0} %a), MESH_GROUPS, dimensions={0}
  %all-reduce.2 = (f32[16]{0}, f32[16]{0}) all-reduce(%x, %y), replica_groups=[2,4]<=[8], to_apply=%add
  %cp = (bf16[8]{0}, bf16[8]{0}, u32[], u32[]) collective-permute-start(%z), source_target_pairs={{0,1},{1,0}}
  %send.16 = (f32[16,8,128]{2,1,0:T(8,128)}, u32[]{:S(2)}, token[]) send(%f, %after-all.16), MEGASCALE
  %recv.16 = (f32[16,8,128]{2,1,0:T(8,128)}, u32[]{:S(2)}, token[]) recv(%after-all.16), MEGASCALE
}
""".replace("MESH_GROUPS", "replica_groups=mesh['axis_0'=4,'axis_1'=2] {'axis_0'}")
  megascale = (  # a multislice program's cross-slice all-reduce, as libtpu 0.0.42.1 writes it
    "channel_id=34, is_host_transfer=true, frontend_attributes={"
    '_xla_host_transfer_handler_name="xla_megascale_runtime",'
    '_xla_megascale_reduce_operation="SUM",_xla_megascale_target="{1,2}x{0:15}",_xla_megascale_transfer_type="ALL_REDUCE"}'
  )
  hlo = hlo.replace("MEGASCALE", megascale)
  found = collectives.parse(hlo, 8, num_slices=2)
  assert [(c["kind"], c["bytes"], c["group"], c["dcn"]) for c in found] == [
    ("reduce-scatter", 128 * 64 * 4 // 4, 4, False),  # the TPU compiler's: an all-reduce kept a quarter of
    ("all-gather", 128 * 64 * 2, 4, False),
    ("all-reduce", 2 * 16 * 4, 4, False),
    ("collective-permute", 8 * 2, 2, False),
    ("all-reduce", 16 * 8 * 128 * 4, 2, True),  # a multislice all-reduce's send (its recv is not counted again)
  ]
  assert found[1]["first_group"] == [0, 2, 4, 6]  # axis_0 of a row-major 4 x 2 mesh
  bw = collectives.ICI_BYTES_PER_SECOND["TPU v4"]
  assert collectives.seconds(found[1], bw) == pytest.approx(3 / 4 * 128 * 64 * 2 / bw)
  assert collectives.seconds(found[0], bw) == pytest.approx(3 * 32 * 64 * 4 / bw)
  assert collectives.seconds(found[2], bw) == pytest.approx(2 * 3 / 4 * 128 / bw)
  # a group whose devices sit on two slices (4 devices a slice) moves at DCN bandwidth
  two = collectives.communication(hlo, 8, "TPU v4", devices_per_slice=4)
  dcn = collectives.DCN_BYTES_PER_SECOND["TPU v4"]
  assert two["dcn_seconds"] == pytest.approx(collectives.seconds(found[1], dcn) + collectives.seconds(found[4], dcn))
  assert collectives.seconds(found[4], dcn) == pytest.approx(2 * 1 / 2 * 16 * 8 * 128 * 4 / dcn)
  with pytest.raises(ValueError, match="no published interconnect bandwidth for 'TPU v3'"):
    collectives.communication(hlo, 8, "TPU v3")
