"""Data: the local corpus, the vocabulary, objectives and batches. Knows no model."""
