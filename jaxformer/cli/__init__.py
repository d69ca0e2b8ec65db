"""`jaxformer VERB [flags]`: the one command, and the only place that parses flags.

Every verb takes the t5x gin flags: --gin_file=F (repeatable), --gin.NAME=VALUE (repeatable),
--gin_search_paths=A,B. Errors a user can act on (UserError) print as one line, exit code 2.
Each verb group lives in its own module; this one holds the table of verbs and `main`.
"""

import argparse
import glob
import os
import sys

from jaxformer.cli import common, data, evals, hf, infer, plan, quiet, sweep, tpu, train
from jaxformer.errors import UserError, one_line
from jaxformer.tensorflow_import import import_tensorflow

# name: (help, add_arguments, run) or name: (help, {sub-verb: ...}).
VERBS = {
  "plan": ("parameter count, FLOPs per token and state bytes of a model config", plan.plan_args, plan.plan_run),
  "train": ("train (or resume) a model: checkpoints, eval, metrics in MODEL_DIR", train.train_args, train.train_run),
  "bench": ("train-step speed, MFU and peak memory on synthetic batches", train.bench_args, train.bench_run),
  "sample": ("generate from a checkpoint", infer.sample_args, infer.sample_run),
  "export": (
    "write a HuggingFace directory (CodeGen, Llama, Qwen2, StarCoder2) from a checkpoint",
    hf.export_args,
    hf.export_run,
  ),
  "import": (
    "make a jaxformer run from a HuggingFace directory (CodeGen, Llama, Qwen2, StarCoder2)",
    hf.import_args,
    hf.import_run,
  ),
  "eval": (
    "evaluate a checkpoint",
    {
      "humaneval": ("HumanEval pass@k, executed in the sandbox", evals.humaneval_args, evals.humaneval_run),
      "infill": ("HumanEval-Infilling by execution: pass@1, exact match per kind", evals.infill_args, evals.infill_run),
      "loss": ("held-out loss per task (the trainer's eval)", evals.loss_args, evals.loss_run),
      "exact-match": (
        "greedy completions against a convert-instructions split",
        evals.exact_match_args,
        evals.exact_match_run,
      ),
    },
  ),
  "tpu": ("the gcloud scripts for TPU pod slices (jaxformer tpu --help)", None, None),
  "sweep": ("run a gin sweep (grid or named variants) and tabulate its eval losses", sweep.sweep_args, sweep.sweep_run),
  "data": (
    "build, tokenize, inspect, measure and time the data",
    {
      "build-local": ("gather this machine's code and docs into a corpus", data.build_local_args, data.build_local_run),
      "train-tokenizer": ("train the SentencePiece BPE with CodeGen2 masks", data.tokenizer_args, data.tokenizer_run),
      "convert": ("JSONL/Parquet corpora -> TFRecord shards", data.convert_args, data.convert_run),
      "convert-instructions": (
        "prompt/completion or chat JSONL -> token records for fine-tuning",
        data.instructions_args,
        data.instructions_run,
      ),
      "cache": ("tokenise tasks once into seqio's cache (Apache Beam)", data.cache_args, data.cache_run),
      "show": ("decoded training examples with their loss and prefix masks", data.show_args, data.show_run),
      "bench": ("tokens/second of the whole data pipeline", data.bench_args, data.bench_run),
      "stats": ("span counts and lengths, loss share and packing per objective", data.stats_args, data.stats_run),
    },
  ),
}


def _choose_platform():
  # libtpu (the tpu extra) makes jax probe for TPUs and print errors on machines without one.
  if "JAX_PLATFORMS" in os.environ:
    return
  has_tpu = glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")
  has_gpu = os.path.exists("/dev/nvidia0")
  if not has_tpu and not has_gpu:
    os.environ["JAX_PLATFORMS"] = "cpu"


def _storage_error(error: Exception) -> bool:
  """TensorFlow's file-system errors (gs:// unreachable, permission denied): the environment's, not a bug."""
  tf = sys.modules.get("tensorflow")
  return tf is not None and isinstance(error, tf.errors.OpError)


def _add_verbs(sub, verbs, dest_prefix=""):
  for name, spec in verbs.items():
    help_text = spec[0]
    verb_parser = sub.add_parser(name, help=help_text, description=help_text)
    if spec[1] is None:  # handled before argparse (main)
      continue
    if isinstance(spec[1], dict):
      inner = verb_parser.add_subparsers(dest=f"{dest_prefix}{name}_verb", required=True, metavar="VERB")
      _add_verbs(inner, spec[1], dest_prefix=f"{dest_prefix}{name}_")
    else:
      common.add_gin_flags(verb_parser)
      spec[1](verb_parser)
      verb_parser.set_defaults(run=spec[2])


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="jaxformer", description=__doc__.splitlines()[0])
  _add_verbs(parser.add_subparsers(dest="verb", required=True, metavar="VERB"), VERBS)
  return parser


def main(argv=None) -> int:
  """The console script (argv None: sys.argv) or an in-process call with explicit argv."""
  console = argv is None
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] == "tpu":  # the pod scripts take their arguments as they are (no gin flags here)
    return tpu.main(argv[1:])
  _choose_platform()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  try:
    rest, bindings = common.split_gin_bindings(argv)
    args = build_parser().parse_args(rest)  # --help ends here, before jax or TensorFlow is imported
    import_tensorflow()
    common.setup_logging(args.verbose)
    if console and not args.verbose:
      quiet.quiet_stderr()
    return args.run(args, bindings) or 0
  except UserError as e:
    print(f"jaxformer: error: {one_line(e)}", file=sys.stderr)
    return 2
  except Exception as e:
    if not _storage_error(e):
      raise
    # A bucket or file the environment does not give us (no network, no permission, no such bucket).
    print(f"jaxformer: error: {type(e).__name__}: {one_line(str(e))[:500]}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:  # before training installed its own handler (which saves, then exits 130)
    print("jaxformer: interrupted (SIGINT)", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
