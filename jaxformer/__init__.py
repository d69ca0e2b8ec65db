"""jaxformer: JAX/Flax pretraining for code language models (the CodeGen2 recipe)."""

__version__ = "0.1.0"
