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

import importlib
import sys
import types
from typing import Any

from . import _accessor  # noqa: F401  (Dataset.sora)

# The public names, imported when first used (PEP 562): `import sora_nb` stays light, so the console's
# `sora-nb --help` and a refused argument answer at once instead of after torch, diffusers and ipywidgets load.
_PUBLIC = {
    "api": ("Generator", "best_of", "generate", "known_models", "load", "reproduce"),
    "backend": ("Limits", "StepEvent"),  # (`controls`, the function, is `_Package.controls`: its submodule's name)
    "inspector": ("inspect", "open_trace"),
    "media": ("FFmpegNotFoundError", "read_params", "read_video"),
    "request": ("Request",),
    "sampler": ("Cancelled", "DecodeError"),
    "video": ("Video",),
}
_WHERE = {name: module for module, names in _PUBLIC.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value  # once: later lookups are plain attribute reads
        return value
    try:  # a submodule used as an attribute (sora_nb.media, sora_nb.world) after a bare `import sora_nb`
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE) | {"controls"})


class _Package(types.ModuleType):
    """The package's module type: its ``controls`` is the function, whichever was imported first. (Importing
    the submodule ``sora_nb.controls`` sets the package's attribute of that name to the submodule; an eager
    import of the function after it used to win, a lazy one never runs, so ``sora_nb.controls()`` called a
    module.)"""

    @property
    def controls(self) -> Any:
        chosen = self.__dict__.get("_controls_set")
        if chosen is None:
            from .controls import controls as chosen
        return chosen

    @controls.setter
    def controls(self, value: Any) -> None:
        if not isinstance(value, types.ModuleType):  # the import machinery's submodule is not the function
            self.__dict__["_controls_set"] = value  # (a test's monkeypatch is)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "Cancelled", "DecodeError", "FFmpegNotFoundError", "Generator", "Limits", "Request", "StepEvent", "Video",
    "__version__", "best_of", "controls", "generate", "inspect", "known_models", "load", "open_trace", "read_params",
    "read_video", "reproduce",
]
