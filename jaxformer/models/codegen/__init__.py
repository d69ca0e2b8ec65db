"""The CodeGen family (CodeGen2's architecture): config.py (gin: ModelConfig), block.py, hf.py."""

from jaxformer.models.codegen.config import CodeGenConfig, ModelConfig

__all__ = ["CodeGenConfig", "ModelConfig"]
