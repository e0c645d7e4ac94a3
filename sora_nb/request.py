"""A generation request: every parameter, validated once, frozen.

``Request.build(limits, **kwargs)`` is the single place where user input is checked; the API, the
CLI and the widgets all go through it, so they reject the same things with the same messages.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import TYPE_CHECKING, Any

from ._checks import check_bool, check_float, check_int, check_str

if TYPE_CHECKING:
    from .backend import Limits

MAX_SEED = 2**63 - 1
MAX_RECORD_EVERY = 1000


@dataclasses.dataclass(frozen=True)
class Request:
    """Everything needed to reproduce a video with a given model."""

    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    duration: float = 2.0       # seconds of video
    guidance: float = 5.0       # classifier-free guidance scale: 0 = unconditional, 1 = no guidance
    steps: int = 20             # denoising steps
    width: int = 64
    height: int = 64
    trace: bool = True          # record every step into Video.trace
    record_every: int = 1       # keep every k-th step in the trace (the last step is always kept)

    @classmethod
    def build(cls, limits: "Limits", prompt: Any, **kwargs: Any) -> "Request":
        """Validate user input against a model's ``limits`` and return a frozen request."""
        unknown = set(kwargs) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
        default_w, default_h = limits.default_size
        width = kwargs.get("width", default_w)
        height = kwargs.get("height", default_h)
        width = check_int("width", width, 1, 8192)
        height = check_int("height", height, 1, 8192)
        if (width, height) not in limits.sizes:
            allowed = ", ".join(f"{w}x{h}" for w, h in limits.sizes)
            raise ValueError(
                f"width x height must be one of {allowed} for model {limits.name!r}; got {width}x{height}"
            )
        seed = kwargs.get("seed", 0)
        if seed is None:  # a fresh random seed, recorded so the seed shown is the seed used
            seed = secrets.randbelow(2**31)
        negative = kwargs.get("negative_prompt", "")
        negative = "" if negative is None else negative
        return cls(
            prompt=check_str("prompt", prompt, max_len=limits.max_prompt_chars),
            negative_prompt=check_str("negative_prompt", negative, allow_empty=True,
                                      max_len=limits.max_prompt_chars),
            seed=check_int("seed", seed, 0, MAX_SEED),
            duration=check_float("duration", kwargs.get("duration", 2.0), 0.0, limits.max_duration,
                                 lo_open=True, unit="seconds"),
            guidance=check_float("guidance", kwargs.get("guidance", 5.0), 0.0, limits.max_guidance),
            steps=check_int("steps", kwargs.get("steps", 20), 1, limits.max_steps),
            width=width,
            height=height,
            trace=check_bool("trace", kwargs.get("trace", True)),
            record_every=check_int("record_every", kwargs.get("record_every", 1), 1, MAX_RECORD_EVERY),
        )

    def asdict(self) -> dict[str, Any]:
        """The request as a plain dict (JSON- and netCDF-friendly values)."""
        return dataclasses.asdict(self)
