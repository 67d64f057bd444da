"""Model registry: importing this package registers every zoo model by its type name."""

from zoo.models.base import MODELS, GenerativeModel, build_model
from zoo.models.gpt import GPT, GPTConfig
from zoo.models.image_gpt import ImageGPT, ImageGPTConfig
from zoo.models.music_transformer import MusicTransformer, MusicTransformerConfig
from zoo.models.text2image import Text2Image, Text2ImageConfig

__all__ = ["GPT", "GPTConfig", "GenerativeModel", "ImageGPT", "ImageGPTConfig", "MODELS", "MusicTransformer",
           "MusicTransformerConfig", "Text2Image", "Text2ImageConfig", "build_model"]
