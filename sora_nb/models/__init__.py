"""The embedded model's networks: video autoencoder, diffusion transformer, text encoder."""

from .dit import ShapesDiT
from .text import TextEncoder, build_encoder, build_tokenizer
from .vae import VideoAutoencoder

__all__ = ["ShapesDiT", "TextEncoder", "VideoAutoencoder", "build_encoder", "build_tokenizer"]
