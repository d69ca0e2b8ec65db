"""`jaxformer sweep`: a grid and/or named variants of gin bindings, run one after another.

A sweep file is gin that binds `sweep.define` (see jaxformer/gin/sweeps/codegen2_lessons.gin):

  sweep.define.base_gin_files = ['models/tiny.gin', ...]   # every run's gin files
  sweep.define.bindings = {'TRAIN_STEPS': 400}             # every run's bindings (a dict, or a list merged)
  sweep.define.variants = {'causal': {'OBJECTIVE_RATES': {'causal_lm': 1.0}}, 'b': [%DATA, {...}], ...}
  sweep.define.grid = {'lr': {'low': {...}, 'high': {...}},             # named choices, or
                       'optimizer.make_optimizer.weight_decay': [0.0, 0.1]}  # values of one binding
  sweep.define.evals = {'l2r': {'OBJECTIVE_RATES': {'causal_lm': 1.0}},  # `eval loss` after training
                        'he': {'verb': 'humaneval', 'flags': ['--limit=20']}}  # or another eval verb
  sweep.define.comparisons = [{'lesson': ..., 'metric': 'l2r/local_pl', 'lower': 'causal', 'than': 'prefix_lm'}]
  sweep.define.seeds = 3                                   # each arm trained with SEED 0, 1, 2 (`--seeds`)

Runs are the product of variants and grid axes, named `variant.axis-choice...` (a name is letters, digits,
'.', '_' and '-', as a folder and a pod run name must be: variant and choice names outside that are
refused). Each arm runs once per seed, as ARM.seed-K (one seed: ARM itself); results are per arm, mean
and spread over its seeds, and each comparison gets a verdict (sweep_results.py). Before anything runs,
every run's gin is parsed (check_runs). A binding value is a Python literal, passed to the run as
`--gin.NAME=repr(value)`; the key 'gin_file' adds gin files.
Each run lives in OUTPUT_DIR/NAME: `jaxformer train` (which resumes from its own checkpoints), then
each eval; OUTPUT_DIR/NAME/sweep_result.json marks it finished, so a restarted sweep skips it.
"""

import dataclasses
import itertools
import json
import os
import re
import shlex
import signal
import time

import gin

from jaxformer import fs
from jaxformer.train.metrics import final_train_eval, read_metrics, train_totals

RESULT_FILE = "sweep_result.json"
RUN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  gin_files: tuple
  bindings: tuple  # ((gin name, python value), ...) in the order they apply
  arm: str = ""  # the variant/grid point it repeats (seeded); "" for the arm itself

  @property
  def arm_name(self) -> str:
    return self.arm or self.name


@dataclasses.dataclass(frozen=True)
class Sweep:
  base_gin_files: tuple
  bindings: dict
  variants: dict
  grid: dict
  evals: dict
  comparisons: tuple
  seeds: int


@gin.configurable(module="sweep")
def define(base_gin_files=(), bindings=None, variants=None, grid=None, evals=None, comparisons=(), seeds=3) -> Sweep:
  """The sweep a sweep file binds (module docstring). Returns a Sweep."""
  if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
    raise ValueError(f"sweep.define.seeds (--seeds) = {seeds!r} must be an integer >= 1 (runs per arm)")
  sweep = Sweep(
    tuple(base_gin_files),
    _merged("sweep.define.bindings", bindings or {}),
    {name: _merged(f"sweep.define.variants[{name!r}]", spec) for name, spec in (variants or {}).items()},
    dict(grid or {}),
    dict(evals or {}),
    tuple(comparisons),
    seeds,
  )
  for axis, choices in sweep.grid.items():
    if not isinstance(choices, (dict, list, tuple)) or not choices:
      raise ValueError(f"sweep.define.grid[{axis!r}] must be a non-empty dict of named choices or list of values")
  if not sweep.variants and not sweep.grid:
    raise ValueError("sweep.define binds neither variants nor grid: there is nothing to run")
  return sweep


def _merged(where: str, spec) -> dict:
  """Bindings (every run's, or a variant's): a dict, or a list of dicts merged in order, a later key
  winning (a macro's shared bindings, such as an arm's data, then the arm's own)."""
  parts = spec if isinstance(spec, (list, tuple)) else [spec]
  if not parts or not all(isinstance(part, dict) for part in parts):
    raise ValueError(f"{where} must be a dict of bindings (or a list of them), not {spec!r}")
  return {k: v for part in parts for k, v in part.items()}


def _short(value) -> str:
  text = value if isinstance(value, str) else repr(value)
  return "".join(c if c.isalnum() or c in "._-" else "_" for c in text).strip("_")


def _axis_choices(axis: str, choices) -> list[tuple[str, dict]]:
  if isinstance(choices, dict):
    return [(f"{axis}-{name}", dict(spec)) for name, spec in choices.items()]
  label = axis.rsplit(".", 1)[-1]
  return [(f"{label}-{_short(value)}", {axis: value}) for value in choices]


def expand(sweep: Sweep) -> list[Run]:
  """Every run of the sweep: variants x grid, in file order, with unique readable names."""
  variants = list(sweep.variants.items()) or [("", {})]
  axes = [_axis_choices(axis, choices) for axis, choices in sweep.grid.items()]
  runs, seen = [], set()
  for (variant, spec), combo in itertools.product(variants, itertools.product(*axes)):
    parts = [variant] if variant else []
    specs = [spec]
    for label, axis_spec in combo:
      parts.append(label)
      specs.append(axis_spec)
    name = ".".join(parts)
    if not RUN_NAME.match(name):
      raise ValueError(
        f"sweep: run name {name!r} (from its variant and grid choices) must be letters, digits, '.', '_' and '-', "
        "not starting with '.' or '-': it names the run's folder and its pod logs"
      )
    if name in seen:
      raise ValueError(f"sweep: two runs are both named {name!r}")
    seen.add(name)
    gin_files, bindings = list(sweep.base_gin_files), dict(sweep.bindings)
    for s in specs:  # later specs win, as later --gin. flags would
      extra = s.get("gin_file", ())
      gin_files += [extra] if isinstance(extra, str) else list(extra)
      bindings.update({k: v for k, v in s.items() if k != "gin_file"})
    runs.append(Run(name, tuple(gin_files), tuple(bindings.items())))
  return runs


def seeded(sweep: Sweep) -> list[Run]:
  """Every run the sweep trains: each arm of expand() once per seed, named ARM.seed-K with SEED = K (the
  data order and the initialisation); with one seed, the arms themselves, under their own names."""
  arms = expand(sweep)
  if sweep.seeds == 1:
    return arms
  runs = []
  for arm in arms:
    if "SEED" in dict(arm.bindings):
      raise ValueError(
        f"sweep run {arm.name!r} binds SEED, which the sweep sets for each of its {sweep.seeds} seeds: "
        "remove the binding or set sweep.define.seeds = 1"
      )
    for k in range(sweep.seeds):
      runs.append(Run(f"{arm.name}.seed-{k}", arm.gin_files, arm.bindings + (("SEED", k),), arm=arm.name))
  return runs


def gin_flags(gin_files, bindings) -> list[str]:
  return [f"--gin_file={f}" for f in gin_files] + [f"--gin.{k}={v!r}" for k, v in bindings]


def join_path(output_dir: str, *parts: str) -> str:
  return "/".join([output_dir.rstrip("/"), *parts]) if "://" in output_dir else os.path.join(output_dir, *parts)


def train_argv(run: Run, output_dir: str) -> list[str]:
  return ["train", *gin_flags(run.gin_files, run.bindings), f"--gin.MODEL_DIR={join_path(output_dir, run.name)!r}"]


# An eval's bindings are gin bindings for `jaxformer eval loss`, unless its 'verb' key names another
# eval verb ('humaneval', 'infill'): then its 'flags' key lists that verb's flags (e.g. '--limit=20').
EVAL_VERBS = ("loss", "humaneval", "infill")


def _eval_parts(eval_bindings: dict) -> tuple[str, list[str], dict]:
  bindings = dict(eval_bindings)
  verb = bindings.pop("verb", "loss")
  flags = list(bindings.pop("flags", []))
  if verb not in EVAL_VERBS:
    raise ValueError(f"eval verb {verb!r} is not one of {list(EVAL_VERBS)}")
  if verb != "loss" and bindings:
    raise ValueError(f"an eval with 'verb': {verb!r} takes 'flags', not gin bindings ({sorted(bindings)})")
  return verb, flags, bindings


def eval_argv(run: Run, output_dir: str, eval_bindings: dict) -> list[str]:
  verb, flags, bindings = _eval_parts(eval_bindings)
  model_dir = f"--model_dir={join_path(output_dir, run.name)}"
  return ["eval", verb, model_dir, *flags, *gin_flags((), bindings.items()), "--json"]


def eval_metrics(eval_bindings: dict, result: dict) -> dict:
  """{metric: value} of an eval's JSON line: loss per task for `eval loss`, pass@k (and, for `eval
  infill`, pass@1 and exact match per kind) for the code evals."""
  verb, _, _ = _eval_parts(eval_bindings)
  if verb == "loss":
    return {task: v["loss"] for task, v in result.items() if isinstance(v, dict)}
  return {k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and ("pass@" in k or "exact" in k)}


def check_runs(sweep: Sweep, output_dir: str, parse, query) -> None:
  """Before anything runs (also for --dry_run): each run's gin files and bindings parse as `train` will
  parse them (a misspelled binding stops here, named), TRAIN_STEPS is a positive integer its learning-rate
  schedule can run (longer than the warmup), each eval's
  bindings parse on top of the run's, and every comparison names runs and evals the sweep has.

  parse(gin_files, bindings, unread_macros_allowed) parses gin (config.parse_gin); query(name) reads a
  bound value.
  Raises ValueError naming the run, eval or comparison.
  """
  from jaxformer.errors import require_int
  from jaxformer.train.optimizer import learning_rate_schedule

  runs = expand(sweep)
  for run in runs:
    flags = [f"{k} = {v!r}" for k, v in run.bindings] + [f"MODEL_DIR = {join_path(output_dir, run.name)!r}"]
    for eval_name, eval_bindings in [(None, {}), *sweep.evals.items()]:
      where = f"sweep run {run.name!r}" + (f", eval {eval_name!r}" if eval_name else "")
      try:
        _, _, gin_bindings = _eval_parts(eval_bindings)
        # Under an eval the run's bindings are its config.gin's: an eval binding may leave one unread.
        unread = [k for k, _ in run.bindings] if eval_name else []
        parse(run.gin_files, flags + [f"{k} = {v!r}" for k, v in gin_bindings.items()], unread)
        if eval_name is None:
          steps = query("%TRAIN_STEPS")
          require_int("TRAIN_STEPS", steps, 1)
          learning_rate_schedule(total_steps=steps)  # the run's own check: a schedule that cannot start
      except ValueError as e:
        raise ValueError(f"{where}: {e}") from e
  names = {run.name for run in runs}
  for spec in sweep.comparisons:
    for key in ("lesson", "metric", "lower", "than"):
      if key not in spec:
        raise ValueError(f"sweep.define.comparisons: {spec!r} lacks {key!r}")
    unknown = [spec[k] for k in ("lower", "than") if spec[k] not in names]
    if unknown:
      raise ValueError(f"sweep.define.comparisons {spec['lesson']!r}: no run named {unknown} (runs: {sorted(names)})")
    source = spec["metric"].split("/", 1)[0]
    if source not in {"final", *sweep.evals}:
      raise ValueError(
        f"sweep.define.comparisons {spec['lesson']!r}: metric {spec['metric']!r} names no eval "
        f"(final/TASK or one of {sorted(sweep.evals)}/TASK)"
      )


# --- files (local or gs://) -----------------------------------------------------------------


def read_json(path: str):
  if not fs.exists(path):
    return None
  with fs.open(path) as f:
    return json.load(f)


def run_metrics(model_dir: str) -> dict:
  """{'final': the trainer's last eval, 'train': steps and supervised tokens}, from one read of metrics.jsonl."""
  records = read_metrics(model_dir)
  return {"final": final_train_eval(model_dir, records), "train": train_totals(model_dir, records)}


def _last_json(text: str):
  for line in reversed(text.strip().splitlines()):
    line = line.strip()
    if line.startswith("{"):
      return json.loads(line)
  return None


def run_sweep(sweep: Sweep, output_dir: str, launcher, dry_run: bool = False, say=print) -> dict:
  """Runs every unfinished run, then collects. Returns {"runs", "ran", "skipped", "failed", "interrupted"}."""
  runs = seeded(sweep)
  summary = {"runs": [r.name for r in runs], "ran": [], "skipped": [], "failed": [], "interrupted": False}
  if dry_run:
    for i, run in enumerate(runs, 1):
      say(f"[{i}/{len(runs)}] {run.name}")
      say("  gin files: " + " ".join(run.gin_files))
      for k, v in run.bindings:
        say(f"  {k} = {v!r}")
      say("  $ " + " ".join(shlex.quote(a) for a in launcher.command(train_argv(run, output_dir), run.name)))
      for eval_name, eval_bindings in sweep.evals.items():
        say(
          f"  eval {eval_name}: $ "
          + " ".join(shlex.quote(a) for a in launcher.command(eval_argv(run, output_dir, eval_bindings), run.name))
        )
    return summary
  previous = [signal.signal(s, launcher.forward) for s in (signal.SIGTERM, signal.SIGINT)]
  local_logs = output_dir if "://" not in output_dir else os.path.join("sweep_logs", _short(output_dir))
  try:
    for i, run in enumerate(runs, 1):
      model_dir = join_path(output_dir, run.name)
      if read_json(join_path(model_dir, RESULT_FILE)) is not None:
        say(f"[{i}/{len(runs)}] {run.name}: finished before, skipped")
        summary["skipped"].append(run.name)
        continue
      log_path = os.path.join(local_logs, run.name, "sweep.log")
      say(f"[{i}/{len(runs)}] {run.name}: training (log {log_path})", flush=True)
      started = time.time()
      code, _ = launcher.run(train_argv(run, output_dir), log_path, run.name)
      if launcher.interrupted:
        summary["interrupted"] = True
        say(f"interrupted during {run.name}; run the same command again to resume it")
        break
      if code != 0:
        say(f"[{i}/{len(runs)}] {run.name}: train exited with {code}; see {log_path}")
        summary["failed"].append(run.name)
        continue
      evals = {}
      for eval_name, eval_bindings in sweep.evals.items():
        code, out = launcher.run(eval_argv(run, output_dir, eval_bindings), log_path, run.name)
        result = _last_json(out) if code == 0 else None
        if result is None:
          break
        evals[eval_name] = eval_metrics(eval_bindings, result)
      if launcher.interrupted:
        summary["interrupted"] = True
        say(f"interrupted during {run.name}'s evals; run the same command again to finish it")
        break
      if len(evals) != len(sweep.evals):
        say(f"[{i}/{len(runs)}] {run.name}: an eval failed ({code}); see {log_path}")
        summary["failed"].append(run.name)
        continue
      record = {
        "name": run.name,
        "arm": run.arm_name,
        "gin_files": list(run.gin_files),
        "bindings": {k: repr(v) for k, v in run.bindings},
        **run_metrics(model_dir),
        "evals": evals,
        "seconds": time.time() - started,
      }
      fs.write(join_path(model_dir, RESULT_FILE), json.dumps(record, indent=1))
      summary["ran"].append(run.name)
      say(
        f"[{i}/{len(runs)}] {run.name}: done in {record['seconds']:.0f} s: "
        + ", ".join(f"{m} {format_value(m, v)}" for m, v in flatten_metrics(record).items()),
        flush=True,
      )
  finally:
    for s, handler in zip((signal.SIGTERM, signal.SIGINT), previous):
      signal.signal(s, handler)
  return summary


# --- results --------------------------------------------------------------------------------


def format_value(metric: str, value: float) -> str:
  """train/* counts whole (816,691), losses and rates to 4 places."""
  return f"{value:,.0f}" if metric.startswith("train/") else f"{value:.4f}"


def flatten_metrics(record: dict) -> dict:
  """{'final/local_pl': loss, 'train/supervised_tokens': n, 'l2r/local_nl': loss, 'humaneval/pass@1': ...} of
  one run's sweep_result.json."""
  out = {f"final/{task}": loss for task, loss in sorted(record.get("final", {}).items())}
  out.update({f"train/{k}": v for k, v in sorted(record.get("train", {}).items())})
  for eval_name, losses in record.get("evals", {}).items():
    out.update({f"{eval_name}/{task}": loss for task, loss in sorted(losses.items())})
  return out
