"""What the data verbs print about the pipeline: `data stats`, `data show` and `data bench`."""
