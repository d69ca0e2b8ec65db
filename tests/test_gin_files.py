"""The shipped gin files compose to what the user chose: the objective file included is the one
that trains, each run file gets its model size and data, and every sweep variant its bindings."""

import glob
import json
import math
import os

import gin
import pytest

from jaxformer import cli, sweep
from jaxformer import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBJECTIVES = {
  "causal_lm": {"causal_lm": 1.0},
  "prefix_lm": {"prefix_lm": 1.0},
  "span_corruption": {"span_corruption": 1.0},
  "codegen2": {"causal_lm": 0.5, "span_corruption": 0.5},
}
RUN_SIZES = {"codegen2_1b_v4_32": 16, "codegen2_3_7b_v4_64": 16, "codegen2_7b_v4_128": 32, "codegen2_16b_v4_256": 34}
REQUIRED = ["MODEL_DIR = '/tmp/run'", "TRAIN_STEPS = 10"]


def _query(name):
  return gin.query_parameter(name)


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_the_objective_file_included_is_the_objective_that_trains(objective):
  files = ["models/tiny.gin", f"objectives/{objective}.gin", "data/local.gin", "runs/pretrain.gin"]
  config_lib.parse_gin(files, REQUIRED)
  assert _query("%OBJECTIVE_RATES") == OBJECTIVES[objective]
  assert _query("objectives.objective_mixture.rates").scoped_selector == "OBJECTIVE_RATES/gin.macro"


@pytest.mark.parametrize("run", sorted(RUN_SIZES))
def test_each_run_file_trains_its_size_on_its_data_with_the_codegen2_mix(run):
  # training needs the run folder and the data; each is %gin.REQUIRED until bound
  with pytest.raises(config_lib.GinConfigError, match="are required") as unbound:
    config_lib.parse_gin([f"runs/{run}.gin"])
  assert all(name in str(unbound.value) for name in ("MODEL_DIR", "PL_DIR", "NL_DIRS", "VOCABULARY"))
  config_lib.parse_gin([f"runs/{run}.gin"], finalize=False)  # what `plan` parses: shapes only
  assert str(_query("%PL_DIR")) == str(_query("%MODEL_DIR")) == "%gin.REQUIRED"
  data = ["PL_DIR = 'gs://b/stack'", "NL_DIRS = {}", "VOCABULARY = 'gs://b/tokenizer.json'"]
  for missing in ["MODEL_DIR = 'gs://b/run'", *data]:
    with pytest.raises(config_lib.GinConfigError, match=f"{missing.split()[0]} is required"):
      config_lib.parse_gin([f"runs/{run}.gin"], [b for b in ["MODEL_DIR = 'gs://b/run'", *data] if b != missing])
  config_lib.parse_gin([f"runs/{run}.gin"], ["MODEL_DIR = 'gs://b/run'", *data])
  assert _query("%PL_DIR") == "gs://b/stack" and str(_query("tasks.register_code_corpus.pl_dir")) == "%PL_DIR"
  assert _query("ModelConfig.num_layers") == RUN_SIZES[run]
  assert _query("%OBJECTIVE_RATES") == OBJECTIVES["codegen2"]
  assert _query("%MIXTURE_OR_TASK_NAME") == "code_corpus" and _query("%TASK_FEATURE_LENGTHS") == {"targets": 2048}
  assert _query("plan.tpu_plan.topology") == run.rsplit("_", 2)[-2] + "-" + run.rsplit("_", 1)[-1]
  # what the shared bases bring
  assert _query("ModelConfig.init_scheme") == "depth_scaled" and _query("ModelConfig.remat_policy") == "save_dots"
  assert _query("ModelConfig.vocab_size") == 51200 and _query("train.StepConfig.microbatches") == 2
  assert _query("ModelConfig.attention") == "flash"


def _bound_keys(path):
  """The selectors and macros a gin file binds itself (its includes not followed)."""
  keys = []
  for line in open(os.path.join(REPO, "jaxformer", "gin", path)):
    line = line.split("#", 1)[0].strip()
    if "=" in line and not line.startswith(("include", "import")):
      keys.append(line.split("=", 1)[0].strip())
  return keys


@pytest.mark.parametrize(
  "pattern,base",
  [("models/codegen2_*.gin", "models/codegen2_base.gin"), ("runs/codegen2_*_v4_*.gin", "runs/codegen2_pod.gin")],
)
def test_the_codegen2_files_share_a_base_and_repeat_none_of_it(pattern, base):
  files = [
    os.path.relpath(f, os.path.join(REPO, "jaxformer", "gin"))
    for f in glob.glob(os.path.join(REPO, "jaxformer", "gin", pattern))
  ]
  files = [f for f in files if f != base]
  assert len(files) == 4
  shared = set(_bound_keys(base))
  for f in files:
    assert f"include '{base}'" in open(os.path.join(REPO, "jaxformer", "gin", f)).read(), f
    assert not shared & set(_bound_keys(f)), (f, shared & set(_bound_keys(f)))


def test_pretrain_requires_model_dir_and_train_steps():
  files = ["models/tiny.gin", "objectives/codegen2.gin", "data/local.gin", "runs/pretrain.gin"]
  with pytest.raises(config_lib.GinConfigError, match="MODEL_DIR is required"):
    config_lib.parse_gin(files, ["TRAIN_STEPS = 10"])


# What a sweep file leaves to its command line (its header says how to bind them).
SWEEP_FLAGS = {
  "codegen2_lessons_pod.gin": [
    "LESSON_DATA = {'PL_DIR': 'gs://b/stack', 'NL_DIRS': {'nl_pile': 'gs://b/pile'}, 'VOCABULARY': 'gs://b/t.json'}",
    "LESSON_SMALL_STEPS = 4000",
    "LESSON_SMALL_WARMUP = 400",
  ]
}


def test_each_sweep_variant_binds_what_it_names():
  for sweep_file in glob.glob(os.path.join(REPO, "jaxformer", "gin", "sweeps", "*.gin")):
    config_lib.parse_gin([sweep_file], SWEEP_FLAGS.get(os.path.basename(sweep_file), []))
    definition = sweep.define()
    for run in sweep.expand(definition):
      # The flags the sweep passes to `jaxformer train` (sweep.gin_flags), parsed as the CLI parses them.
      flags = sweep.gin_flags(run.gin_files, run.bindings)
      files = [f.split("=", 1)[1] for f in flags if f.startswith("--gin_file=")]
      bindings = [f[len("--gin.") :].replace("=", " = ", 1) for f in flags if f.startswith("--gin.")]
      config_lib.parse_gin(files, bindings + ["MODEL_DIR = '/tmp/run'"])
      for name, value in run.bindings:
        key = f"%{name}" if name.isupper() else name
        assert _query(key) == value, (run.name, name)


def test_the_pod_lessons_are_the_lessons_arms_at_1b_on_the_code_corpus(tmp_path, capsys):
  config_lib.parse_gin(["sweeps/codegen2_lessons.gin"])
  local = sweep.define()
  config_lib.parse_gin(["sweeps/codegen2_lessons_pod.gin"], SWEEP_FLAGS["codegen2_lessons_pod.gin"])
  pod = sweep.define()
  assert list(pod.variants) == list(local.variants) and pod.evals.keys() == local.evals.keys()
  assert [c["lesson"] for c in pod.comparisons] == [c["lesson"] for c in local.comparisons]
  assert pod.base_gin_files == ("runs/codegen2_1b_v4_32.gin",) and pod.seeds == 3
  runs = {r.name: dict(r.bindings) for r in sweep.expand(pod)}
  assert runs["causal"]["PL_DIR"] == "gs://b/stack" and runs["pl_only"]["PL_SHARE"] == 1.0
  assert runs["pl_small_1epoch"]["TRAIN_STEPS"] == 4000 and runs["pl_small_5epochs"]["TRAIN_STEPS"] == 20000
  assert {c["metric"] for c in pod.comparisons} == {"l2r/code_python", "l2r/nl_pile", "infill/code_python"}
  # every run and eval parses as the slice will parse it; the data is read only when a run trains
  flags = [
    "--gin.LESSON_DATA=" + SWEEP_FLAGS["codegen2_lessons_pod.gin"][0].split(" = ")[1],
  ]
  args = ["sweep", "--sweep_file=sweeps/codegen2_lessons_pod.gin", f"--output_dir={tmp_path}", "--dry_run"]
  assert cli.main([*args, *flags, "--gin.LESSON_SMALL_STEPS=4000", "--gin.LESSON_SMALL_WARMUP=400"]) == 0
  assert "[30/30] pl_small_5epochs.seed-2" in capsys.readouterr().out
  assert cli.main([*args, "--gin.LESSON_SMALL_STEPS=4000", "--gin.LESSON_SMALL_WARMUP=400"]) == 2
  assert "LESSON_DATA" in capsys.readouterr().err
  # a one-epoch arm no longer than its warmup stops here, not days into the sweep on the slice
  assert cli.main([*args, *flags, "--gin.LESSON_SMALL_STEPS=1500", "--gin.LESSON_SMALL_WARMUP=2000"]) == 2
  err = capsys.readouterr().err
  assert "pl_small_1epoch" in err and "decay_steps=1500 must exceed warmup_steps=2000" in err


def test_plan_reads_a_pod_run_config_with_no_data_or_model_dir_bound(capsys):
  from jaxformer import cli

  # the TPU compile is test_tpu_plan's; here only that plan needs no data, MODEL_DIR or vocabulary
  args = ["plan", "--gin_file=runs/codegen2_1b_v4_32.gin", "--gin.plan.tpu_plan.topology=None", "--json"]
  assert cli.main(args) == 0
  report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert report["params"] == 1_015_306_240 and "tpu" not in report


def _write(folder, name: str, text: str) -> str:
  path = folder / name
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return str(path)


def test_a_setting_two_sibling_files_bind_differently_is_an_error_naming_both(tmp_path):
  a = _write(tmp_path, "a.gin", "# a\nTRAIN_STEPS = 10\ntrain.train.train_steps = %TRAIN_STEPS\n")
  b = _write(tmp_path, "b.gin", "\n\nTRAIN_STEPS = 20\nModelConfig.num_layers = 2\n")
  with pytest.raises(config_lib.GinConfigError) as error:
    config_lib.parse_gin([a, b], finalize=False)
  assert f"{a}:2" in str(error.value) and f"{b}:3" in str(error.value) and "TRAIN_STEPS" in str(error.value)
  # the same value twice is no conflict; the command line always wins; a file may override what it includes
  same = _write(tmp_path, "same.gin", "TRAIN_STEPS = 10\n")
  config_lib.parse_gin([a, same], finalize=False)
  config_lib.parse_gin([a, b], ["TRAIN_STEPS = 30"], finalize=False)
  assert _query("%TRAIN_STEPS") == 30
  child = _write(tmp_path, "child.gin", f"include '{a}'\nTRAIN_STEPS = 40\n")
  config_lib.parse_gin([child], finalize=False)
  assert _query("%TRAIN_STEPS") == 40
  # ... and a file that includes two conflicting siblings settles them by binding the setting itself
  both = _write(tmp_path, "both.gin", f"include '{a}'\ninclude '{b}'\n")
  with pytest.raises(config_lib.GinConfigError, match="TRAIN_STEPS"):
    config_lib.parse_gin([both], finalize=False)
  settled = _write(tmp_path, "settled.gin", f"include '{a}'\ninclude '{b}'\nTRAIN_STEPS = 50\n")
  config_lib.parse_gin([settled], finalize=False)
  assert _query("%TRAIN_STEPS") == 50 and _query("ModelConfig.num_layers") == 2


def test_a_base_included_after_a_binding_would_win_silently_and_is_refused(tmp_path):
  base = _write(tmp_path, "base.gin", "ModelConfig.d_model = 64\n")
  late = _write(tmp_path, "late.gin", f"ModelConfig.d_model = 128\ninclude '{base}'\n")
  with pytest.raises(config_lib.GinConfigError, match=f"ModelConfig.d_model is bound in {late}:1"):
    config_lib.parse_gin([late], finalize=False)


def test_a_runs_own_config_is_a_base_that_files_and_flags_override(tmp_path):
  run_config = _write(tmp_path, "run/config.gin", "TRAIN_STEPS = 10\nModelConfig.num_layers = 3\n")
  override = _write(tmp_path, "override.gin", "TRAIN_STEPS = 20\n")
  config_lib.parse_gin([override], base_files=[run_config], finalize=False)
  assert _query("%TRAIN_STEPS") == 20 and _query("ModelConfig.num_layers") == 3


def test_gin_errors_name_the_file_and_line(tmp_path):
  broken = _write(tmp_path, "broken.gin", "TRAIN_STEPS = 10\nModelConfig.no_such_field = 3\n")
  with pytest.raises(config_lib.GinConfigError, match=r"broken.gin.*no_such_field"):
    config_lib.parse_gin([broken], finalize=False)
  missing = _write(tmp_path, "missing.gin", "include 'models/no_such_model.gin'\n")
  with pytest.raises(
    config_lib.GinConfigError, match=r"include 'models/no_such_model.gin' in .*missing.gin:1: not found"
  ):
    config_lib.parse_gin([missing], finalize=False)
  loop = _write(tmp_path, "loop.gin", f"include '{tmp_path}/loop.gin'\n")
  with pytest.raises(config_lib.GinConfigError, match="includes it back"):
    config_lib.parse_gin([loop], finalize=False)


def test_every_configurable_is_registered_without_a_list(tmp_path):
  config_lib.import_configurables()
  modules = config_lib.configurable_modules()
  for expected in ("jaxformer.objectives.span_laws", "jaxformer.train.code_eval", "jaxformer.tasks.local"):
    assert expected in modules
  for path in glob.glob(os.path.join(REPO, "jaxformer", "**", "*.py"), recursive=True):
    text = open(path).read()
    module = os.path.relpath(path, REPO)[: -len(".py")].replace(os.sep, ".").removesuffix(".__init__")
    assert ("gin.configurable" in text) == (module in modules), module


def test_the_codegen1_trainer_recipe_is_the_released_trainers_schedule_optimizer_and_init():
  from jaxformer.train import optimizer

  run = ["models/codegen2_1b.gin", "objectives/codegen2.gin", "data/local.gin", "recipes/codegen1_trainer.gin"]
  config_lib.parse_gin(run, ["MODEL_DIR = '/tmp/run'", "TRAIN_STEPS = 350000"])
  assert _query("optimizer.make_optimizer.b2") == 0.999 and _query("train.StepConfig.z_loss") == 1e-4
  assert _query("ModelConfig.init_scheme") == "codegen1"
  schedule = optimizer.learning_rate_schedule(total_steps=350000)

  def released(step, warmup=3000, anneal=300000, lr_max=2e-4, lr_end=2e-5):
    """salesforce/jaxformer utils.create_lr_schedule_gpt3_fn, written out."""
    if step <= warmup:
      return lr_max * min(max(step / warmup, 0.0), 1.0)
    frac = min(max((step - warmup) / anneal, 0.0), 1.0)
    return lr_max - (lr_max - lr_end) * (1 - math.cos(math.pi * frac)) / 2

  for step in (0, 1, 1500, 3000, 3001, 100000, 302999, 303000, 349999):
    assert float(schedule(step)) == pytest.approx(released(step), rel=1e-6, abs=1e-9), step  # float32 optax
