"""`jaxformer VERB [flags]`: the one command, and the only place that parses flags.

Every verb takes the t5x gin flags: --gin_file=F (repeatable), --gin.NAME=VALUE (repeatable),
--gin_search_paths=A,B. Errors a user can act on are printed as one message (exit code 2).
"""

import argparse
import glob
import json
import os
import sys

import gin

from jaxformer import config as config_lib


def _choose_platform():
  # libtpu (the tpu extra) makes jax probe for TPUs and print errors on machines without one.
  if "JAX_PLATFORMS" in os.environ:
    return
  has_tpu = glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")
  has_gpu = os.path.exists("/dev/nvidia0")
  if not has_tpu and not has_gpu:
    os.environ["JAX_PLATFORMS"] = "cpu"


def _import_tensorflow_quietly():
  """TF prints start-up lines to stderr that no log level hides; drop them, and keep TF off GPUs
  (JAX owns the accelerator; TF only reads data)."""
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
  finally:
    os.dup2(saved, 2)
    os.close(devnull)
    os.close(saved)


def _add_gin_flags(parser: argparse.ArgumentParser):
  parser.add_argument(
    "--gin_file", action="append", default=[], help="gin file, relative to the working directory or a gin search path"
  )
  parser.add_argument(
    "--gin_search_paths",
    default=None,
    help="comma-separated folders searched for gin files (default: ., $JAXFORMER_GIN_PATH, the repo's gin/)",
  )


def split_gin_bindings(argv: list[str]) -> tuple[list[str], list[str]]:
  """Pulls --gin.NAME=VALUE (or --gin.NAME VALUE) out of argv; returns (rest, bindings)."""
  rest, bindings = [], []
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--gin."):
      name, sep, value = arg[len("--gin.") :].partition("=")
      if not sep:
        if i + 1 >= len(argv):
          raise config_lib.GinConfigError(f"{arg}: needs a value, as --gin.{name}=VALUE")
        value = argv[i + 1]
        i += 1
      bindings.append(config_lib.binding_from_flag(name, value))
    else:
      rest.append(arg)
    i += 1
  return rest, bindings


def _parse_gin(args, bindings, extra_bindings=()):
  search_paths = None
  if args.gin_search_paths:
    search_paths = [p for p in args.gin_search_paths.split(",") if p] + [str(config_lib.REPO_GIN_DIR)]
  config_lib.parse_gin(args.gin_file, list(extra_bindings) + bindings, search_paths)


# --- verbs -------------------------------------------------------------------------------


def _plan_args(parser):
  parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
  parser.add_argument(
    "--length", type=int, default=None, help="sequence length for the attention FLOPs (default: ModelConfig.max_length)"
  )
  parser.add_argument(
    "--topology",
    default=None,
    help="compile the train step for this TPU slice (v4-32, v5p-64, v6e-16, v4:2x2x4); "
    "default: plan.tpu_plan.topology if the run gin binds it",
  )
  parser.add_argument("--num_slices", type=int, default=None, help="slices over DCN (default 1)")
  parser.add_argument("--assumed_mfu", type=float, default=None, help="MFU the predicted step time assumes (0.4)")


def _bound(name: str):
  try:
    return gin.query_parameter(name)
  except (ValueError, KeyError):
    return None


def _size(n: float) -> str:
  return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _plan_run(args, bindings):
  _parse_gin(args, bindings)
  from jaxformer import plan

  report = config_lib.call_configurable(plan.plan_report, length=args.length)
  gib = 2**30
  print(f"parameters                      {report['params']:,}")
  print(f"matmul parameters (N)           {report['matmul_params']:,}")
  print(f"FLOPs/token, 6N                 {report['flops_per_token_6n']:.4g}")
  print(
    f"FLOPs/token, 6N + causal attn   {report['flops_per_token_with_attention']:.4g}"
    f"  (length {report['sequence_length']})"
  )
  print(f"parameter bytes                 {report['param_bytes'] / gib:.2f} GiB")
  print(f"Adam state bytes                {report['adam_state_bytes'] / gib:.2f} GiB")
  if args.topology or _bound("plan.tpu_plan.topology"):
    overrides = {
      k: v
      for k, v in (("topology", args.topology), ("num_slices", args.num_slices), ("assumed_mfu", args.assumed_mfu))
      if v is not None
    }
    tpu = _user_errors(plan.tpu_plan, **overrides)
    report["tpu"] = tpu
    m = tpu["memory_per_device"]
    print(
      f"--- train step compiled for {tpu['num_slices']} x {tpu['topology']} ({tpu['libtpu_topology']}, "
      f"{tpu['devices']} x {tpu['device_kind']}) in {tpu['compile_seconds']:.1f} s ---"
    )
    print(
      f"mesh {tpu['mesh']}, batch {tpu['batch_size']} x {tpu['sequence_length']}, microbatches "
      f"{tpu['microbatches']}, remat {tpu['remat_policy']}"
    )
    if "compiler" in m:  # the compiler refused the step: it names the temporaries it needed
      print(
        f"memory per device: arguments {_size(m['arguments'])}, temporaries {_size(m['temporaries'])} "
        f"(the TPU compiler refused: {m['compiler']})"
      )
    else:
      print(
        f"memory per device: arguments {_size(m['arguments'])}, temporaries {_size(m['temporaries'])}, "
        f"outputs {_size(m['outputs'])} (aliased {_size(m['aliased'])})"
      )
    print(
      f"total {_size(m['total'])} of {_size(tpu['hbm_per_device'])} HBM per device "
      f"({tpu['memory_fraction']:.1%}): {'fits' if tpu['fits'] else 'DOES NOT FIT'}"
    )
    print(
      f"FLOPs per step: XLA cost analysis {tpu['xla_flops_per_step']:.4g}; model 6N "
      f"{tpu['model_flops_per_step_6n']:.4g}, 6N + causal attn {tpu['model_flops_per_step_6n_attention']:.4g}"
    )
    print(
      f"predicted step time at {tpu['assumed_mfu']:.0%} MFU (6N + causal attn): "
      f"{tpu['predicted_step_seconds'] * 1000:.1f} ms, {tpu['predicted_tokens_per_second']:,.0f} tokens/s"
    )
  if args.json:
    print(json.dumps(report))


def _data_build_local_args(parser):
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--max_bytes", type=int, default=None, help="bytes of documents kept (default 48 MiB)")
  parser.add_argument("--roots", default=None, help="comma-separated folders to read (default: this machine's)")


def _data_build_local_run(args, bindings):
  _parse_gin(args, bindings)
  from jaxformer.data import corpus

  options = corpus.CorpusOptions()
  if args.max_bytes:
    options = corpus.dataclasses.replace(options, max_bytes=args.max_bytes)
  roots = args.roots.split(",") if args.roots else None
  stats = corpus.build_local_corpus(args.output_dir, roots=roots, options=options)
  for kind, splits in stats["classes"].items():
    for split, s in splits.items():
      top = ", ".join(f"{lang} {v['documents']}" for lang, v in list(s["languages"].items())[:6])
      print(f"{kind} {split:10s} {s['documents']:6d} documents {s['bytes'] / 2**20:7.2f} MiB  ({top})")
  print("skipped:", ", ".join(f"{k} {v}" for k, v in stats["skipped"].items()) or "none")
  print(f"wrote {args.output_dir}/stats.json")


def _data_tokenizer_args(parser):
  parser.add_argument("--corpus_dir", required=True)
  parser.add_argument("--output", default=None, help="the .model path (default CORPUS_DIR/spm.model)")
  parser.add_argument("--vocab_size", type=int, default=None)
  parser.add_argument("--num_masks", type=int, default=None, help="<mask_k> sentinels, at least 64")


def _data_tokenizer_run(args, bindings):
  _parse_gin(args, bindings)
  from jaxformer.data import vocabulary

  kwargs = {k: v for k, v in (("vocab_size", args.vocab_size), ("num_masks", args.num_masks)) if v}
  output = args.output or os.path.join(args.corpus_dir, "spm.model")
  path = _user_errors(vocabulary.train_tokenizer, args.corpus_dir, output, **kwargs)
  vocab = vocabulary.CodeGenVocabulary(path)
  print(
    f"wrote {path}: {vocab.vocab_size} pieces, {vocab.num_masks} masks, <sep>={vocab.sep_id} "
    f"<eom>={vocab.eom_id} <mask_1>={vocab.mask_base_id}"
  )


def _data_convert_args(parser):
  parser.add_argument("--input", required=True, help="file pattern of .jsonl, .jsonl.gz or .parquet (local or gs://)")
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--text_field", default="text")
  parser.add_argument("--num_shards", type=int, default=8)


def _data_convert_run(args, bindings):
  _parse_gin(args, bindings)
  from jaxformer.data import convert

  report = _user_errors(
    convert.convert_files, args.input, args.output_dir, text_field=args.text_field, num_shards=args.num_shards
  )
  print(f"documents: {dict(report.documents)}; skipped: {dict(report.skipped) or 'none'}")
  for problem in report.problems:
    print(f"  skipped {problem}")


def _data_config(args, bindings):
  _parse_gin(args, bindings)
  import tasks
  from jaxformer.data import pipeline

  config = config_lib.call_configurable(pipeline.DataConfig)
  vocabulary = _user_errors(tasks.ensure_registered, config.mixture_or_task_name)
  return config, vocabulary


def _data_show_args(parser):
  parser.add_argument("--num_examples", type=int, default=3)
  parser.add_argument("--split", default="train")
  parser.add_argument("--json", action="store_true", help="one JSON object per example and line")


def _data_show_run(args, bindings):
  config, vocabulary = _data_config(args, bindings)
  from jaxformer.data import inspect

  rows = _user_errors(inspect.show_examples, config, vocabulary, args.num_examples, args.split)
  for i, row in enumerate(rows):
    if args.json:
      print(json.dumps(row, ensure_ascii=False))
      continue
    print(
      f"=== example {i}: {row['objective']}, {row['num_tokens']} tokens, loss on "
      f"{sum(row['loss_mask'])}, prefix {sum(row['prefix_mask'])} ==="
    )
    print("--- model input (special tokens shown) ---")
    print(row["inputs_text"])
    if row["prefix_text"]:
      print("--- bidirectional prefix (· = other tokens) ---")
      print(row["prefix_text"])
    print("--- tokens with loss (· = no loss) ---")
    print(row["loss_text"])


def _data_bench_args(parser):
  parser.add_argument("--batches", type=int, default=50)
  parser.add_argument("--json", action="store_true")


def _data_bench_run(args, bindings):
  config, _ = _data_config(args, bindings)
  from jaxformer.data import inspect

  report = inspect.bench(config, args.batches)
  print(
    f"{report['batches']} batches of {report['batch_size']} x {report['length']} in {report['seconds']:.2f} s: "
    f"{report['tokens_per_second']:,.0f} tokens/s ({report['nonpad_tokens_per_second']:,.0f} non-padding, "
    f"packing fill {report['packing_fill']:.1%})"
  )
  if args.json:
    print(json.dumps(report))


def _distributed_args(parser):
  parser.add_argument(
    "--coordinator_address",
    default=None,
    help="host:port of process 0, for multi-host runs off TPU (or $JAXFORMER_COORDINATOR_ADDRESS)",
  )
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)


def _log_to_stderr():
  """jaxformer's own log lines (restores, preemption, skipped steps) go to stderr; absl owns the
  root logger, so the 'jaxformer' logger gets a handler of its own."""
  import logging

  logger = logging.getLogger("jaxformer")
  if not logger.handlers:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s jaxformer: %(message)s"))
    logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False
  for noisy in ("orbax", "jax"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


def _train_args(parser):
  parser.add_argument("--model_dir", default=None, help="sets the MODEL_DIR macro")
  parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
  _distributed_args(parser)


def _train_run(args, bindings):
  from jaxformer import distributed

  distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
  extra = [config_lib.binding_from_flag("MODEL_DIR", repr(args.model_dir))] if args.model_dir else []
  _parse_gin(args, bindings + extra)
  _log_to_stderr()
  from jaxformer.train import loop

  try:
    result = _user_errors(loop.train)
  except loop.NonFiniteError as e:
    raise config_lib.GinConfigError(str(e)) from e
  import jax

  if jax.process_index() == 0:
    for task, values in result["eval"].items():
      print(
        f"eval {task}: loss {values['loss']:.4f}, accuracy {values['accuracy']:.3f} ({values['tokens']:.0f} tokens)"
      )
    if result.get("sample") is not None:
      print("sample:", json.dumps(gin.query_parameter("train.train.sample_prompt")), "->")
      print(result["sample"])
    print(
      f"{'preempted' if result['preempted'] else 'stopped'} at step {result['step']}, train loss {result['train_loss']}"
    )
    if args.json:
      print(json.dumps({k: v for k, v in result.items()}))


def _bench_args(parser):
  parser.add_argument("--decode", action="store_true", help="time KV-cache decoding instead of train steps")
  parser.add_argument("--compare_hf", action="store_true", help="with --decode: also HF generate on the same weights")
  parser.add_argument("--decode_batch_sizes", default="1,8")
  parser.add_argument("--prompt_length", type=int, default=64)
  parser.add_argument("--new_tokens", type=int, default=128)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--length", type=int, default=512)
  parser.add_argument("--json", action="store_true")


def _bench_run(args, bindings):
  _parse_gin(args, bindings)
  if args.decode:
    from jaxformer.infer import bench as decode

    sizes = [int(b) for b in args.decode_batch_sizes.split(",") if b]
    r = config_lib.call_configurable(decode.decode_bench, sizes, args.prompt_length, args.new_tokens, args.compare_hf)
    print(
      f"greedy decoding on {r['device_kind']}, prompt {r['prompt_length']} tokens, {r['new_tokens']} new "
      "tokens, float32, generated tokens/s:"
    )
    for batch in sizes:
      hf = f", HF generate {r['hf'][batch]:,.0f}" if batch in r["hf"] else ""
      print(f"  batch {batch}: jaxformer {r['jaxformer'][batch]:,.0f}{hf}")
    if args.json:
      print(json.dumps(r))
    return
  from jaxformer.train import bench, mfu

  r = config_lib.call_configurable(bench.bench, args.steps, args.batch_size, args.length)
  print(
    f"{r['devices']} x {r['device_kind']}, batch {r['batch_size']} x {r['length']}, {r['steps']} steps "
    f"(after {r['warmup_seconds']:.1f} s of compile and warm-up)"
  )
  print(
    f"step time {r['step_seconds'] * 1000:.1f} ms, {r['tokens_per_second']:,.0f} tokens/s, "
    f"{r['model_tflops_per_second_6n']:.3f} model TFLOP/s (6N)"
  )
  print(f"MFU: 6N {mfu.format_mfu(r['mfu_6n'])}, 6N + causal attention {mfu.format_mfu(r['mfu_6n_attention'])}")
  print(f"peak memory {r['peak_memory_bytes'] / 2**20:,.0f} MiB ({r['peak_memory_source']})")
  if args.json:
    print(json.dumps(r))


def _parse_run_gin(model_dir: str, args, bindings):
  """Parses MODEL_DIR/config.gin (what the run used) plus any --gin_file/--gin. overrides."""
  from jaxformer import fs

  path = os.path.join(fs.resolve(model_dir), "config.gin")
  if not fs.exists(path):
    raise config_lib.GinConfigError(
      f"--model_dir={model_dir}: {path} is missing; is this a jaxformer run "
      "(`jaxformer train`) or an import (`jaxformer import`)?"
    )
  if fs.is_remote(path):  # gin reads local files only
    import tempfile

    with fs.open(path) as f, tempfile.NamedTemporaryFile("w", suffix=".gin", delete=False) as local:
      local.write(f.read())
    path = local.name
  args.gin_file = [path] + args.gin_file
  _parse_gin(args, bindings)


def _trained_as_prefix_lm() -> bool:
  try:
    rates = gin.query_parameter("%OBJECTIVE_RATES") or {}
  except (ValueError, KeyError):
    rates = {}
  try:
    bidirectional_span = gin.query_parameter("objectives.SpanCorruption.bidirectional_prefix")
  except (ValueError, KeyError):
    bidirectional_span = False
  return bool(rates.get("prefix_lm", 0)) or bool(bidirectional_span)


def _load(args, bindings):
  from jaxformer import distributed

  distributed.initialize()  # every worker of a TPU slice runs the same eval (tpu/launch.sh); a no-op here
  _parse_run_gin(args.model_dir, args, bindings)
  from jaxformer.infer.run import load_run
  from jaxformer.model import ModelConfig

  config = config_lib.call_configurable(ModelConfig)
  return _user_errors(load_run, args.model_dir, config, args.step, _trained_as_prefix_lm())


def _sample_args(parser):
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--prompt", required=True)
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--num_samples", type=int, default=1)
  parser.add_argument("--max_new_tokens", type=int, default=64)
  parser.add_argument("--temperature", type=float, default=0.0)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--suffix", default=None, help="infill between --prompt and --suffix (CodeGen2 format)")
  parser.add_argument("--top_k", type=int, default=0)
  parser.add_argument("--top_p", type=float, default=1.0)
  parser.add_argument("--stop", action="append", default=[], help="stop sequence (repeatable)")
  parser.add_argument(
    "--prefix_lm",
    choices=("auto", "yes", "no"),
    default="auto",
    help="prompt as a bidirectional prefix (auto: if the run trained prefix-LM)",
  )
  parser.add_argument("--json", action="store_true", help="last line: one JSON object with the completion(s)")


def _sample_run(args, bindings):
  run = _load(args, bindings)
  from jaxformer import sharding
  from jaxformer.infer.sample import cut_at_stop_sequences, generate, prompt_ids

  prefix_lm = run.prefix_lm if args.prefix_lm == "auto" else args.prefix_lm == "yes"
  if args.suffix is not None and not hasattr(run.vocabulary, "mask_id"):
    raise config_lib.GinConfigError(f"{run.vocabulary_path} has no <mask_k>/<sep>/<eom>: infill needs them")
  ids, stops = prompt_ids(run.vocabulary, args.prompt, args.suffix)
  if len(ids) + 1 + args.max_new_tokens > run.config.max_length:
    raise config_lib.GinConfigError(
      f"prompt ({len(ids)} tokens) + --max_new_tokens={args.max_new_tokens} exceed the "
      f"model's context ModelConfig.max_length={run.config.max_length}"
    )
  with sharding.activation_sharding(run.mesh, run.rules):
    outs = generate(
      run.model,
      run.params,
      [ids] * args.num_samples,
      args.max_new_tokens,
      stop_ids=stops,
      temperature=args.temperature,
      seed=args.seed,
      prefix_lm=prefix_lm,
      top_k=args.top_k,
      top_p=args.top_p,
    )
  completions = [cut_at_stop_sequences(run.vocabulary.decode(o), args.stop) for o in outs]
  for i, text in enumerate(completions):
    if args.num_samples > 1:
      print(f"--- sample {i} ---")
    print(args.prompt + text + (args.suffix or ""))
  if args.json:
    record = {"step": run.step, "prompt": args.prompt}
    record.update({"completion": completions[0]} if args.num_samples == 1 else {"completions": completions})
    record["tokens"] = outs[0] if args.num_samples == 1 else outs
    print(json.dumps(record))


def _export_args(parser):
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--output", required=True, help="the HuggingFace directory to write (must not exist)")
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
  parser.add_argument("--qkv_groups", type=int, default=4, help="4 for upstream transformers")
  parser.add_argument("--max_shard_bytes", type=int, default=2 << 30)


def _export_run(args, bindings):
  _parse_run_gin(args.model_dir, args, bindings)
  import warnings

  from jaxformer import checkpoint, fs
  from jaxformer.export import to_hf
  from jaxformer.model import ModelConfig

  config = config_lib.call_configurable(ModelConfig)
  vocabulary = checkpoint.find_vocabulary(fs.resolve(args.model_dir))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", to_hf.PrefixLMWarning)
    path, step = _user_errors(
      to_hf.export_checkpoint,
      fs.resolve(args.model_dir),
      config,
      args.output,
      vocabulary,
      step=args.step,
      dtype=args.dtype,
      qkv_groups=args.qkv_groups,
      max_shard_bytes=args.max_shard_bytes,
      prefix_lm=_trained_as_prefix_lm(),
    )
  for warning in caught:
    if issubclass(warning.category, to_hf.PrefixLMWarning):
      print(f"jaxformer: warning: {warning.message}", file=sys.stderr)
  print(f"exported step {step} of {args.model_dir} to {path} ({args.dtype}, QKV in {args.qkv_groups} groups)")


def _import_args(parser):
  parser.add_argument("--hf", required=True, help="a HuggingFace CodeGen directory")
  parser.add_argument("--model_dir", required=True)
  parser.add_argument(
    "--qkv_groups",
    type=int,
    default=None,
    help="QKV grouping of the source: 4 (upstream) or 8 (CodeGen2 remote code); default: detect",
  )


def _import_run(args, bindings):
  _parse_gin(args, bindings)
  from jaxformer.export import from_hf

  result = _user_errors(from_hf.import_hf, args.hf, args.model_dir, args.qkv_groups)
  c = result["config"]
  print(
    f"imported {args.hf} ({c.num_layers} layers, d_model {c.d_model}, {c.num_heads} heads, vocab "
    f"{c.vocab_size}, QKV in {result['qkv_groups']} groups) into {result['model_dir']}"
  )
  print(f"vocabulary: {result['vocabulary'] or 'none found (no spm.model or tokenizer.json)'}")


def _eval_common(parser, needs_model=True):
  parser.add_argument("--model_dir", required=needs_model, default=None)
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument("--output", default=None, help="per-item results as JSONL (default: MODEL_DIR/evals/)")
  parser.add_argument("--limit", type=int, default=None, help="only the first N problems (a quick look)")
  parser.add_argument("--timeout", type=float, default=10.0, help="seconds per program in the sandbox")
  parser.add_argument("--json", action="store_true")


def _humaneval_args(parser):
  _eval_common(parser, needs_model=False)
  parser.add_argument("--completions", default=None, help="score these {task_id, completion} JSONL lines instead")
  parser.add_argument("--num_samples", type=int, default=1)
  parser.add_argument("--k", default="1,10,100")
  parser.add_argument("--temperature", type=float, default=None, help="default 0 for one sample, else 0.8")
  parser.add_argument("--top_p", type=float, default=0.95)
  parser.add_argument("--max_new_tokens", type=int, default=256)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--seed", type=int, default=0)


def _results_path(args, name):
  if args.output:
    return args.output
  from jaxformer import fs

  folder = os.path.join(fs.resolve(args.model_dir), "evals") if args.model_dir else "."
  fs.makedirs(folder)
  return os.path.join(folder, name)


def _humaneval_run(args, bindings):
  from jaxformer.evals import humaneval, sandbox

  problems = humaneval.read_problems()
  if args.limit:
    problems = dict(list(problems.items())[: args.limit])
  ks = [int(k) for k in args.k.split(",") if k]
  if args.completions:
    _parse_gin(args, bindings)
    samples = _user_errors(humaneval.read_jsonl, args.completions)
    if args.limit:
      samples = [s for s in samples if s.get("task_id") in problems]
  else:
    if not args.model_dir:
      raise config_lib.GinConfigError("eval humaneval needs --model_dir (to generate) or --completions (to score)")
    run = _load(args, bindings)
    from jaxformer import sharding
    from jaxformer.infer.sample import complete

    temperature = args.temperature if args.temperature is not None else (0.0 if args.num_samples == 1 else 0.8)
    prompts = [p["prompt"] for p in problems.values() for _ in range(args.num_samples)]
    with sharding.activation_sharding(run.mesh, run.rules):
      texts = complete(
        run.model,
        run.params,
        run.vocabulary,
        prompts,
        args.max_new_tokens,
        batch_size=args.batch_size,
        stop_sequences=humaneval.STOP_SEQUENCES,
        temperature=temperature,
        top_p=args.top_p if temperature > 0 else 1.0,
        seed=args.seed,
      )
    task_ids = [t for t in problems for _ in range(args.num_samples)]
    samples = [{"task_id": t, "completion": c} for t, c in zip(task_ids, texts)]
  limits = sandbox.Limits(wall_seconds=args.timeout, cpu_seconds=int(args.timeout) + 1)
  scored, scores = _user_errors(humaneval.score, samples, problems, ks, limits)
  path = _results_path(args, "humaneval_results.jsonl")
  humaneval.write_jsonl(path, scored)
  statuses = __import__("collections").Counter(s["status"] for s in scored)
  print(
    f"HumanEval: {len(scored)} samples over {len({s['task_id'] for s in scored})} problems "
    f"({dict(statuses)}); sandbox namespaces: {sandbox.namespaces_available()}"
  )
  print("  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
  print(f"per-sample results: {path}")
  if args.json:
    print(json.dumps({**scores, "samples": len(scored), "results": path}))


def _infill_args(parser):
  _eval_common(parser)
  parser.add_argument("--max_new_tokens", type=int, default=64)
  parser.add_argument("--batch_size", type=int, default=16)


def _infill_run(args, bindings):
  run = _load(args, bindings)
  from jaxformer import sharding
  from jaxformer.evals import humaneval, sandbox
  from jaxformer.infer.sample import complete

  if not hasattr(run.vocabulary, "mask_id"):
    raise config_lib.GinConfigError(f"{run.vocabulary_path} has no <mask_k>/<sep>/<eom>: infill needs them")
  problems = humaneval.read_problems()
  if args.limit:
    problems = dict(list(problems.items())[: args.limit])
  tasks = humaneval.single_line_infill_tasks(problems)
  with sharding.activation_sharding(run.mesh, run.rules):
    texts = complete(
      run.model,
      run.params,
      run.vocabulary,
      [t["prefix"] for t in tasks],
      args.max_new_tokens,
      suffixes=[t["suffix"] for t in tasks],
      batch_size=args.batch_size,
    )
  limits = sandbox.Limits(wall_seconds=args.timeout, cpu_seconds=int(args.timeout) + 1)
  rows, scores = humaneval.score_infill(tasks, texts, problems, limits)
  path = _results_path(args, "infill_results.jsonl")
  humaneval.write_jsonl(path, rows)
  print(
    f"single-line infill: {scores['tasks']} tasks from {len(problems)} problems: pass@1 {scores['pass@1']:.4f}, "
    f"exact match {scores['exact_match']:.4f}"
  )
  print(f"per-task results: {path}")
  if args.json:
    print(json.dumps({**scores, "results": path}))


def _loss_args(parser):
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument("--json", action="store_true")


def _loss_run(args, bindings):
  run = _load(args, bindings)
  import tasks
  from jaxformer import sharding
  from jaxformer.data import pipeline
  from jaxformer.train import loop

  data_config = config_lib.call_configurable(pipeline.DataConfig)
  _user_errors(tasks.ensure_registered, data_config.mixture_or_task_name)
  batch_sharding = sharding.logical_to_sharding(("batch", "length"), run.mesh, run.rules)
  results = loop.evaluate(run.params, run.model, data_config, batch_sharding, run.rules, run.mesh)
  for task, values in results.items():
    print(
      f"{task}: loss {values['loss']:.4f}, accuracy {values['accuracy']:.3f} ({values['tokens']:.0f} tokens) "
      f"at step {run.step}"
    )
  if args.json:
    print(json.dumps({"step": run.step, **results}))


def _sweep_args(parser):
  parser.add_argument("--sweep_file", required=True, help="a gin file binding sweep.define (gin/sweeps/*.gin)")
  parser.add_argument("--output_dir", required=True, help="one folder per run, and results.{csv,md,png}")
  parser.add_argument("--dry_run", action="store_true", help="print each run's name, bindings and commands")
  parser.add_argument(
    "--launcher",
    choices=("local", "tpu"),
    default="local",
    help="local: one after another here; tpu: on the slice tpu/'s settings name",
  )
  parser.add_argument(
    "--tpu_flag",
    action="append",
    default=[],
    help="with --launcher=tpu: a flag for tpu/launch.sh, e.g. --tpu_flag=--name=my-v4 (repeatable)",
  )
  parser.add_argument("--collect_only", action="store_true", help="only gather finished runs into results.*")


def _sweep_run(args, bindings):
  args.gin_file = [args.sweep_file] + args.gin_file
  _parse_gin(args, bindings)
  from jaxformer import sweep

  definition = config_lib.call_configurable(sweep.define)
  runs = _user_errors(sweep.expand, definition)
  launcher = sweep.TpuLauncher(args.tpu_flag) if args.launcher == "tpu" else sweep.LocalLauncher()
  output_dir = args.output_dir if "://" in args.output_dir else os.path.abspath(os.path.expanduser(args.output_dir))
  print(f"sweep {args.sweep_file}: {len(runs)} runs into {output_dir}", flush=True)
  summary = {"interrupted": False, "failed": []}
  if not args.collect_only:
    summary = sweep.run_sweep(definition, output_dir, launcher, dry_run=args.dry_run)
  if args.dry_run:
    return
  results = _user_errors(sweep.collect, definition, output_dir)
  print(f"{len(results['rows'])} of {len(runs)} runs finished; wrote " + ", ".join(results["files"]))
  for c in results["comparisons"]:
    verdict = {None: "not run", True: "agrees", False: "disagrees"}[c["agrees"]]
    print(f"  {c['lesson']}: {c['metric']} {c['lower']} < {c['than']}: {verdict}")
  if summary["interrupted"]:
    raise config_lib.GinConfigError("sweep interrupted; run the same command again to resume")
  if summary["failed"]:
    raise config_lib.GinConfigError(f"runs failed: {', '.join(summary['failed'])} (their sweep.log says why)")


def _user_errors(fn, *args, **kwargs):
  """Runs fn; missing files and bad values become one clear message (GinConfigError)."""
  try:
    return fn(*args, **kwargs)
  except (FileNotFoundError, ValueError) as e:
    if isinstance(e, config_lib.GinConfigError):
      raise
    raise config_lib.GinConfigError(str(e).split("\n  In call to configurable")[0]) from e


VERBS = {
  "plan": ("parameter count, FLOPs per token and state bytes of a model config", _plan_args, _plan_run),
  "train": ("train (or resume) a model: checkpoints, eval, metrics in MODEL_DIR", _train_args, _train_run),
  "bench": ("train-step speed, MFU and peak memory on synthetic batches", _bench_args, _bench_run),
  "sample": ("generate from a checkpoint", _sample_args, _sample_run),
  "export": ("write a HuggingFace CodeGenForCausalLM directory from a checkpoint", _export_args, _export_run),
  "import": ("make a jaxformer run from a HuggingFace CodeGen directory", _import_args, _import_run),
  "eval": (
    "evaluate a checkpoint",
    {
      "humaneval": ("HumanEval pass@k, executed in the sandbox", _humaneval_args, _humaneval_run),
      "infill": ("HumanEval single-line infilling: pass@1 and exact match", _infill_args, _infill_run),
      "loss": ("held-out loss per task (the trainer's eval)", _loss_args, _loss_run),
    },
  ),
  "sweep": ("run a gin sweep (grid or named variants) and tabulate its eval losses", _sweep_args, _sweep_run),
  "data": (
    "build, tokenize, inspect and time the data",
    {
      "build-local": (
        "gather this machine's code and docs into a corpus",
        _data_build_local_args,
        _data_build_local_run,
      ),
      "train-tokenizer": (
        "train the SentencePiece BPE with CodeGen2 sentinels",
        _data_tokenizer_args,
        _data_tokenizer_run,
      ),
      "convert": ("JSONL/Parquet corpora -> TFRecord shards", _data_convert_args, _data_convert_run),
      "show": ("decoded training examples with their loss and prefix masks", _data_show_args, _data_show_run),
      "bench": ("tokens/second of the whole data pipeline", _data_bench_args, _data_bench_run),
    },
  ),
}


def _add_verbs(sub, verbs, dest_prefix=""):
  for name, spec in verbs.items():
    help_text = spec[0]
    verb_parser = sub.add_parser(name, help=help_text, description=help_text)
    if isinstance(spec[1], dict):
      inner = verb_parser.add_subparsers(dest=f"{dest_prefix}{name}_verb", required=True, metavar="VERB")
      _add_verbs(inner, spec[1], dest_prefix=f"{dest_prefix}{name}_")
    else:
      _add_gin_flags(verb_parser)
      spec[1](verb_parser)
      verb_parser.set_defaults(run=spec[2])


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="jaxformer", description=__doc__.splitlines()[0])
  _add_verbs(parser.add_subparsers(dest="verb", required=True, metavar="VERB"), VERBS)
  return parser


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  _choose_platform()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  _import_tensorflow_quietly()
  try:
    rest, bindings = split_gin_bindings(argv)
    args = build_parser().parse_args(rest)
    args.run(args, bindings)
  except config_lib.GinConfigError as e:
    print(f"jaxformer: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
