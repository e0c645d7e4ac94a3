"""A generation request: every parameter, validated once, frozen.

``Request.build(limits, **kwargs)`` is the single place where user input is checked; the API, the
CLI and the widgets all go through it, so they reject the same things with the same messages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import numbers
import secrets
from typing import TYPE_CHECKING, Any

import numpy as np

from ._checks import check_bool, check_float, check_int, check_str

if TYPE_CHECKING:
    from .backend import Limits

MAX_SEED = 2**32 - 1  # torch's CPU generator, which draws every run's noise, reads a seed's low 32 bits only:
                      # seed 1 and seed 2**32 + 1 drew the same clip (a sweep over large seeds repeated clips)
MAX_RECORD_EVERY = 1000
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 8, 8192  # an image-to-video model's first frame, before its pipeline resizes it


@dataclasses.dataclass(frozen=True)
class Request:
    """Everything needed to reproduce a video with a given model."""

    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    duration: float = 2.0       # seconds of video
    guidance: float = 5.0       # classifier-free guidance scale: 0 = the unconditional (negative prompt's) branch alone, 1 = no guidance
                                # (build() defaults it to the model's limits.default_guidance)
    steps: int = 20             # denoising steps
    eta: float = 0.0            # fresh noise per sampler step: 0 = deterministic (the flow ODE), 1 = the
                                # x0 estimate is re-noised with new noise at every step (build() defaults
                                # it to the model's limits.default_eta)
    width: int = 64
    height: int = 64
    trace: bool = True          # record every step into Video.trace
    record_every: int = 1       # keep every k-th step in the trace (the last step is always kept)
    num_frames: int | None = None  # video frames; build() always sets it (from duration when not given)
    image: Any = None           # first frame for image-to-video models (a PIL image), else None
    retries: int = 0            # redraws (new noise) of a draw that fails the model's own check (backend
                                # judge_draw), for models that have one (build() defaults it to limits.default_retries)

    @classmethod
    def build(cls, limits: "Limits", prompt: Any, **kwargs: Any) -> "Request":
        """Validate user input against a model's ``limits`` and return a frozen request."""
        unknown = set(kwargs) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
        width, height = _check_size(limits, kwargs)
        num_frames, duration = _check_frames(limits, kwargs.get("num_frames"), kwargs.get("duration"))
        image = _check_image(limits, kwargs.get("image"))
        seed = kwargs.get("seed", 0)
        if seed is None:  # a fresh random seed, recorded so the seed shown is the seed used
            seed = secrets.randbelow(2**31)
        negative = kwargs.get("negative_prompt", "")
        negative = "" if negative is None else negative
        return cls(
            prompt=check_str("prompt", prompt, max_len=limits.max_prompt_chars),
            negative_prompt=check_str("negative_prompt", negative, allow_empty=True,
                                      max_len=limits.max_prompt_chars),
            seed=_check_seed(seed),
            duration=duration,
            guidance=check_float("guidance", kwargs.get("guidance", limits.default_guidance), 0.0, limits.max_guidance),
            steps=check_int("steps", kwargs.get("steps", 20), limits.min_steps, limits.max_steps),
            eta=_check_eta(limits, kwargs.get("eta", limits.default_eta)),
            width=width,
            height=height,
            trace=check_bool("trace", kwargs.get("trace", True)),
            record_every=check_int("record_every", kwargs.get("record_every", 1), 1, MAX_RECORD_EVERY),
            num_frames=num_frames,
            image=image,
            retries=_check_retries(limits, kwargs.get("retries", limits.default_retries)),
        )

    def asdict(self) -> dict[str, Any]:
        """The request as a plain dict (JSON- and netCDF-friendly values; an image becomes its description,
        ``"image 832x480 sha256:..."``, since pixels do not fit in params)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if out["image"] is not None:
            out["image"] = describe_image(out["image"])
        return out


def describe_image(image: Any) -> str:
    """``"image WxH sha256:<16 hex>"`` for a PIL image: enough to tell which image made a clip."""
    digest = hashlib.sha256(image.tobytes()).hexdigest()[:16]
    return f"image {image.width}x{image.height} sha256:{digest}"


def _check_eta(limits: "Limits", eta: Any) -> float:
    """The sampler's noise per step: in [0, ``limits.max_eta``]; a model with max_eta 0 accepts only 0."""
    if limits.max_eta <= 0.0:
        value = check_float("eta", eta, 0.0, 1.0)
        if value != 0.0:
            raise ValueError(f"eta must be 0 for model {limits.name!r}: its sampler is the pipeline's own "
                             f"deterministic scheduler (stochastic steps, eta > 0 up to 1, are available for the "
                             f"embedded models); got {value:g}")
        return value
    return check_float("eta", eta, 0.0, limits.max_eta)


def _check_retries(limits: "Limits", retries: Any) -> int:
    """Redraws of a clip whose layout breaks: in [0, ``limits.max_retries``]; a model without a layout
    check (max_retries 0) accepts only 0."""
    if limits.max_retries <= 0:
        if isinstance(retries, bool) or not isinstance(retries, numbers.Integral):
            raise TypeError(f"retries must be the integer 0 for model {limits.name!r}, got {type(retries).__name__} "
                            f"{retries!r}")
        value = int(retries)
        if value != 0:
            raise ValueError(f"retries must be 0 for model {limits.name!r}: it has no layout check to decide a "
                             f"redraw (the embedded shapes model has one); got {value}")
        return value
    return check_int("retries", retries, 0, limits.max_retries)


def _check_seed(seed: Any) -> int:
    """A seed in [0, MAX_SEED]; a larger one is refused rather than drawing the noise of seed mod 2**32."""
    try:
        return check_int("seed", seed, 0, MAX_SEED)
    except ValueError as err:
        if seed > MAX_SEED:
            raise ValueError(f"{err} (the noise generator reads 32 bits: a larger seed would draw the same clip "
                             f"as seed {int(seed) % 2**32})") from None
        raise


def _check_size(limits: "Limits", kwargs: dict[str, Any]) -> tuple[int, int]:
    """Width and height: one of ``limits.sizes``, or (``size_multiple`` > 0) any multiple of it."""
    default_w, default_h = limits.default_size
    m = limits.size_multiple
    # a value no model takes also names what this one does (it said only "[1, 8192]" to a 64x64 model)
    sizes = (f" (model {limits.name!r} takes multiples of {m} up to {limits.max_side})" if m > 0 else
             f" (model {limits.name!r} draws {', '.join(f'{w}x{h}' for w, h in limits.sizes)})")
    try:
        width = check_int("width", kwargs.get("width", default_w), 1, 8192)
        height = check_int("height", kwargs.get("height", default_h), 1, 8192)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{err}{sizes}") from None
    if m <= 0:
        if (width, height) not in limits.sizes:
            allowed = ", ".join(f"{w}x{h}" for w, h in limits.sizes)
            raise ValueError(
                f"width x height must be one of {allowed} for model {limits.name!r}; got {width}x{height}"
            )
        return width, height
    family = f" for {limits.family}" if limits.family else ""
    for name, v in (("width", width), ("height", height)):
        if v % m or not m <= v <= limits.max_side:
            near = " or ".join(map(str, limits.nearest_sides(v)))
            raise ValueError(f"{name} must be a multiple of {m}{family} (between {m} and {limits.max_side}; "
                             f"model {limits.name!r}); got {v}: the nearest valid {name} is {near}")
    return width, height


def _check_frames(limits: "Limits", num_frames: Any, duration: Any) -> tuple[int, float]:
    """``(num_frames, duration)`` from either one (or both, if they agree), against the frame rule."""
    family = f" for {limits.family}" if limits.family else ""
    if num_frames is None:
        duration = 2.0 if duration is None else duration
        duration = check_float("duration", duration, 0.0, limits.max_duration, lo_open=True, unit="seconds")
        return limits.frames_for(duration), duration
    n = check_int("num_frames", num_frames, 1, limits.max_frames)
    if not limits.valid_frames(n):
        near = " or ".join(map(str, limits.nearest_frames(n)))
        raise ValueError(f"num_frames must be {limits.frame_rule}{family} (1 to {limits.max_frames} frames; model "
                         f"{limits.name!r}); got {n}: the nearest valid counts are {near}")
    if duration is not None:
        d = check_float("duration", duration, 0.0, limits.max_duration, lo_open=True, unit="seconds")
        if limits.frames_for(d) != n:
            raise ValueError(f"duration and num_frames disagree: duration={d:g} s gives {limits.frames_for(d)} frames "
                             f"at {limits.fps:g} fps for model {limits.name!r}, but num_frames={n}; pass only one "
                             "of them")
    return n, n / limits.fps


def _check_image(limits: "Limits", image: Any) -> Any:
    """A PIL image (a uint8 ``(H, W, 3)`` array is converted) for image-to-video models; None otherwise."""
    if not limits.image_input:
        if image is not None:
            raise ValueError(f"image is only accepted by image-to-video models; model {limits.name!r} is "
                             "text-to-video (load an image-to-video pipeline, e.g. LTXImageToVideoPipeline)")
        return None
    if image is None:
        raise ValueError(f"image is required: model {limits.name!r} is an image-to-video model (pass image= a "
                         "PIL image or a uint8 (height, width, 3) array)")
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - pillow comes with the dependencies
        raise TypeError("image needs Pillow installed") from err
    if isinstance(image, Image.Image):
        picture = image.convert("RGB")
    elif isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        picture = Image.fromarray(image)
    else:
        raise TypeError(f"image must be a PIL image or a uint8 (height, width, 3) array, got "
                        f"{type(image).__name__}{getattr(image, 'shape', '')}")
    w, h = picture.size
    if not (MIN_IMAGE_SIDE <= w <= MAX_IMAGE_SIDE and MIN_IMAGE_SIDE <= h <= MAX_IMAGE_SIDE):
        raise ValueError(f"image must be {MIN_IMAGE_SIDE} to {MAX_IMAGE_SIDE} pixels on each side (the pipeline "
                         f"resizes it to the clip's width x height), got {w}x{h}")
    return picture
