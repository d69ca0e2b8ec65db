"""MinHash signatures and LSH bands: which documents of a corpus are near-copies of each other.

A document is the set of its shingles, the n-grams of its word tokens (`[A-Za-z0-9_]+`, so whitespace,
punctuation and indentation changes do not matter); two documents' Jaccard similarity is estimated
by the share of equal values in their MinHash signatures (one minimum per hash permutation), and LSH
groups documents whose signatures agree on a whole band (rows consecutive values), so only documents
that are likely similar are ever compared. The defaults are The Stack's (Kocetkov et al., 2022, as
tabulated in BigCode's "Large-scale Near-deduplication Behind BigCode", Hugging Face blog, 2023, and
bigcode-dataset's near_deduplication/minhash_deduplication.py): 256 permutations, 5-gram shingles,
Jaccard threshold 0.7. Bands and rows are chosen for the threshold as datasketch does (the split that
minimises the equally weighted false-positive and false-negative probability mass).
"""

import dataclasses
import functools
import re
import zlib

import numpy as np

WORD = re.compile(rb"[A-Za-z0-9_]+")
_MASK32 = np.uint64(0xFFFFFFFF)
_ROLL = np.uint64(0x100000001B3)  # FNV's 64-bit prime: combines the token hashes of one n-gram


@dataclasses.dataclass(frozen=True)
class NearDedup:
  """`data convert`'s near-duplicate removal (`--near_dedup=none` turns it off)."""

  threshold: float = 0.7  # estimated Jaccard similarity at or above which two documents are near-copies
  num_perm: int = 256  # MinHash permutations (signature length)
  ngram: int = 5  # word tokens per shingle
  seed: int = 42  # of the permutations: another seed gives other (equally good) hash functions

  def check(self) -> None:
    if not 0 < self.threshold <= 1:
      raise ValueError(f"--near_dedup_threshold={self.threshold} must be within (0, 1]")
    if not 2 <= self.num_perm <= 4096:
      raise ValueError(f"--near_dedup_num_perm={self.num_perm} must be within 2..4096")
    if not 1 <= self.ngram <= 1000:
      raise ValueError(f"--near_dedup_ngram={self.ngram} must be within 1..1000 (word tokens per shingle)")

  @property
  def bands(self) -> tuple[int, int]:
    return bands_and_rows(self.threshold, self.num_perm)


def ngram_hashes(text: str, n: int) -> np.ndarray:
  """The distinct 64-bit hashes of the word n-grams of text (sorted, uint64); empty when text has
  fewer than n word tokens. Each token is hashed by crc32 (stable across processes, unlike hash())."""
  tokens = WORD.findall(text.encode("utf-8", "surrogatepass"))
  if len(tokens) < n:
    return np.zeros(0, np.uint64)
  hashes = np.fromiter((zlib.crc32(t) for t in tokens), np.uint64, len(tokens))
  combined = np.zeros(len(tokens) - n + 1, np.uint64)
  with np.errstate(over="ignore"):  # wrapping uint64 arithmetic is the hash
    for i in range(n):
      combined = combined * _ROLL + hashes[i : len(tokens) - n + 1 + i]
  return np.unique(combined)


@functools.lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  a = rng.integers(1, 2**63, num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd multipliers
  b = rng.integers(0, 2**63, num_perm, dtype=np.uint64)
  return a, b


def signature(shingles: np.ndarray, num_perm: int, seed: int) -> np.ndarray | None:
  """The MinHash signature (num_perm uint32) of a set of shingle hashes; None for an empty set.

  Each permutation is a multiply-shift hash of the 32-bit folded shingle hash ((a*x + b) >> 32,
  2-universal), and the signature keeps its minimum over the shingles."""
  if not len(shingles):
    return None
  a, b = _permutations(num_perm, seed)
  folded = (shingles ^ (shingles >> np.uint64(32))) & _MASK32
  out = np.empty(num_perm, np.uint32)
  step = max(1, (1 << 22) // num_perm)  # bounded temporary memory for long documents
  with np.errstate(over="ignore"):
    for start in range(0, len(folded), step):
      chunk = ((folded[start : start + step, None] * a[None, :] + b[None, :]) >> np.uint64(32)).min(axis=0)
      out = chunk.astype(np.uint32) if start == 0 else np.minimum(out, chunk.astype(np.uint32))
  return out


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.mean(a == b))


@functools.lru_cache(maxsize=32)
def bands_and_rows(threshold: float, num_perm: int) -> tuple[int, int]:
  """(bands, rows) with bands * rows <= num_perm minimising 0.5 P(false positive) + 0.5 P(false
  negative), the probabilities integrated over the Jaccard similarity below and above threshold."""
  best, best_error = (1, num_perm), float("inf")
  s = np.linspace(0.0, 1.0, 2001)
  below, above = s <= threshold, s >= threshold
  for bands in range(1, num_perm + 1):
    for rows in range(1, num_perm // bands + 1):
      p = 1.0 - (1.0 - s**rows) ** bands  # the probability that two documents share a band
      false_positive = np.trapezoid(p[below], s[below]) if below.sum() > 1 else 0.0
      false_negative = np.trapezoid(1.0 - p[above], s[above]) if above.sum() > 1 else 0.0
      error = 0.5 * false_positive + 0.5 * false_negative
      if error < best_error - 1e-12:
        best, best_error = (bands, rows), error
  return best


def band_keys(sig: np.ndarray, bands: int, rows: int) -> list[bytes]:
  """One key per band: the band's index and its rows' values, so equal keys mean an equal band."""
  return [bytes([i % 256, i // 256]) + sig[i * rows : (i + 1) * rows].tobytes() for i in range(bands)]
