"""Training: the step, the schedule, NaN guards, checkpoints across meshes, and `jaxformer train`
runs that are killed, preempted and resumed."""

import glob
import json
import os
import signal
import time

import jax
import numpy as np
import optax
import pytest
import train_util
from model_util import random_tokens, tiny

from jaxformer import checkpoint, sharding
from jaxformer.train import setup as setup_lib
from jaxformer.train.optimizer import decay_mask, learning_rate_schedule
from jaxformer.train.state import state_shardings
from jaxformer.train.step import StepConfig, make_train_step


def _batch(config, batch=8, length=16, seed=3):
  targets = random_tokens(config, batch, length, seed=seed) + 1
  weights = np.ones_like(targets)
  weights[:, -3:] = 0  # some tokens without loss, unevenly spread below
  weights[1, :5] = 0
  return {
    "decoder_target_tokens": targets,
    "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),
    "decoder_loss_weights": weights,
    "decoder_segment_ids": np.ones_like(targets),
    "decoder_positions": np.broadcast_to(np.arange(length), targets.shape).copy(),
    "decoder_causal_attention": np.zeros_like(targets),
  }


def _setup(config=None, sgd=False, **step_kwargs):
  config = config or tiny()
  # The setup train/bench/plan use; SGD shows the gradient itself (Adam's first step is ~lr*sign(g)).
  setup = setup_lib.build(
    config,
    StepConfig(**step_kwargs),
    total_steps=10,
    mesh=sharding.make_mesh((1, -1, 1)),
    optimizer=optax.sgd(1.0) if sgd else None,
    peak=1e-2,
    warmup_steps=0,
  )
  state = setup.init_state(jax.random.key(0))
  # Unsharded and not donating: the tests reuse states across steps.
  step = jax.jit(make_train_step(setup.model, setup.optimizer, setup.schedule, setup.step_config))
  return state, step, (setup.model, setup.optimizer, setup.mesh, setup.rules, setup.state_shardings)


def test_learning_rate_schedule_values_at_known_steps():
  schedule = learning_rate_schedule(peak=1e-3, warmup_steps=10, total_steps=110, floor_ratio=0.1)
  assert float(schedule(0)) == 0.0
  assert np.isclose(float(schedule(5)), 5e-4)
  assert np.isclose(float(schedule(10)), 1e-3)
  assert np.isclose(float(schedule(60)), 1e-4 + 0.5 * (1e-3 - 1e-4))  # half-way down the cosine
  assert np.isclose(float(schedule(110)), 1e-4) and np.isclose(float(schedule(500)), 1e-4)


def test_weight_decay_skips_biases_and_layernorm():
  state, _, _ = _setup()
  mask = decay_mask(state.params)
  assert mask["embed"] and mask["layers"]["attention"]["qkv"]["kernel"] and mask["lm_head"]["kernel"]
  assert not mask["lm_head"]["bias"] and not mask["layers"]["ln"]["scale"] and not mask["ln_f"]["bias"]


@pytest.mark.slow
def test_gradient_accumulation_equals_the_full_batch():
  state, full_step, _ = _setup(sgd=True)
  _, micro_step, _ = _setup(sgd=True, microbatches=4)
  batch = _batch(tiny())
  full_state, full_metrics = full_step(state, batch)
  micro_state, micro_metrics = micro_step(state, batch)
  assert np.isclose(full_metrics["loss"], micro_metrics["loss"], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(full_state.params), jax.tree.leaves(micro_state.params)):
    np.testing.assert_allclose(a, b, atol=1e-6)
  assert not np.allclose(jax.tree.leaves(full_state.params)[0], jax.tree.leaves(state.params)[0])


def test_nonfinite_update_is_never_applied():
  state, _, _ = _setup()
  _, poisoned_step, _ = _setup(z_loss=1e39)  # log(Z)^2 * 1e39 overflows float32
  before = jax.device_get(state)
  new_state, metrics = poisoned_step(state, _batch(tiny()))
  assert not bool(metrics["finite"]) and not np.isfinite(float(metrics["loss"]))
  after = jax.device_get(new_state)
  for a, b in zip(
    jax.tree.leaves(before.params) + jax.tree.leaves(before.opt_state),
    jax.tree.leaves(after.params) + jax.tree.leaves(after.opt_state),
  ):
    np.testing.assert_array_equal(a, b)
  assert int(after.step) == 1


@pytest.mark.slow
def test_checkpoint_saved_on_8_devices_restores_on_4(tmp_path):
  state, step, (model, optimizer, mesh, rules, shards) = _setup(tiny(d_model=64))
  state, _ = step(state, _batch(tiny(d_model=64)))
  assert len(jax.tree.leaves(state.params)[0].sharding.device_set) == 8
  manager = checkpoint.make_manager(str(tmp_path), checkpoint_period=1)
  checkpoint.save(manager, 1, state, force=True)
  manager.wait_until_finished()

  small_mesh = sharding.make_mesh((2, 2, 1), devices=jax.devices()[:4])
  abstract, small_shards = state_shardings(model, optimizer, small_mesh, rules)
  restored = checkpoint.restore(checkpoint.make_manager(str(tmp_path)), 1, abstract)
  leaf = restored.params["layers"]["mlp"]["fc_in"]["kernel"]
  assert leaf.sharding.mesh.devices.size == 4 and leaf.sharding.spec == jax.P(None, "fsdp", "tensor")
  for a, b in zip(jax.tree.leaves(jax.device_get(state)), jax.tree.leaves(jax.device_get(restored))):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_sigkill_then_restart_reproduces_the_uninterrupted_losses(local_corpus, online_reference_16, tmp_path):
  flags = train_util.small_run_flags(local_corpus, steps=16, checkpoint_period=4)
  # killed after checkpoint 4: 12 more steps and three saves before the last checkpoint, even on a fast machine
  train_util.assert_sigkill_then_restart_matches(tmp_path, flags, steps=16, kill_after=4, expected=online_reference_16)


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly_then_resumes(local_corpus, tmp_path):
  # Far more steps than it will run: a fast machine must not reach the end before the signal lands.
  flags = train_util.small_run_flags(local_corpus, steps=100_000, checkpoint_period=100_000)
  model_dir = str(tmp_path / "run")
  process = train_util.start(model_dir, flags)
  deadline = time.time() + 240
  while not os.path.exists(os.path.join(model_dir, "metrics.jsonl")) or len(train_util.train_losses(model_dir)) < 3:
    assert process.poll() is None, train_util.log_text(model_dir)
    assert time.time() < deadline
    time.sleep(0.1)
  assert train_util.kill(process, signal.SIGTERM) == 143, train_util.log_text(model_dir)  # saved, not finished
  assert "preempted at step" in train_util.log_text(model_dir)
  saved = train_util.committed_steps(model_dir)
  assert saved and 3 <= saved[-1] < 1000  # saved at the preemption step, not the period
  flags = train_util.small_run_flags(local_corpus, steps=saved[-1] + 2, checkpoint_period=100)
  assert train_util.run_here(model_dir, flags) == 0
  assert f"restored step {saved[-1]}" in train_util.log_text(model_dir)
  assert train_util.committed_steps(model_dir)[-1] == saved[-1] + 2


@pytest.mark.slow
def test_nan_stop_mode_names_the_step_and_leaves_no_bad_checkpoint(local_corpus, tmp_path):
  model_dir = str(tmp_path / "nan")
  flags = train_util.small_run_flags(local_corpus, steps=4) + [
    "--gin.train.StepConfig.z_loss=1e39",
    "--gin.train.StepConfig.nan_policy='stop'",
  ]
  assert train_util.run_here(model_dir, flags) == 2
  text = train_util.log_text(model_dir)
  assert "step 1:" in text and "not finite" in text and "nan_policy = 'stop'" in text
  assert train_util.committed_steps(model_dir) == []


@pytest.mark.slow
def test_finite_data_that_runs_out_names_the_step_and_keeps_the_checkpoint(local_corpus, tmp_path):
  from jaxformer.data.ingest.convert import convert_files

  # 30 documents of about 130 tokens: each fills a 128-token row with its first chunk, whatever the
  # tokenizer, so one epoch is 3 to 7 batches of 8 (a corpus sample of unknown size could be 1 batch).
  raw = tmp_path / "docs.jsonl"
  raw.write_text("\n".join(json.dumps({"text": f"def f{i}(x):\n    return x * {i}\n" * 12}) for i in range(30)))
  convert_files(str(raw), str(tmp_path / "docs"))
  model_dir = str(tmp_path / "dry")
  flags = train_util.small_run_flags(None, steps=500, checkpoint_period=2, data_gin="data/my_corpus.gin") + [
    f"--gin.MY_CORPUS_DIR='{tmp_path / 'docs'}'",
    f"--gin.VOCABULARY='{os.path.join(local_corpus, 'spm.model')}'",
    "--gin.DataConfig.num_epochs=1",
  ]
  assert train_util.run_here(model_dir, flags) == 2
  text = train_util.log_text(model_dir)
  assert "the train split of my_code ran out after" in text and "DataConfig.num_epochs=1" in text
  assert "Traceback" not in text
  steps = train_util.train_losses(model_dir)
  assert 3 <= len(steps) <= 7, steps
  assert 2 in train_util.committed_steps(model_dir)  # the checkpoints before it are intact


@pytest.mark.slow
def test_nan_skip_mode_keeps_training_and_checkpoints_finite_state(local_corpus, tmp_path):
  model_dir = str(tmp_path / "nan_skip")
  flags = train_util.small_run_flags(local_corpus, steps=4, checkpoint_period=2) + [
    "--gin.train.StepConfig.z_loss=1e39"
  ]
  assert train_util.run_here(model_dir, flags) == 0, train_util.log_text(model_dir)
  assert "skipped; train.StepConfig.nan_policy = 'skip'" in train_util.log_text(model_dir)
  assert train_util.committed_steps(model_dir)[-1] == 4
  params, step = checkpoint.restore_params(
    model_dir,
    sharding.sharded_param_shapes(
      tiny(vocab_size=2048, d_model=128, rotary_dim=16), sharding.make_mesh((1, -1, 1)), sharding.logical_axis_rules()
    )[0],
  )
  assert step == 4 and all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


@pytest.mark.slow
def test_local_tiny_run_leaves_checkpoint_metrics_tensorboard_plot_and_profile(local_corpus, tmp_path):
  model_dir = str(tmp_path / "tiny")
  flags = train_util.small_run_flags(local_corpus, steps=6, checkpoint_period=3, final_eval=True)
  drop = ("sample_prompt", "EVAL_PERIOD", "progress")
  flags = [f for f in flags if not any(d in f for d in drop)] + ["--gin.EVAL_PERIOD=3"]
  # The code eval during training, on 2 HumanEval problems and 2 infill tasks.
  flags += [
    "--gin.train.CodeEvalConfig.period=3",
    "--gin.train.CodeEvalConfig.humaneval_problems=2",
    "--gin.train.CodeEvalConfig.infill_tasks=2",
    "--gin.train.CodeEvalConfig.max_new_tokens=8",
  ]
  flags += ["--profile_steps=2,4"]  # a jax.profiler trace of steps 2 and 3
  assert train_util.run(model_dir, flags) == 0, train_util.log_text(model_dir)
  text = train_util.log_text(model_dir)
  assert glob.glob(os.path.join(model_dir, "profile", "plugins", "profile", "*", "*.xplane.pb"))
  assert "eval local_pl: loss" in text and "eval local_nl: loss" in text and "sample:" in text
  # Output to a file: one plain line per log period, no progress bar's carriage returns.
  assert "\r" not in text and "step 6/6: loss" in text and "step 1/6: loss" in text
  assert "LOG(INFO)" not in text  # SentencePiece's C++ INFO lines are dropped without --verbose
  assert train_util.committed_steps(model_dir) == [3, 6]
  assert os.path.getsize(os.path.join(model_dir, "loss.png")) > 1000
  assert glob.glob(os.path.join(model_dir, "tensorboard", "events.out.tfevents.*"))
  assert "TRAIN_STEPS = 6" in open(os.path.join(model_dir, "config.gin")).read()
  records = [json.loads(line) for line in open(os.path.join(model_dir, "metrics.jsonl"))]
  assert {r["task"] for r in records if r.get("split") == "eval"} == {"local_pl", "local_nl", "code"}
  code = [r for r in records if r.get("task") == "code"]
  assert [r["step"] for r in code] == [3, 6] and all(0 <= r["humaneval_pass@1"] <= 1 for r in code)
  assert all(r["humaneval_problems"] == 2 and r["infill_tasks"] == 2 and "infill_exact_match" in r for r in code)
  train_records = [r for r in records if r.get("split") == "train"]
  assert [r["step"] for r in train_records] == list(range(1, 7)) and all("loss" in r for r in train_records)
  # log_period 1: each record's window is its own step
  assert all(r["window_steps"] == 1 and r["loss_tokens_window"] == r["loss_tokens"] > 0 for r in train_records)
  assert train_records[0]["mfu_6n"] is None  # CPU: no peak FLOP/s, shown as n/a


def test_mfu_uses_the_peak_table_and_is_na_on_cpu():
  from jaxformer.train import mfu

  assert mfu.peak_flops("TPU v4") == 275e12 and mfu.peak_flops("TPU v5 lite") == 197e12
  assert mfu.peak_flops("TPU v5p") == 459e12 and mfu.peak_flops("TPU v6 lite") == 918e12
  assert mfu.peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and mfu.peak_flops("NVIDIA A100-SXM4-40GB") == 312e12
  assert mfu.peak_flops("cpu") is None and mfu.format_mfu(None) == "n/a"
  assert mfu.hbm_bandwidth("TPU v4") == 1200e9 and mfu.hbm_bandwidth("TPU v5 lite") == 819e9
  assert mfu.hbm_bandwidth("TPU v5p") == 2765e9 and mfu.hbm_bandwidth("TPU v6 lite") == 1638e9
  assert mfu.hbm_bandwidth("cpu") is None
  # 1000 tokens/s x 6e9 FLOPs/token on 2 v4 chips = 6e12 / 5.5e14
  assert np.isclose(mfu.mfu(1000, 6e9, 2, "TPU v4"), 6e12 / 5.5e14)


@pytest.mark.slow
def test_a_hook_a_user_adds_runs_every_n_steps_and_after_the_last_on_the_trained_state(local_corpus, tmp_path):
  from jaxformer import config as config_lib
  from jaxformer.train import loop
  from jaxformer.train.trainer import FunctionHook

  bindings = [
    f"CORPUS_DIR = '{local_corpus}'",
    f"MODEL_DIR = '{tmp_path / 'run'}'",
    "TRAIN_STEPS = 5",
    "TASK_FEATURE_LENGTHS = {'targets': 128}",
    "EVAL_PERIOD = 0",
    "CHECKPOINT_PERIOD = 2",
    "train.evaluate.eval_batches = 1",
    "train.train.sample_prompt = None",
    "train.train.progress = False",
    "optimizer.learning_rate_schedule.warmup_steps = 1",
  ]
  config_lib.parse_gin(["models/tiny.gin", "runs/local.gin"], bindings)
  seen = []
  record = lambda info: seen.append((info.step, int(info.state.step), info.metrics["loss"], info.final))
  result = loop.train(hooks=[FunctionHook(record, every=2)])
  assert [step for step, *_ in seen] == [2, 4, 5]  # every 2 steps, and after the last
  assert all(step == state_step for step, state_step, _, _ in seen)  # the state after that very step
  assert [final for *_, final in seen] == [False, False, True] and seen[-1][2] == result["train_loss"]
  assert set(result["eval"]) == {"local_pl", "local_nl"}  # the standard hooks still ran (the final eval)
  assert train_util.committed_steps(str(tmp_path / "run")) == [2, 4, 5]
