"""Offline data jobs: the Beam conversion of raw corpora (readers, filters, languages, dedup), the local
corpus builder, tokenizer training and the seqio cache writer. Nothing here runs during training."""
