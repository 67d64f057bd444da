"""Model registry: importing this package registers every zoo model by its type name."""

from zoo.models.base import MODELS, GenerativeModel, build_model
from zoo.models.gpt import GPT, GPTConfig
from zoo.models.image_gpt import ImageGPT, ImageGPTConfig
from zoo.models.music_transformer import MusicTransformer, MusicTransformerConfig

__all__ = ["GPT", "GPTConfig", "GenerativeModel", "ImageGPT", "ImageGPTConfig", "MODELS", "MusicTransformer",
           "MusicTransformerConfig", "build_model"]
