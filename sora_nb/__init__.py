"""sora_nb: see inside text-to-video diffusion transformers, in a notebook.

Generate a clip with the embedded default model (runs on a laptop CPU)::

    import sora_nb
    video = sora_nb.generate("a red circle moving right", seed=0, duration=2.0, guidance=5.0, steps=20)
    video.frames.shape     # (16, 64, 64, 3) uint8
    video.params           # everything needed to reproduce it
    video.trace            # xarray.Dataset: every denoising step of every frame
    video                  # at the end of a cell: plays
    video.save("clip.mp4")
    sora_nb.reproduce("clip.mp4")   # the same clip again, from the params the file records

Load a model explicitly and reuse it::

    gen = sora_nb.load("shapes")
    gen.generate("a blue square moving up", seed=3)

Real pretrained models (Wan, LTX-Video, CogVideoX, HunyuanVideo, Mochi) through diffusers, same API::

    gen = sora_nb.load("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", offload="model")
    gen.generate("a cat walks on the grass", num_frames=33, width=832, height=480)
"""

from __future__ import annotations

__version__ = "0.1.0"

from .api import Generator, best_of, generate, known_models, load, reproduce
from .backend import Limits, StepEvent
from .controls import controls
from .inspector import inspect, open_trace
from .media import FFmpegNotFoundError, read_params, read_video
from .request import Request
from .sampler import Cancelled, DecodeError
from .video import Video

__all__ = [
    "Cancelled", "DecodeError", "FFmpegNotFoundError", "Generator", "Limits", "Request", "StepEvent", "Video",
    "__version__", "best_of", "controls", "generate", "inspect", "known_models", "load", "open_trace", "read_params",
    "read_video", "reproduce",
]
