"""`jaxformer data ...`: build, tokenize, convert, inspect, measure and time the data."""

import argparse
import functools
import json
import os

from jaxformer import config as config_lib
from jaxformer.cli import common


def build_local_args(parser):
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--max_bytes", type=int, default=None, help="bytes of documents kept (default 48 MiB)")
  parser.add_argument("--roots", default=None, help="comma-separated folders to read (default: this machine's)")
  parser.add_argument("--overwrite", action="store_true", help="replace an earlier output (default: refuse)")


def build_local_run(args, bindings):
  common.parse_gin(args, bindings)
  from jaxformer.data.ingest import corpus

  options = corpus.CorpusOptions()
  if args.max_bytes:
    options = corpus.dataclasses.replace(options, max_bytes=args.max_bytes)
  roots = args.roots.split(",") if args.roots else None
  stats = common.user_errors(
    corpus.build_local_corpus, args.output_dir, roots=roots, options=options, overwrite=args.overwrite
  )
  for kind, splits in stats["classes"].items():
    for split, s in splits.items():
      top = ", ".join(f"{lang} {v['documents']}" for lang, v in list(s["languages"].items())[:6])
      print(f"{kind} {split:10s} {s['documents']:6d} documents {s['bytes'] / 2**20:7.2f} MiB  ({top})")
  print("skipped:", ", ".join(f"{k} {v}" for k, v in stats["skipped"].items()) or "none")
  print(f"wrote {args.output_dir}/stats.json")


def tokenizer_args(parser):
  parser.add_argument("--corpus_dir", required=True)
  parser.add_argument("--output", default=None, help="the .model path (default CORPUS_DIR/spm.model)")
  parser.add_argument("--vocab_size", type=int, default=None)
  parser.add_argument("--num_masks", type=int, default=None, help="<mask_k> sentinels, at least 64")
  parser.add_argument("--overwrite", action="store_true", help="replace an earlier output (default: refuse)")
  parser.add_argument(
    "--fim_spelling",
    choices=("starcoder", "santacoder", "qwen", "none"),
    default=None,
    help="FIM sentinels to add (default: objectives.FIM.spelling, StarCoder's <fim_prefix> ...)",
  )


def tokenizer_run(args, bindings):
  common.parse_gin(args, bindings)
  from jaxformer.data.ingest import tokenizer
  from jaxformer.data.pipeline import vocabulary

  kwargs = {k: v for k, v in (("vocab_size", args.vocab_size), ("num_masks", args.num_masks)) if v}
  if args.fim_spelling:
    kwargs["fim_spelling"] = "" if args.fim_spelling == "none" else args.fim_spelling
  output = args.output or os.path.join(args.corpus_dir, "spm.model")
  path = common.user_errors(tokenizer.train_tokenizer, args.corpus_dir, output, overwrite=args.overwrite, **kwargs)
  vocab = vocabulary.CodeGenVocabulary(path)
  special = vocab.special
  fim = [t for t in special.tokens if t.strip("<|>").startswith("fim")]
  print(
    f"wrote {path}: {vocab.vocab_size} pieces, {special.num_masks} masks, <sep>={special.sep} "
    f"<eom>={special.eom} <mask_1>={special.mask_id(1)}"
    + (f", FIM {' '.join(f'{t}={special.id_of(t)}' for t in fim)}" if fim else "")
  )


def convert_args(parser):
  from jaxformer.data.ingest import beam_options
  from jaxformer.data.ingest.decontaminate import Decontamination
  from jaxformer.data.ingest.filters import Filters
  from jaxformer.data.ingest.minhash import NearDedup

  defaults, near, overlap = Filters(), NearDedup(), Decontamination()
  parser.add_argument("--input", required=True, help="file pattern of .jsonl, .jsonl.gz or .parquet (local or gs://)")
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--text_field", default="text")
  parser.add_argument(
    "--language_field", default=None, help="field/column naming each document's language: one folder per language"
  )
  parser.add_argument("--num_shards", type=int, default=8, help="train shards per folder (validation: a quarter)")
  parser.add_argument(
    "--validation_percent", type=int, default=1, help="share of documents (by content hash; default 1)"
  )
  filters = parser.add_argument_group("filters (0 turns one off)")
  filters.add_argument(
    "--max_file_bytes", type=int, default=defaults.max_file_bytes, help="UTF-8 bytes of a document (default 1000000)"
  )
  filters.add_argument(
    "--max_line_chars", type=int, default=defaults.max_line_chars, help="characters of its longest line (default 1000)"
  )
  filters.add_argument(
    "--max_mean_line_chars", type=float, default=defaults.max_mean_line_chars, help="characters per line (default 100)"
  )
  filters.add_argument(
    "--min_alnum_fraction", type=float, default=defaults.min_alnum_fraction, help="letters and digits (default 0.25)"
  )
  quality = parser.add_argument_group("near duplicates, benchmark overlap, licences")
  quality.add_argument(
    "--near_dedup", choices=("minhash", "none"), default="minhash", help="MinHash LSH near-dedup (default) or none"
  )
  quality.add_argument("--near_dedup_threshold", type=float, default=near.threshold, help="Jaccard (default 0.7)")
  quality.add_argument("--near_dedup_num_perm", type=int, default=near.num_perm, help="permutations (default 256)")
  quality.add_argument("--near_dedup_ngram", type=int, default=near.ngram, help="words per shingle (default 5)")
  quality.add_argument(
    "--decontaminate",
    choices=("drop", "list", "none"),
    default=overlap.mode,
    help="documents sharing a word n-gram with HumanEval: drop (default), list in stats.json only, or none",
  )
  quality.add_argument("--decontaminate_ngram", type=int, default=overlap.ngram, help="words (default 10)")
  quality.add_argument(
    "--license_field", default=None, help="field/column of each record's licence(s) (e.g. max_stars_repo_licenses)"
  )
  quality.add_argument(
    "--allowed_licenses", default=None, help="comma-separated licences to keep (every licence of a record must be)"
  )
  beam_options.add_flags(parser)
  parser.add_argument("--overwrite", action="store_true", help="replace an earlier output (default: refuse)")


def convert_run(args, bindings):
  common.parse_gin(args, bindings)
  from jaxformer.data.ingest import beam_options, convert, languages
  from jaxformer.data.ingest.decontaminate import Decontamination
  from jaxformer.data.ingest.filters import Filters
  from jaxformer.data.ingest.minhash import NearDedup

  options = common.user_errors(beam_options.from_args, args)
  filters = Filters(args.max_file_bytes, args.max_line_chars, args.max_mean_line_chars, args.min_alnum_fraction)
  near_dedup = None
  if args.near_dedup == "minhash":
    near_dedup = NearDedup(args.near_dedup_threshold, args.near_dedup_num_perm, args.near_dedup_ngram)
  allowed = None if args.allowed_licenses is None else args.allowed_licenses.split(",")
  stats = common.user_errors(
    convert.convert_files,
    args.input,
    args.output_dir,
    text_field=args.text_field,
    language_field=args.language_field,
    validation_percent=args.validation_percent,
    num_shards=args.num_shards,
    filters=filters,
    overwrite=args.overwrite,
    options=options,
    license_field=args.license_field,
    allowed_licenses=allowed,
    decontamination=Decontamination(args.decontaminate, args.decontaminate_ngram),
    near_dedup=near_dedup,
  )
  print(convert.summary(stats))
  for folder, names in languages.shared_folders(stats["language_dirs"]).items():
    print(f"  note: languages {names} share the folder {folder}/ (one task in the corpus recipe)")
  shown = 0
  for reason, examples in stats["skipped_examples"].items():
    for where in examples[:2]:
      if shown < 8:
        print(f"  skipped ({reason}): {where}")
        shown += 1


def cache_args(parser):
  from jaxformer.data.ingest import beam_options

  parser.add_argument("--output_dir", required=True, help="the cache folder (bind it as CACHE_DIR to read it)")
  parser.add_argument("--tasks", default=None, help="comma-separated tasks (default: those of MIXTURE_OR_TASK_NAME)")
  parser.add_argument("--overwrite", action="store_true", help="replace a task's earlier cache (default: refuse)")
  beam_options.add_flags(parser)


def cache_run(args, bindings):
  config, _ = data_config(args, bindings)
  import gin
  import seqio

  from jaxformer import fs, tasks
  from jaxformer.data.ingest import beam_options, cache
  from jaxformer.data.pipeline.cache import leaf_tasks

  if args.tasks:
    names = [n for n in args.tasks.split(",") if n]
    for name in names:
      common.user_errors(tasks.ensure_registered, name)
    names = [t.name for name in names for t in leaf_tasks(name)]
  else:
    names = [t.name for t in leaf_tasks(config.mixture_or_task_name)]
  options = common.user_errors(beam_options.from_args, args)
  setup_fn = functools.partial(register_in_worker, gin.config_str(), tuple(names))
  report = common.user_errors(cache.cache_tasks, names, args.output_dir, setup_fn, options, args.overwrite)
  width = max(len(n) for n in names)
  for name in names:
    for split, stats in report[name].items():
      print(
        f"{name:{width}s} {split:10s} {stats['examples']:8,d} documents {stats.get('targets_tokens', 0):12,d} tokens "
        f"(longest {stats.get('targets_max_tokens', 0):,d})"
      )
  print(f"cached {len(names)} task(s) in {report['seconds']:.1f} s into {args.output_dir} (seqio {seqio.__version__})")
  where = args.output_dir if fs.is_remote(args.output_dir) else os.path.abspath(args.output_dir)
  print(f"read it in training with --gin.CACHE_DIR=\"'{where}'\"")


def register_in_worker(gin_config: str, names: tuple[str, ...]):
  """Beam's setup_fn for `data cache`: a worker process (multi-process DirectRunner, Dataflow)
  registers the tasks from the driver's gin config before seqio.beam_utils looks them up."""
  import gin
  import seqio

  from jaxformer import tasks

  if all(n in seqio.TaskRegistry.names() for n in names):
    return
  config_lib.import_configurables()  # every configurable the driver's config may bind
  with gin.unlock_config():
    gin.parse_config(gin_config)
  for name in names:
    tasks.ensure_registered(name)


def data_config(args, bindings):
  common.parse_gin(args, bindings, finalize=False)  # a run gin's MODEL_DIR may stay unbound here
  from jaxformer import tasks
  from jaxformer.data import pipeline

  config = config_lib.call_configurable(pipeline.DataConfig)
  vocabulary = common.user_errors(tasks.ensure_registered, config.mixture_or_task_name)
  return config, vocabulary


def show_args(parser):
  parser.add_argument("--num_examples", type=int, default=3)
  parser.add_argument("--split", default="train")
  parser.add_argument("--json", action="store_true", help="one JSON object per example and line")


def show_run(args, bindings):
  config, vocabulary = data_config(args, bindings)
  from jaxformer.data.reports import show

  rows = common.user_errors(show.show_examples, config, vocabulary, args.num_examples, args.split)
  for i, row in enumerate(rows):
    if args.json:
      print(json.dumps(row, ensure_ascii=False))
      continue
    print(
      f"=== example {i}: {row['objective']}, {row['num_tokens']} tokens, loss on "
      f"{sum(row['loss_mask'])}, prefix {sum(row['prefix_mask'])}, "
      f"{'restores its source' if row['restores_source'] else 'DOES NOT restore its source'} ==="
    )
    print("--- model input (special tokens shown) ---")
    print(row["inputs_text"])
    if row["prefix_text"]:
      print("--- bidirectional prefix (· = other tokens) ---")
      print(row["prefix_text"])
    print("--- tokens with loss (· = no loss) ---")
    print(row["loss_text"])


def bench_args(parser):
  parser.add_argument("--num_batches", type=int, default=50, help="batches timed (default 50)")
  common.add_renamed(parser, "--batches", "--num_batches", type=int)
  parser.add_argument("--json", action="store_true")


def bench_run(args, bindings):
  config, _ = data_config(args, bindings)
  from jaxformer.data.reports import bench

  common.check_positive("--num_batches", args.num_batches)
  report = bench.bench(config, args.num_batches)
  print(
    f"{report['batches']} batches of {report['batch_size']} x {report['length']} in {report['seconds']:.2f} s: "
    f"{report['tokens_per_second']:,.0f} tokens/s ({report['nonpad_tokens_per_second']:,.0f} non-padding, "
    f"packing fill {report['packing_fill']:.1%}), "
    f"{'from the seqio cache' if report['cached'] else 'tokenised online'}; "
    f"first batch {report['startup_seconds']:.2f} s after building the pipeline"
  )
  if args.json:
    print(json.dumps(report))


def stats_args(parser):
  parser.add_argument("--num_examples", type=int, default=400, help="unpacked examples read (default 400)")
  parser.add_argument("--num_batches", type=int, default=8, help="packed batches read for fill and rows (default 8)")
  parser.add_argument("--split", default="train")
  parser.add_argument("--json", action="store_true", help="after the table, the whole report as one JSON object")
  parser.add_argument("--output_png", default=None, help="write the histograms as a PNG here (default: no PNG)")


def stats_run(args, bindings):
  common.check_positive("--num_examples", args.num_examples)
  common.check_positive("--num_batches", args.num_batches)
  config, vocabulary = data_config(args, bindings)
  from jaxformer.data.reports import stats

  report = common.user_errors(
    stats.data_stats, config, vocabulary, args.num_examples, args.num_batches, split=args.split
  )
  print(stats.format_table(report))
  if args.output_png:
    print(f"wrote {stats.write_png(report, args.output_png)}")
  if args.json:
    print(json.dumps(report))


def instructions_args(parser):
  # The defaults of data/ingest/instructions.py's InstructionOptions, written here: --help imports no TF.
  defaults = argparse.Namespace(
    max_length=2048,
    validation_percent=5,
    prompt_field="prompt",
    completion_field="completion",
    messages_field="messages",
  )
  parser.add_argument("--input", required=True, help="file pattern of .jsonl or .jsonl.gz (local or gs://)")
  parser.add_argument("--output_dir", required=True)
  parser.add_argument(
    "--vocabulary", required=True, help="the run's tokenizer (spm.model, or a tokenizer.json with its chat template)"
  )
  parser.add_argument(
    "--max_length", type=int, default=defaults.max_length, help="prompt + completion tokens (default 2048)"
  )
  parser.add_argument(
    "--validation_percent", type=int, default=defaults.validation_percent, help="held out by content hash (5)"
  )
  parser.add_argument("--prompt_field", default=defaults.prompt_field)
  parser.add_argument("--completion_field", default=defaults.completion_field)
  parser.add_argument("--messages_field", default=defaults.messages_field)
  parser.add_argument("--overwrite", action="store_true", help="replace an earlier output (default: refuse)")


def instructions_run(args, bindings):
  common.parse_gin(args, bindings)
  from jaxformer.data.ingest import instructions

  options = instructions.InstructionOptions(
    max_length=args.max_length,
    validation_percent=args.validation_percent,
    prompt_field=args.prompt_field,
    completion_field=args.completion_field,
    messages_field=args.messages_field,
  )
  stats = common.user_errors(
    instructions.convert_instructions, args.input, args.output_dir, args.vocabulary, options, overwrite=args.overwrite
  )
  records, tokens = stats["records"], stats["tokens"]
  skipped = ", ".join(
    f"{reason} {n} (first {stats['first_skipped'][reason]})" for reason, n in stats["skipped"].items()
  )
  print(
    f"written: train {records['train']} ({tokens['train']} tokens), validation {records['validation']}; "
    f"skipped: {skipped or 'none'}; template: {stats['template']}"
  )
