"""`jaxformer export` and `jaxformer import`: runs to and from HuggingFace directories of every family."""

import sys
import warnings

from jaxformer import config as config_lib
from jaxformer.cli import common
from jaxformer.errors import UserError


def export_args(parser):
  parser.add_argument("--model_dir", required=True)
  parser.add_argument(
    "--output_dir", default=None, help="the HuggingFace directory to write (required; must not exist)"
  )
  common.add_renamed(parser, "--output", "--output_dir")
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
  parser.add_argument("--qkv_groups", type=int, default=4, help="4 for upstream transformers")
  parser.add_argument("--max_shard_bytes", type=int, default=2 << 30)
  lora = parser.add_mutually_exclusive_group()
  lora.add_argument(
    "--merge", action="store_true", help="a LoRA run: fold the adapters into the weights, a plain HF directory"
  )
  lora.add_argument("--adapters_only", action="store_true", help="a LoRA run: PEFT's adapter directory for the HF base")
  parser.add_argument(
    "--base_model",
    default=None,
    help="with --adapters_only (required): the base's HF directory or hub name, for base_model_name_or_path",
  )


def export_run(args, bindings):
  common.require_flag(args, "--output_dir")
  common.parse_run_gin(args.model_dir, args, bindings)

  from jaxformer import checkpoint, fs, models
  from jaxformer.export import to_hf

  config = config_lib.call_configurable(models.bound)
  vocabulary = checkpoint.find_vocabulary(fs.resolve(args.model_dir))
  if vocabulary is None:
    raise UserError(
      f"{fs.resolve(args.model_dir)}/vocabulary/ holds no spm.model or tokenizer.json (the run's tokenizer copy): "
      "the HF directory would have no tokenizer; put the run's tokenizer back there first"
    )
  if config.lora is not None or args.merge or args.adapters_only:
    return _export_lora(args, config, vocabulary)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", to_hf.PrefixLMWarning)
    path, step = common.user_errors(
      to_hf.export_checkpoint,
      fs.resolve(args.model_dir),
      config,
      args.output_dir,
      vocabulary,
      step=args.step,
      dtype=args.dtype,
      qkv_groups=args.qkv_groups,
      max_shard_bytes=args.max_shard_bytes,
      prefix_lm=common.trained_as_prefix_lm(),
    )
  for warning in caught:
    if issubclass(warning.category, to_hf.PrefixLMWarning):
      print(f"jaxformer: warning: {warning.message}", file=sys.stderr)
  layout = f", QKV in {args.qkv_groups} groups" if config.family == "codegen" else ""
  architecture = config.hf.hf_config(config, 0, 0, 0, args.dtype, groups=args.qkv_groups)["architectures"][0]
  print(f"exported step {step} of {args.model_dir} to {path} ({architecture}, {args.dtype}{layout})")


def _export_lora(args, config, vocabulary):
  """export --merge (a plain HF directory) or --adapters_only (PEFT's) of a LoRA run."""
  from jaxformer import fs, sharding
  from jaxformer.export import lora as lora_export
  from jaxformer.export import to_hf
  from jaxformer.infer.run import restore_run_params

  if config.lora is None:
    raise UserError(f"{args.model_dir} is not a LoRA run: --merge and --adapters_only apply to adapters only")
  if not (args.merge or args.adapters_only):
    raise UserError(f"{args.model_dir} is a LoRA run: pass --merge (a plain HF model) or --adapters_only (PEFT)")
  model_dir = fs.resolve(args.model_dir)
  mesh, rules = sharding.make_mesh(), sharding.logical_axis_rules()
  params, step = common.user_errors(restore_run_params, model_dir, config, mesh, rules, args.step, as_numpy=True)
  options = {"groups": args.qkv_groups} if config.family == "codegen" else {}
  if args.adapters_only:
    if not args.base_model:
      raise UserError(
        "--adapters_only needs --base_model: the HF directory (or hub name) of the base that PEFT loads the "
        "adapters onto (`jaxformer export` the base run to make one)"
      )
    base = args.base_model
    path = common.user_errors(
      lora_export.export_adapters, params, config, args.output_dir, base, dtype=args.dtype, qkv_groups=args.qkv_groups
    )
    kind = f"PEFT LoRA adapters (r={config.lora.rank}, {', '.join(lora_export.target_modules(config, options))})"
  else:
    plain_params, plain = lora_export.merged(params, config)
    path = common.user_errors(
      to_hf.export_in_memory,
      plain_params,
      plain,
      args.output_dir,
      vocabulary,
      dtype=args.dtype,
      qkv_groups=args.qkv_groups,
      max_shard_bytes=args.max_shard_bytes,
    )
    kind = plain.hf.hf_config(plain, 0, 0, 0, args.dtype, **options)["architectures"][0] + ", adapters merged"
  print(f"exported step {step} of {args.model_dir} to {path} ({kind}, {args.dtype})")


def import_args(parser):
  parser.add_argument("--hf", required=True, help="a HuggingFace model directory (CodeGen, Llama, Qwen2, StarCoder2)")
  parser.add_argument("--model_dir", required=True)
  parser.add_argument(
    "--qkv_groups",
    type=int,
    default=None,
    help="QKV grouping of the source: 4 (upstream) or 8 (CodeGen2 remote code); default: read from its code",
  )
  parser.add_argument(
    "--dtype", default="float32", choices=("float32", "bfloat16"), help="what the run computes in (HF: float32)"
  )


def import_run(args, bindings):
  common.parse_gin(args, bindings)
  from jaxformer.export import from_hf

  result = common.user_errors(from_hf.import_hf, args.hf, args.model_dir, args.qkv_groups, args.dtype)
  c = result["config"]
  groups = result["options"].get("groups")
  layout = f", QKV in {groups} groups" if groups else f", {c.kv_heads} kv heads"
  print(
    f"imported {args.hf} ({c.family}: {c.num_layers} layers, d_model {c.d_model}, {c.num_heads} heads, vocab "
    f"{c.vocab_size}{layout}, {c.dtype}) into {result['model_dir']}"
  )
  print(f"vocabulary: {result['vocabulary'] or 'none found (no spm.model or tokenizer.json)'}")
