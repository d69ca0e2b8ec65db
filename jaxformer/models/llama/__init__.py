"""The Llama family (Llama, CodeGen2.5, Qwen2/Qwen2.5-Coder, StarCoder2): config.py (gin: LlamaConfig),
block.py, hf.py."""

from jaxformer.models.llama.config import LlamaConfig

__all__ = ["LlamaConfig"]
