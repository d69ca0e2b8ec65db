"""The near-duplicate stages of `data convert` (jaxformer/data/ingest/minhash.py says what is computed).

  documents (digest -> copies, (where, text, language, licences))
    -> signature per document (documents with fewer word tokens than a shingle are left alone)
    -> one (language, band) key per band -> group -> per key, the representative: the member with the
       smallest `where` (the group is streamed twice, one member at a time)
    -> candidate pairs (member, representative), each once -> verified: estimated Jaccard >= threshold
    -> per removed member, the smallest verified representative -> documents without the removed

A document is removed when some near-copy with a smaller `where` shares a band with it and passes the
threshold, so of a chain of near-copies the first (by `where`) is always kept. Every choice keys on
content and `where`, never on arrival order: the output is the same on one worker or many. No step
gathers all pairs or a whole cluster into one element; only the grouped streams scale with a bucket.
"""

import apache_beam as beam

from jaxformer.data.ingest import minhash
from jaxformer.data.ingest.records import natural_key as _natural_key

EXAMPLE_PAIRS = 20  # (removed, kept) pairs stats.json keeps for inspection (near_duplicate_pairs)


class Sign(beam.DoFn):
  """(digest, (copies, document)) -> (digest, (where, language, signature)); too short: tagged 'short'."""

  def __init__(self, settings: minhash.NearDedup):
    self.settings = settings

  def process(self, item):
    digest, (_, (where, text, language, _licences)) = item
    shingles = minhash.ngram_hashes(text, self.settings.ngram)
    sig = minhash.signature(shingles, self.settings.num_perm, self.settings.seed)
    if sig is None:
      yield beam.pvalue.TaggedOutput("short", language)
      return
    yield digest, (where, language, sig)


def _bands(item, bands, rows):
  digest, (where, language, _) = item
  for key in minhash.band_keys(item[1][2], bands, rows):
    yield (language, key), (where, digest)


def _candidates(keyed):
  """Per band key: (member digest, (member where, representative where, representative digest)) for
  each member other than the representative, the member with the smallest natural `where` (then
  digest). The group is read twice, holding one member at a time: Beam's grouped values are
  re-iterable, and on Dataflow a large group is paged in from the shuffle, not held in memory."""
  _, members = keyed
  representative, smallest = None, None
  for where, digest in members:
    key = (_natural_key(where), digest)
    if smallest is None or key < smallest:
      representative, smallest = (where, digest), key
  rep_where, rep_digest = representative
  for where, digest in members:
    if digest != rep_digest:
      yield digest, (where, rep_where, rep_digest)


def _join(label, one, many):
  """(key, iterable of ('one', value) and ('many', value)): a join of a PCollection with at most one
  value per key and one with many, as one GroupByKey whose group a consumer reads twice (first for
  the one value, then streaming the many). beam.CoGroupByKey would collect each side into a list."""
  tagged = (
    one | f"{label}TagOne" >> beam.MapTuple(lambda key, value: (key, ("one", value))),
    many | f"{label}TagMany" >> beam.MapTuple(lambda key, value: (key, ("many", value))),
  )
  return tagged | f"{label}Flatten" >> beam.Flatten() | f"{label}Group" >> beam.GroupByKey()


def _the_one(tagged):
  return next((value for tag, value in tagged if tag == "one"), None)


def _with_member_signature(keyed):
  """Per member: (representative digest, (member digest, member where, rep where, member signature))."""
  digest, tagged = keyed
  signed = _the_one(tagged)
  if signed is None:
    return
  for tag, value in tagged:
    if tag == "many":
      _, rep_where, rep_digest = value
      yield rep_digest, (digest, value[0], rep_where, signed[2])


def _verified(keyed, threshold):
  """Per representative: (member digest, (jaccard, member where, rep where)) for each member at or above
  the threshold."""
  _, tagged = keyed
  signed = _the_one(tagged)
  if signed is None:
    return
  for tag, value in tagged:
    if tag == "many":
      digest, where, rep_where, sig = value
      jaccard = minhash.estimated_jaccard(sig, signed[2])
      if jaccard >= threshold:
        yield digest, (round(jaccard, 4), where, rep_where)


def _smallest_representative(pairs):
  return min(pairs, key=lambda pair: _natural_key(pair[2]))


def _split(keyed):
  """Per digest (at most one document and one removal, so CoGroupByKey's lists stay short): the
  document, unless it was removed (then counts and the pair)."""
  digest, grouped = keyed
  documents, removed = list(grouped["document"]), list(grouped["removed"])
  if not documents:
    return
  document = documents[0]
  if not removed:
    yield digest, document
    return
  jaccard, where, rep_where = removed[0]
  copies, (_, text, language, _) = document
  yield beam.pvalue.TaggedOutput("counts", (("near_duplicates", language or ""), copies))
  yield beam.pvalue.TaggedOutput("pairs", {"removed": where, "kept": rep_where, "jaccard": jaccard})


def build(documents, settings: minhash.NearDedup):
  """documents: (digest, (copies, (where, text, language, licences))) -> (kept documents in the same
  form, counts ((key, name), n) to sum, removed/kept example pairs)."""
  bands, rows = settings.bands
  signed = documents | "Sign" >> beam.ParDo(Sign(settings)).with_outputs("short", main="signed")
  candidates = (
    signed.signed
    | "Bands" >> beam.FlatMap(_bands, bands, rows)
    | "GroupBands" >> beam.GroupByKey()
    | "Candidates" >> beam.FlatMap(_candidates)
    | "DistinctPairs" >> beam.Distinct()
  )
  verified = _join("MemberSignatures", signed.signed, candidates) | "WithMemberSignature" >> beam.FlatMap(
    _with_member_signature
  )
  removed = (
    _join("RepresentativeSignatures", signed.signed, verified)
    | "Verify" >> beam.FlatMap(_verified, settings.threshold)
    | "OnePerRemoved" >> beam.CombinePerKey(_smallest_representative)
  )
  split = (
    {"document": documents, "removed": removed}
    | "JoinRemoved" >> beam.CoGroupByKey()
    | "DropRemoved" >> beam.FlatMap(_split).with_outputs("counts", "pairs", main="kept")
  )
  short = signed.short | "CountShort" >> beam.Map(lambda language: (("near_dedup_too_short", language or ""), 1))
  counts = (split.counts, short) | "NearDedupCounts" >> beam.Flatten()
  pairs = (
    split.pairs
    | "SmallestPairs" >> beam.combiners.Top.Of(EXAMPLE_PAIRS, key=lambda p: _natural_key(p["removed"]), reverse=True)
    | "KeyPairs"
    >> beam.Map(lambda top: (("near_duplicate_pairs", ""), sorted(top, key=lambda p: _natural_key(p["removed"]))))
  )
  return split.kept, counts, pairs
