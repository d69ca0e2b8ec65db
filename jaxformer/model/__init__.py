"""The CodeGen prefix-LM: knows token ids, positions, segments and prefix masks, nothing else."""

from jaxformer.model.config import ModelConfig
from jaxformer.model.shapes import param_shapes
from jaxformer.model.transformer import Transformer, head_logits

__all__ = ["ModelConfig", "Transformer", "head_logits", "param_shapes"]
