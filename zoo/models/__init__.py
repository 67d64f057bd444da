"""Model registry: importing this package registers every zoo model by its type name."""

from zoo.models.base import MODELS, GenerativeModel, build_model
from zoo.models.gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig", "GenerativeModel", "MODELS", "build_model"]
