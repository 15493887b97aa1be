from .transformer import DomainAwareLinear, SoftPromptedTransformer, timestep_embedding
from .vlm import FlorenceEncoder
from .xvla import XVLAModel

__all__ = [
    "DomainAwareLinear",
    "FlorenceEncoder",
    "SoftPromptedTransformer",
    "XVLAModel",
    "timestep_embedding",
]
