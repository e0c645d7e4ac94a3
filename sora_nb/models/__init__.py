"""The embedded model's networks: video autoencoder, diffusion transformer, text encoder."""

from .dit import ShapesDiT
from .text import AdaptedEncoder, TextEncoder, build_adapted, build_encoder, build_tokenizer
from .vae import VideoAutoencoder

__all__ = ["AdaptedEncoder", "ShapesDiT", "TextEncoder", "VideoAutoencoder", "build_adapted", "build_encoder",
           "build_tokenizer"]
