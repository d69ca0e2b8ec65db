"""Writes a synthetic Parquet code corpus for timing `jaxformer data convert` (docs/PERFORMANCE.md).

  python tools/synthetic_corpus.py --output_dir=/tmp/synthetic --files=4 --documents=40000

Each file holds documents/files rows with columns `content` (a few KB of Python- or Java-like
code that passes the default filters) and `lang` (Python or Java); duplicate_percent of the rows
repeat a document of another file, as crawled corpora do, and near_duplicate_percent repeat one with
a few of its lines rewritten (a fork or a vendored copy: estimated Jaccard about 0.8-0.95 at 5-gram
shingles). Deterministic (seeded).
"""

import argparse
import os
import random

import pyarrow as pa
import pyarrow.parquet as pq

WORDS = "alpha beta gamma delta value index count total result item node left right size name data".split()


def _python(rng: random.Random, i: int) -> str:
  lines = [f"def handle_{i}_{rng.choice(WORDS)}(items, limit={rng.randint(1, 99)}):"]
  for _ in range(rng.randint(40, 120)):
    a, b = rng.sample(WORDS, 2)
    lines.append(f"    {a}_{rng.randint(0, 9)} = {b} + {rng.randint(0, 999)}  # {rng.choice(WORDS)}")
  return "\n".join(lines + ["    return items\n"])


def _java(rng: random.Random, i: int) -> str:
  lines = [f"public class Handler{i} {{", f"  int {rng.choice(WORDS)}(int x) {{"]
  for _ in range(rng.randint(40, 120)):
    a, b = rng.sample(WORDS, 2)
    lines.append(f"    int {a}{rng.randint(0, 9)} = {b}.size() * {rng.randint(0, 999)};")
  return "\n".join(lines + ["    return x;", "  }", "}\n"])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--files", type=int, default=4)
  parser.add_argument("--documents", type=int, default=40_000, help="rows in all files together")
  parser.add_argument("--duplicate_percent", type=int, default=5)
  parser.add_argument("--near_duplicate_percent", type=int, default=5)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  os.makedirs(args.output_dir, exist_ok=True)
  rng = random.Random(args.seed)
  per_file = args.documents // args.files
  earlier = []
  total_bytes = 0
  for f in range(args.files):
    texts, langs = [], []
    for r in range(per_file):
      draw = rng.randrange(100)
      if earlier and draw < args.duplicate_percent:
        text, lang = rng.choice(earlier)
      elif earlier and draw < args.duplicate_percent + args.near_duplicate_percent:
        text, lang = rng.choice(earlier)
        lines = text.split("\n")
        for _ in range(2):
          lines[rng.randrange(1, len(lines) - 1)] = f"    changed_{rng.randint(0, 10**6)} = 0;"
        text = "\n".join(lines)
      else:
        lang = rng.choice(("Python", "Java"))
        text = (_python if lang == "Python" else _java)(rng, f * per_file + r)
      texts.append(text)
      langs.append(lang)
      total_bytes += len(text)
    earlier += list(zip(texts[:200], langs[:200]))
    path = os.path.join(args.output_dir, f"part-{f:05d}.parquet")
    pq.write_table(pa.table({"content": texts, "lang": langs}), path, row_group_size=4096)
  print(f"wrote {args.files} files, {per_file * args.files} documents, {total_bytes / 2**20:.1f} MiB of text")


if __name__ == "__main__":
  main()
