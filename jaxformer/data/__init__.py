"""Data, by job: pipeline/ (what runs during training: vocabularies, preprocessors, packing, batches),
ingest/ (offline Beam conversion, the local corpus, tokenizer training, the cache writer) and reports/
(what `data stats`, `data show` and `data bench` print). Knows no model."""
