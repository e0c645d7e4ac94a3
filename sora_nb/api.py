"""The thin public API: :func:`load` a model, :meth:`Generator.generate` a :class:`~sora_nb.video.Video`."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Iterable

from . import sampler
from .backend import Backend
from .request import Request
from .trace import TraceRecorder
from .video import Video

DEFAULT_MODEL = "shapes"
_loaded: dict[str, "Generator"] = {}
_load_lock = threading.Lock()


class Generator:
    """A loaded model. ``generate`` takes the same keywords whatever the backend."""

    def __init__(self, backend: Backend):
        self.backend = backend

    @property
    def name(self) -> str:
        """The model's name, as recorded in ``Video.params["model"]``."""
        return self.backend.limits.name

    @property
    def limits(self):
        """What the model supports (sizes, maximum duration, fps, ...)."""
        return self.backend.limits

    def __repr__(self) -> str:
        lim = self.limits
        sizes = ", ".join(f"{w}x{h}" for w, h in lim.sizes)
        return f"Generator(model={self.name!r}, fps={lim.fps:g}, max_duration={lim.max_duration:g}s, sizes=[{sizes}])"

    def request(self, prompt: Any, **kwargs: Any) -> Request:
        """Validate arguments into a :class:`Request` without running anything."""
        req = Request.build(self.limits, prompt, **kwargs)
        check = getattr(self.backend, "check", None)
        if check is not None:
            check(req)
        return req

    def generate(
        self,
        prompt: str,
        *,
        seed: int | None = 0,
        duration: float = 2.0,
        guidance: float = 5.0,
        steps: int = 20,
        width: int | None = None,
        height: int | None = None,
        negative_prompt: str = "",
        trace: bool = True,
        record_every: int = 1,
        observers: Iterable[Any] = (),
        cancel: threading.Event | None = None,
    ) -> Video:
        """Generate a clip.

        Args:
          prompt: what to draw, e.g. ``"a red circle moving right"``.
          seed: integer seed (same seed and parameters, same video); None draws a fresh one, which
            is recorded in ``params["seed"]``.
          duration: seconds of video, > 0 and up to the model's ``max_duration``.
          guidance: classifier-free guidance scale, 0 (unconditional) to 50; 1 disables guidance.
          steps: denoising steps, 1 to 1000.
          width, height: a size the model supports (``generator.limits.sizes``); default the first.
          negative_prompt: what to steer away from (the unconditional branch of guidance).
          trace: record every step into ``video.trace`` (an xarray Dataset).
          record_every: keep every k-th step in the trace (the last is always kept).
          observers: extra observers of the sampling loop (``on_start``/``on_step``/``on_end``).
          cancel: a ``threading.Event``; setting it stops the run between steps, skipping the decode,
            and raises :class:`sora_nb.Cancelled`.
        """
        kwargs: dict[str, Any] = dict(seed=seed, duration=duration, guidance=guidance, steps=steps,
                                      negative_prompt=negative_prompt, trace=trace, record_every=record_every)
        if width is not None:
            kwargs["width"] = width
        if height is not None:
            kwargs["height"] = height
        return self.run(self.request(prompt, **kwargs), observers=observers, cancel=cancel)

    def run(self, request: Request, *, observers: Iterable[Any] = (),
            cancel: threading.Event | None = None) -> Video:
        """Run an already validated :class:`Request`."""
        from . import __version__

        recorder = TraceRecorder(self.backend.preview, request.record_every) if request.trace else None
        all_observers = ([recorder] if recorder else []) + list(observers)
        latents, frames = sampler.run(self.backend, request, observers=all_observers, cancel=cancel)
        model = self.backend.describe()
        params = request.asdict()
        params.update(model=model.get("name", self.name), num_frames=int(frames.shape[0]),
                      fps=float(self.limits.fps), sora_nb_version=__version__,
                      model_info={k: v for k, v in model.items() if k != "name"})
        return Video(frames=frames, fps=float(self.limits.fps), params=params,
                     trace=recorder.dataset if recorder else None, latents=latents.detach().cpu())


def load(model: Any = DEFAULT_MODEL) -> Generator:
    """Load a model by name (``"shapes"``, the embedded default) or from a local weights folder.

    Loaded generators are cached per name, so ``load("shapes")`` twice costs one load.
    """
    from .backends import embedded

    if isinstance(model, Generator):
        return model
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str):
        raise TypeError(f"model must be a model name ({', '.join(known_models())}) or a folder path, "
                        f"got {type(model).__name__}")
    with _load_lock:
        if model in _loaded:
            return _loaded[model]
        if model == "shapes":
            gen = Generator(embedded.load_default())
        elif model == "shapes-untrained":
            gen = Generator(embedded.untrained())
        elif Path(model).expanduser().is_dir():
            folder = Path(model).expanduser()
            if not embedded.is_weights_folder(folder):
                raise ValueError(f"model folder {model!r} is not a sora_nb weights folder (no {embedded.MANIFEST} "
                                 f"with format {embedded.FORMAT!r})")
            gen = Generator(embedded.load_folder(folder))
        else:
            raise ValueError(f"unknown model {model!r}: use one of {', '.join(known_models())} or a path to a "
                             "weights folder")
        _loaded[model] = gen
        return gen


def known_models() -> list[str]:
    """Names :func:`load` understands."""
    return ["shapes", "shapes-untrained"]


def generate(prompt: str, **kwargs: Any) -> Video:
    """Generate a clip with the embedded default model (``load("shapes")``); see :meth:`Generator.generate`."""
    model = kwargs.pop("model", DEFAULT_MODEL)
    return load(model).generate(prompt, **kwargs)
