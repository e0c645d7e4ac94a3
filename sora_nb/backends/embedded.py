"""The embedded default model: video autoencoder + diffusion transformer + text encoder.

Weights ship inside the package (``sora_nb/weights/shapes/``) as safetensors with a
``manifest.json`` listing the sha256 of every file; :func:`load_folder` checks every hash before
reading a byte of weights and loads safetensors only (never pickle). When the package holds no
weights, :func:`untrained` builds the same architecture with fixed random weights, named
``shapes-untrained`` everywhere so nobody mistakes it for a trained model.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import json
import math
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from safetensors import SafetensorError

from .._checks import check_float
from .._files import check_stored_tensors
from ..backend import Limits, StepEvent
from ..models import ShapesDiT, TextEncoder, VideoAutoencoder, build_encoder, build_tokenizer
from ..models.text import MAX_TOKENS
from ..models.verifier import ClipVerifier
from ..request import Request
from ..sampler import flow_matching_steps

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights" / "shapes"
MANIFEST = "manifest.json"
VERIFIER = "verifier"  # a weights folder's optional latent-frame verifier (`Generator.best_of`)
LOW = "low"  # a weights folder's optional second DiT and text stack for the low noise levels (`EmbeddedBackend`)
HALF_DECODER = ("dec_", "refine")  # the autoencoder's decoding tensors, stored in float16 (`save_vae`)
FORMAT = "sora_nb/shapes"
SIZES = ((64, 64), (96, 64))
FPS = 8.0
MAX_DURATION = 4.0
BASIC_WORDS = ("a an the and with on in of to , . red orange yellow green cyan blue purple pink white "
               "circle square triangle star diamond moving left right up down still").split()


MAX_RETRIES = 8  # Request.retries for a model with a layout check


class WeightsError(ValueError):
    """A weights folder is missing, incomplete, tampered with or corrupt."""


def check_guidance_profile(profile: Any, name: str = "guidance_profile") -> tuple[tuple[float, float], ...]:
    """Validate a guidance profile: ``[[sigma_above, weight], ...]`` with ``sigma_above`` strictly
    decreasing in [0, 1) and ``weight`` in [0, 10]; ``[]`` (or None) is plain guidance at every step.

    At a step whose noise level is sigma, the first pair with ``sigma > sigma_above`` gives the weight
    (1 when none does), and the step's guidance is ``1 + weight * (g - 1)``: the classifier-free
    guidance weight ``g - 1`` scaled by noise level. Weight 0 turns guidance off at those steps (a
    guidance interval) and skips the negative prompt's pass there, so they cost half; weight 2 doubles
    it. It applies only when g > 1."""
    if profile is None:
        return ()
    if isinstance(profile, (str, bytes)) or not hasattr(profile, "__iter__"):
        raise ValueError(f"{name} must be a list of [sigma_above, weight] pairs, got {profile!r}")
    pairs = []
    for item in profile:
        try:
            above, weight = (float(v) for v in item)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a list of [sigma_above, weight] pairs, got the item {item!r}") from None
        if not 0.0 <= above < 1.0:
            raise ValueError(f"{name}: sigma_above must be in [0, 1), got {above!r}")
        if not 0.0 <= weight <= 10.0:
            raise ValueError(f"{name}: weight must be in [0, 10] (0: no guidance at those steps), got {weight!r}")
        if pairs and above >= pairs[-1][0]:
            raise ValueError(f"{name}: sigma_above must strictly decrease from pair to pair, got {above!r} after "
                             f"{pairs[-1][0]!r}")
        pairs.append((above, weight))
    return tuple(pairs)


def guidance_at(profile: tuple[tuple[float, float], ...], guidance: float, sigma: float) -> float:
    """The guidance a step at noise level ``sigma`` uses (see :func:`check_guidance_profile`)."""
    if guidance <= 1.0:
        return guidance
    for above, weight in profile:
        if sigma > above:
            return 1.0 + weight * (guidance - 1.0)
    return guidance


def check_expert(info: dict[str, Any], dit: ShapesDiT, text: TextEncoder,
                 low: tuple[ShapesDiT, TextEncoder] | None) -> tuple[tuple[ShapesDiT, TextEncoder] | None, float | None]:
    """The low-noise expert and its switch level (``info["expert_switch"]``, in (0, 1)), or (None, None)."""
    name = info.get("name", "?")
    switch = info.get("expert_switch")
    if low is None and switch is None:
        return None, None
    if low is None:
        raise WeightsError(f"model {name!r}: expert_switch is {switch!r} but there is no low-noise DiT ({LOW}/)")
    if isinstance(switch, bool) or not isinstance(switch, (int, float)) or not 0.0 < float(switch) < 1.0:
        raise WeightsError(f"model {name!r}: expert_switch must be a noise level in (0, 1) (the low-noise DiT "
                           f"takes the steps at or below it), got {switch!r}")
    low_dit, low_text = low
    # (not _name_or_path); through JSON, as a saved config is: a fresh DiT's patch_size is a tuple, a loaded one's a list
    arch = lambda cfg: json.loads(json.dumps({k: v for k, v in cfg.items() if not k.startswith("_")}))  # noqa: E731
    if type(low_dit) is not type(dit) or arch(low_dit.config) != arch(dit.config) or type(low_text) is not type(text):
        raise WeightsError(f"model {name!r}: the low-noise DiT and text encoder must have the main ones' "
                           f"architecture and config")
    return (low_dit.eval(), low_text.eval()), float(switch)


def check_verifier(info: dict[str, Any], vae: VideoAutoencoder, text: TextEncoder,
                   verifier: ClipVerifier | None) -> ClipVerifier | None:
    """The verifier in eval mode, refused (WeightsError) if it does not read this model's latent and text states."""
    if verifier is None:
        return None
    if (verifier.config.latent_channels != vae.config.latent_channels or verifier.config.text_dim != text.width):
        raise WeightsError(f"model {info.get('name', '?')!r}: the verifier reads {verifier.config.latent_channels} latent "
                           f"channels and {verifier.config.text_dim}-wide text states; the model has "
                           f"{vae.config.latent_channels} and {text.width}")
    return verifier.eval()


def check_name(info: dict[str, Any]) -> str:
    """``info["name"]``, the model's name in every clip's params: a non-empty str (WeightsError otherwise)."""
    name = info.get("name")
    if not isinstance(name, str) or not name.strip():
        raise WeightsError(f"the model's name ({MANIFEST}'s \"name\") must be a non-empty string, got {name!r}")
    return name


def check_parts(info: dict[str, Any], vae: VideoAutoencoder, dit: ShapesDiT, text: TextEncoder,
                low: tuple[ShapesDiT, TextEncoder] | None, verifier: ClipVerifier | None) -> None:
    """Refuse (WeightsError) networks that do not fit one another or the sizes (``SIZES``) the model draws: what
    would otherwise be accepted at load and fail at the first generate."""
    name = info.get("name", "?")
    c_vae, c_dit = vae.config.latent_channels, dit.config.latent_channels
    if c_dit != c_vae:
        raise WeightsError(f"model {name!r}: the DiT (dit/config.json) denoises {c_dit}-channel latents but the "
                           f"autoencoder (vae/config.json) makes {c_vae}-channel ones")
    texts = [("text_encoder", text)] + ([(f"{LOW}/text_encoder", low[1])] if low is not None else [])
    dits = [("dit", dit)] + ([(f"{LOW}/dit", low[0])] if low is not None else [])
    for (dit_name, net), (text_name, encoder) in zip(dits, texts):
        if net.config.text_dim != encoder.width:
            raise WeightsError(f"model {name!r}: the DiT ({dit_name}/config.json) reads {net.config.text_dim}-wide text "
                               f"states but its text encoder ({text_name}/config.json) makes {encoder.width}-wide ones")
    sf, (_, ph, pw) = vae.config.spatial_factor, dit.config.patch_size
    for width, height in SIZES:
        if width % sf or height % sf:
            raise WeightsError(f"model {name!r}: the autoencoder's spatial factor {sf} (vae/config.json) does not "
                               f"divide the size {width}x{height}")
        h, w = height // sf, width // sf
        if h % ph or w % pw:
            raise WeightsError(f"model {name!r}: the DiT's patch_size {tuple(dit.config.patch_size)} (dit/config.json) "
                               f"does not tile the {h}x{w} latent grid of the size {width}x{height}")
        if verifier is not None:
            p, cells = verifier.config.patch_size, verifier.config.max_cells
            if h % p or w % p or max(h, w) > cells:
                raise WeightsError(f"model {name!r}: the verifier (verifier/config.json) reads latent frames of at "
                                   f"most {cells} cells per side, in multiples of its patch_size {p}; the size "
                                   f"{width}x{height} has a {h}x{w} latent grid")


SCHEDULER_FILE = "scheduler/scheduler_config.json"
TRAIN_TIMESTEPS = 1000  # the DiT's timestep is sigma * 1000 (`EmbeddedBackend.denoise`)


def check_scheduler(info: dict[str, Any], config: Any) -> FlowMatchEulerDiscreteScheduler:
    """The scheduler ``config`` (``scheduler/scheduler_config.json``) builds, checked as the sampler uses it: 1000
    training timesteps, and a 2-step schedule whose noise levels are finite and fall from 1 to 0. WeightsError
    naming the file and the setting otherwise."""
    where = f"model {info.get('name', '?')!r}: {SCHEDULER_FILE}"
    if not isinstance(config, dict):
        raise WeightsError(f"{where} must hold a JSON object, got {type(config).__name__}")
    steps = config.get("num_train_timesteps", TRAIN_TIMESTEPS)
    if isinstance(steps, bool) or steps != TRAIN_TIMESTEPS:
        raise WeightsError(f"{where}: num_train_timesteps must be {TRAIN_TIMESTEPS} (the DiT reads sigma * "
                           f"{TRAIN_TIMESTEPS} as its timestep), got {steps!r}")
    shift = config.get("shift", 1.0)
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not math.isfinite(shift) or shift <= 0:
        raise WeightsError(f"{where}: shift must be a finite number > 0, got {shift!r}")
    defaults = FlowMatchEulerDiscreteScheduler().config
    changed = ", ".join(f"{k}={v!r}" for k, v in config.items()
                        if not k.startswith("_") and (k not in defaults or defaults[k] != v))
    try:
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
        scheduler.set_timesteps(2)
        sigmas, timesteps = scheduler.sigmas.tolist(), scheduler.timesteps.tolist()
    except Exception as err:  # noqa: BLE001 - diffusers raises what it meets (TypeError, ValueError, ...)
        raise WeightsError(f"{where}: its settings ({changed or 'the defaults'}) do not make a scheduler: "
                           f"{type(err).__name__}: {err}") from err
    if (len(sigmas) != 3 or not all(math.isfinite(v) for v in sigmas) or abs(sigmas[0] - 1.0) > 1e-6
            or sigmas[-1] != 0.0 or not sigmas[0] > sigmas[1] > sigmas[2]
            or any(abs(t / TRAIN_TIMESTEPS - v) > 1e-5 for t, v in zip(timesteps, sigmas))):
        raise WeightsError(f"{where}: its settings ({changed or 'the defaults'}) give the noise levels {sigmas} (at "
                           f"timesteps {timesteps}) for 2 steps; they must be finite and fall from 1 to 0, with each "
                           f"timestep sigma * {TRAIN_TIMESTEPS}")
    return scheduler


def check_layout(info: dict[str, Any], vae: VideoAutoencoder) -> tuple[tuple[int, int], float] | None:
    """A layout latent's check (``info["layout_check"]``: ``{"channels": [first, end], "threshold": t}``, the raw
    latent's shape-coverage channels and the coverage an object's cell has): ((first, end), t), or None."""
    spec = info.get("layout_check")
    if spec is None:
        return None
    name, c = info.get("name", "?"), vae.config.latent_channels
    chans = spec.get("channels") if isinstance(spec, dict) else None
    t = spec.get("threshold") if isinstance(spec, dict) else None
    if (not isinstance(chans, list) or len(chans) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in chans)
            or not 0 <= chans[0] < chans[1] <= c):
        raise WeightsError(f"model {name!r}: layout_check channels must be [first, end] with 0 <= first < end <= {c} "
                           f"(the latent's channels), got {spec!r}")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 < float(t) < 1.0:
        raise WeightsError(f"model {name!r}: layout_check threshold must be a coverage in (0, 1), got {spec!r}")
    return (chans[0], chans[1]), float(t)


def check_redraw_below(info: dict[str, Any], layout: Any, verifier: ClipVerifier | None) -> float | None:
    """``info["redraw_below"]``: a verifier score under which a draw is redrawn too (`EmbeddedBackend.judge_draw`);
    it needs the layout check and a verifier. None when absent."""
    floor = info.get("redraw_below")
    if floor is None:
        return None
    name = info.get("name", "?")
    if layout is None or verifier is None:
        raise WeightsError(f"model {name!r}: redraw_below needs a layout_check and a verifier/ in the folder "
                           f"(has {'a' if layout else 'no'} layout_check, {'a' if verifier is not None else 'no'} verifier)")
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not math.isfinite(floor):
        raise WeightsError(f"model {name!r}: redraw_below must be a finite verifier score, got {floor!r}")
    return float(floor)


def parse_redraw_share(share: Any, field: str) -> tuple[float, ...]:
    """A redraw share as a tuple: a number in (0, 1] (every redraw takes that share of the request's steps) or a
    list of 1 to MAX_RETRIES of them (redraw a takes the a-th; the last repeats). Raises ValueError naming ``field``."""
    values = list(share) if isinstance(share, (list, tuple)) else [share]
    if not 1 <= len(values) <= MAX_RETRIES or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v <= 1.0 for v in values):
        raise ValueError(f"{field} must be a share of the steps in (0, 1], or a list of 1 to {MAX_RETRIES} such "
                         f"shares (one per redraw, the last repeating), got {share!r}")
    return tuple(float(v) for v in values)


def check_redraw_share(info: dict[str, Any], layout: Any) -> tuple[float, ...]:
    """``info["redraw_share"]``: each redraw's denoising steps as a share of the request's (`parse_redraw_share`;
    1 when absent); a share under 1 needs the layout check (only a model that judges its draws redraws them)."""
    share = info.get("redraw_share", 1.0)
    name = info.get("name", "?")
    try:
        shares = parse_redraw_share(share, "redraw_share")
    except ValueError as err:
        raise WeightsError(f"model {name!r}: {err}") from None
    if shares != (1.0,) and layout is None:
        raise WeightsError(f"model {name!r}: redraw_share needs a layout_check (a model without one never redraws)")
    return shares


def count_blobs(mask: np.ndarray) -> int:
    """The 4-connected components of a (h, w) bool mask (a 16x16 latent frame: a plain flood fill; the world's
    `vision.label_components` is 8-connected, which would join two objects touching only at a corner, and the
    check was measured with 4)."""
    seen = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    count = 0
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        count += 1
        seen[y0, x0] = True
        stack = [(y0, x0)]
        while stack:
            y, x = stack.pop()
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
    return count


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fit_latent_rgb(vae: VideoAutoencoder, latents: torch.Tensor, video: torch.Tensor) -> np.ndarray:
    """Least-squares linear map [latent, 1] -> RGB at latent resolution: a (C+1, 3) matrix.

    ``latents`` are normalised (B, C, F, h, w); ``video`` the matching pixels (B, 3, T, H, W) in [-1, 1].
    """
    kt, ks = vae.config.temporal_factor, vae.config.spatial_factor
    b, c, f, h, w = latents.shape
    video = vae._pad_frames(video)[:, :, : f * kt]
    target = torch.nn.functional.avg_pool3d(video, (kt, ks, ks))  # (B, 3, F, h, w)
    x = latents.permute(0, 2, 3, 4, 1).reshape(-1, c).double()
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    y = target.permute(0, 2, 3, 4, 1).reshape(-1, 3).double()
    return torch.linalg.lstsq(x, y).solution.float().numpy()


class EmbeddedBackend:
    """Backend protocol implementation for the embedded model (see :mod:`sora_nb.backend`)."""

    folder = ""  # the weights folder's absolute path, when loaded from one other than the shipped weights

    def __init__(self, vae: VideoAutoencoder, dit: ShapesDiT, text: TextEncoder,
                 scheduler_config: dict[str, Any], latent_rgb: np.ndarray, info: dict[str, Any],
                 low: tuple[ShapesDiT, TextEncoder] | None = None, verifier: ClipVerifier | None = None):
        """``low``: a second DiT and text encoder (expert denoisers, as eDiff-I's) that take every step whose
        sigma is at or below ``info["expert_switch"]``; ``dit`` and ``text`` take the steps above it.
        ``verifier``: a latent-frame verifier (`sora_nb.models.verifier`) reading ``text``'s states, which
        `score_clip` (and so ``Generator.best_of``) uses."""
        self.vae, self.dit, self.text = vae.eval(), dit.eval(), text.eval()
        self.info = dict(info)
        check_name(self.info)
        check_scheduler(self.info, scheduler_config)
        self.scheduler_config = dict(scheduler_config)
        self.latent_rgb = torch.as_tensor(np.asarray(latent_rgb, dtype=np.float32))  # (C+1, 3)
        try:
            self.guidance_profile = check_guidance_profile(self.info.get("guidance_profile"))
        except ValueError as err:
            raise WeightsError(f"model {self.info.get('name', '?')!r}: {err}") from err
        self.low, self.expert_switch = check_expert(self.info, dit, text, low)
        self.verifier = check_verifier(self.info, vae, text, verifier)
        check_parts(self.info, vae, dit, text, low, verifier)
        self.layout = check_layout(self.info, vae)
        self.redraw_below = check_redraw_below(self.info, self.layout, self.verifier)
        redraw_share = check_redraw_share(self.info, self.layout)
        retries = self.info.get("default_retries", 0)
        max_retries = MAX_RETRIES if self.layout else 0
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= max_retries:
            raise WeightsError(f"model {self.info.get('name', '?')!r}: default_retries must be an integer in "
                               f"[0, {max_retries}] ({'its layout check allows' if self.layout else 'it has no layout_check: only 0'}), "
                               f"got {retries!r}")
        defaults = {}
        for key, fallback, hi in (("default_guidance", 5.0, Limits.max_guidance), ("default_eta", 0.0, 1.0)):
            try:  # a hand-edited manifest fails here, at load, not in every later generate
                defaults[key] = check_float(key, self.info.get(key, fallback), 0.0, hi)
            except (TypeError, ValueError) as err:
                raise WeightsError(f"model {self.info.get('name', '?')!r}: the manifest's {err}") from err
        self.limits = Limits(name=self.info["name"], fps=FPS, max_duration=MAX_DURATION, sizes=SIZES,
                             default_size=SIZES[0], max_prompt_chars=400,
                             temporal_factor=vae.config.temporal_factor,
                             default_guidance=defaults["default_guidance"],
                             max_eta=1.0, default_eta=defaults["default_eta"],
                             max_retries=max_retries, default_retries=retries, redraw_share=redraw_share)
        self._cache: OrderedDict[tuple[bool, str], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    @torch.no_grad()
    def score_clip(self, latents: torch.Tensor, prompt: str) -> torch.Tensor:
        """The verifier's scores (n,) of clips' latents (n, F, C, h, w), or (F, C, h, w) for one clip (a
        ``Video.latents``), against ``prompt``: higher is a better match. Raises ValueError without a verifier."""
        if self.verifier is None:
            raise ValueError(f"model {self.limits.name!r} has no verifier (its weights folder has no verifier/)")
        latents = torch.as_tensor(latents)
        return self.verifier.clip_score(latents[None] if latents.dim() == 4 else latents, *self.encode_prompt(prompt))

    @torch.no_grad()
    def layout_counts(self, latents: torch.Tensor) -> list[int]:
        """The objects in each latent frame of a clip's ``(frame, channel, y, x)`` latents (a ``Video.latents``), as
        the layout latent draws them: 4-connected blobs of cells whose summed shape coverage (the raw latent's
        ``layout_check`` channels, each clamped at 0) exceeds the check's threshold. Raises ValueError without one."""
        if self.layout is None:
            raise ValueError(f"model {self.limits.name!r} has no layout check (its manifest has no layout_check)")
        (first, end), threshold = self.layout
        z = self.vae.denormalize(torch.as_tensor(latents).float().transpose(0, 1)[None])[0]  # (C, F, h, w)
        cover = z[first:end].clamp(min=0).sum(0).cpu().numpy() > threshold  # (F, h, w)
        return [count_blobs(frame) for frame in cover]

    def layout_flaws(self, latents: torch.Tensor) -> int:
        """How many times the object count changes from one latent frame to the next (`layout_counts`): 0 for a
        clip whose objects persist. A clip where one does not (it vanishes, or splits in two, in a latent frame) passes
        every check about a sixth as often as one where they do (bench/RESULTS.md, forty-fifth session), so
        `Generator.run` redraws it (``retries``)."""
        counts = self.layout_counts(latents)
        return sum(a != b for a, b in zip(counts[:-1], counts[1:]))

    def judge_draw(self, latents: torch.Tensor, prompt: str) -> tuple[int, float | None, bool]:
        """(breaks, score, ok) of one draw, for `Generator.run`'s redraws: `layout_flaws`; the verifier's
        `score_clip` when the manifest sets ``redraw_below`` (else None); ok when nothing breaks and the score is
        at or over that floor. Over the seven samples a floor of -8 (about the lowest fifth of first draws) took
        one redraw from every check .632 to .644, at 1.27x the mean time against 1.17x (bench/RESULTS.md)."""
        breaks = self.layout_flaws(latents)
        if self.redraw_below is None:
            return breaks, None, breaks == 0
        score = float(self.score_clip(latents, prompt)[0])
        return breaks, score, breaks == 0 and score >= self.redraw_below

    # -- protocol --------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The manifest's description of the model, its weights' hash (``weights_sha256``) and, for weights
        loaded from a folder other than the shipped one, that ``folder`` (absolute): ``params["model_info"]``,
        where `sora_nb.reproduce` finds the weights that made a clip (the shipped ones by ``params["model"]``)."""
        return {**self.info, **({"folder": self.folder} if self.folder else {})}

    def check(self, request: Request) -> None:
        """Model-specific checks beyond :class:`Request` (prompt length in tokens; a prompt the tokenizer reads
        as empty, such as combining marks alone, which `check_str` counts as visible)."""
        empty = self.text.count_tokens("")
        for name in ("prompt", "negative_prompt"):
            text = getattr(request, name)
            n = self.text.count_tokens(text)
            if text and n <= empty:
                raise ValueError(f"{name} says nothing to model {self.limits.name!r}: its tokenizer drops every "
                                 f"character of {text!r}, so it would read as the empty prompt; use words")
            if n > MAX_TOKENS:
                words = MAX_TOKENS - self.text.count_tokens("")  # less the encoder's own tokens ([CLS], [SEP])
                raise ValueError(f"{name} is too long for model {self.limits.name!r}: {n} tokens, "
                                 f"at most {MAX_TOKENS} (about {words} words)")

    def num_frames(self, request: Request) -> int:
        # Request.build already resolved duration / num_frames against the limits
        return request.num_frames if request.num_frames is not None else self.limits.frames_for(request.duration)

    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    def latent_shape(self, request: Request) -> tuple[int, int, int, int]:
        """(C, F, h, w) of the latent for ``request``: F rounded up to a whole number of the DiT's tokens
        in time (its patch's frames; the decoder's extra frames are trimmed)."""
        cfg, pt = self.vae.config, self.dit.config.patch_size[0]
        f = pt * math.ceil(self.num_frames(request) / (cfg.temporal_factor * pt))  # tokens of tf * pt frames
        return (cfg.latent_channels, f, request.height // cfg.spatial_factor, request.width // cfg.spatial_factor)

    @torch.no_grad()
    def encode_prompt(self, prompt: str, low: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states (1, L, E) and mask (1, L), cached per prompt; ``low``: the low-noise expert's."""
        key = (low, prompt)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        states, mask = (self.low[1] if low else self.text)([prompt])
        with self._lock:
            self._cache[key] = (states, mask)
            while len(self._cache) > 64:
                self._cache.popitem(last=False)
        return states, mask

    def _conditioning(self, request: Request, low: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Text states for the model call: [cond], [uncond] or [cond, uncond] by guidance."""
        g = request.guidance
        if g == 1.0:
            return self.encode_prompt(request.prompt, low)
        if g == 0.0:
            return self.encode_prompt(request.negative_prompt, low)
        (sc, mc), (su, mu) = self.encode_prompt(request.prompt, low), self.encode_prompt(request.negative_prompt, low)
        length = max(sc.shape[1], su.shape[1])
        pad = lambda s, m: (torch.nn.functional.pad(s, (0, 0, 0, length - s.shape[1])),
                            torch.nn.functional.pad(m, (0, length - m.shape[1])))
        (sc, mc), (su, mu) = pad(sc, mc), pad(su, mu)
        return torch.cat([sc, su]), torch.cat([mc, mu])

    def denoiser(self, request: Request) -> Callable[[float], tuple[ShapesDiT, torch.Tensor, torch.Tensor]]:
        """The DiT and its text states and mask for a step at noise level sigma: the one DiT, or with a
        low-noise expert (``low``) that one at sigma ``expert_switch`` and below."""
        text, mask = self._conditioning(request)
        if self.low is None:
            return lambda sigma: (self.dit, text, mask)
        low_text, low_mask = self._conditioning(request, low=True)
        switch, low_dit = self.expert_switch, self.low[0]
        return lambda sigma: (self.dit, text, mask) if sigma > switch else (low_dit, low_text, low_mask)

    def denoise(self, request: Request, generator: torch.Generator) -> Iterator[StepEvent]:
        shape = self.latent_shape(request)
        noise = torch.randn((1, *shape), generator=generator, dtype=torch.float32)  # (1, C, F, h, w)
        denoiser = self.denoiser(request)
        g = request.guidance
        both = g not in (0.0, 1.0)

        previous: list[torch.Tensor | None] = [None]  # each branch's last x0 estimate (self-conditioning)
        used = [g]  # the guidance of the latest step (the model's guidance profile applied)

        @torch.no_grad()
        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            sigma = float(t) / 1000.0
            dit, text, mask = denoiser(sigma)
            if both:
                used[0] = guidance_at(self.guidance_profile, g, sigma)
            pair = both and used[0] != 1.0  # guidance 1 at this step (profile weight 0): the prompt's pass only
            xin = torch.cat([x, x]) if pair else x
            prev = previous[0] if pair or previous[0] is None else previous[0][:1]
            v = dit(xin, t.reshape(1).expand(len(xin)).float(), text if pair else text[:1],
                    mask if pair else mask[:1], prev)
            if dit.config.self_condition:
                est = xin - (t.float() / 1000.0).clamp(min=1e-3) * v  # x0 = x_t - sigma v, per branch
                if both and not pair:  # the negative branch keeps its last estimate (zeros if it has none)
                    est = torch.cat([est, torch.zeros_like(est) if previous[0] is None else previous[0][1:]])
                previous[0] = est
            if pair:
                vc, vu = v.chunk(2)
                v = vu + used[0] * (vc - vu)
            return v

        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)
        for ev in flow_matching_steps(velocity, noise, scheduler, request.steps, eta=request.eta,
                                      generator=generator):
            yield StepEvent(step=ev.step, num_steps=ev.num_steps, timestep=ev.timestep, sigma=ev.sigma,
                            sigma_next=ev.sigma_next, latent=ev.latent[0].transpose(0, 1),
                            x0=ev.x0[0].transpose(0, 1), x_next=ev.x_next[0].transpose(0, 1), guidance=used[0])

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, num_frames: int) -> np.ndarray:
        z = self.vae.denormalize(latents.transpose(0, 1)[None].float())  # (1, C, F, h, w)
        video = self.vae.decode(z, num_frames)[0]  # (3, T, H, W)
        return ((video.permute(1, 2, 3, 0) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()

    @torch.no_grad()
    def preview(self, x0: torch.Tensor) -> np.ndarray:
        z = x0.float().permute(0, 2, 3, 1)  # (F, h, w, C)
        rgb = z @ self.latent_rgb[:-1] + self.latent_rgb[-1]  # (F, h, w, 3)
        return ((rgb + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


# -- building, saving and loading ------------------------------------------------------------------
@contextlib.contextmanager
def float32_default() -> Iterator[None]:
    """Build networks in float32 whatever ``torch.set_default_dtype`` the user chose (a float64 default would
    make float64 layers that the float32 latents cannot go through); the user's default is restored after."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build(words: list[str] | None = None, *, vae_kwargs: dict | None = None, dit_kwargs: dict | None = None,
          text_kwargs: dict | None = None) -> tuple[VideoAutoencoder, ShapesDiT, TextEncoder]:
    """Fresh networks (random weights from the current torch RNG state), float32 whatever the default dtype."""
    with float32_default():
        tokenizer = build_tokenizer(words or BASIC_WORDS)
        text = TextEncoder(tokenizer, build_encoder(len(tokenizer), **(text_kwargs or {})))
        vae = VideoAutoencoder(**(vae_kwargs or {}))
        dit = ShapesDiT(latent_channels=vae.config.latent_channels, text_dim=text.width, **(dit_kwargs or {}))
    return vae.float(), dit.float(), text.float()


def default_scheduler_config(shift: float = 1.0) -> dict[str, Any]:
    """Flow matching with diffusers' Euler scheduler; ``shift`` > 1 spends more of the steps at high noise
    (sigma -> shift * sigma / (1 + (shift - 1) * sigma), as SD3 and Wan do)."""
    config = dict(FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=float(shift)).config)
    if "_use_default_values" in config:  # diffusers builds it from a set: its order follows the string hash seed
        config["_use_default_values"] = sorted(config["_use_default_values"])
    return config


def untrained(seed: int = 0) -> EmbeddedBackend:
    """The embedded architecture with fixed random weights (a placeholder until weights ship)."""
    with torch.random.fork_rng(devices=[]):  # leaves the user's global RNG untouched
        torch.manual_seed(seed)
        # velocity parametrisation: its zero-initialised output is a zero velocity, so the clip stays
        # the seed's noise (an x0-predicting placeholder would collapse every seed to one flat clip)
        vae, dit, text = build(dit_kwargs={"prediction": "velocity"})
        probe = torch.randn(2, vae.config.latent_channels, 4, 16, 16, dtype=torch.float32)
        with torch.no_grad(), float32_default():
            rgb = fit_latent_rgb(vae, probe, vae.decode(vae.denormalize(probe)))
    info = {"name": "shapes-untrained", "trained": False,
            "description": "untrained placeholder: random weights, draws noise, not shapes"}
    return EmbeddedBackend(vae, dit, text, default_scheduler_config(), rgb, info)


def save_vae(vae: VideoAutoencoder, folder: str | Path) -> Path:
    """Save ``vae`` as diffusers does (``config.json`` + ``diffusion_pytorch_model.safetensors``), but with the
    decoding tensors (``HALF_DECODER``) in float16: the encoder stays float32, so a clip's latent (what the DiT
    was trained on) is unchanged, and a decoded frame moves by far less than one uint8 level (bench/RESULTS.md,
    forty-fourth session). It keeps the folder under its 30 MB budget with a five-block decoder. Read back
    with :func:`load_vae`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vae.save_config(folder)
    state = {k: (t.half() if k.startswith(HALF_DECODER) and t.is_floating_point() else t).detach().cpu().contiguous()
             for k, t in vae.state_dict().items()}
    save_file(state, folder / "diffusion_pytorch_model.safetensors", metadata={"format": "pt"})
    return folder


def load_vae(folder: str | Path) -> VideoAutoencoder:
    """An autoencoder folder (``save_vae``'s, or a training stage's float32 one), every parameter float32."""
    return _load_model(VideoAutoencoder, Path(folder)).float()


def save_folder(folder: str | Path, vae: VideoAutoencoder, dit: ShapesDiT, text: TextEncoder,
                scheduler_config: dict[str, Any], latent_rgb: np.ndarray, info: dict[str, Any],
                low: tuple[ShapesDiT, TextEncoder] | None = None, verifier: ClipVerifier | None = None) -> Path:
    """Write a loadable weights folder (safetensors + configs) and its sha256 manifest; ``low`` (with
    ``info["expert_switch"]``): the low-noise expert, in ``low/dit`` and ``low/text_encoder`` (it shares the
    tokenizer)."""
    if "name" in info:  # (load_folder names a folder without one "shapes")
        check_name(info)
    check_scheduler(info, scheduler_config)  # refused before anything is written
    check_expert(info, dit, text, low)
    check_verifier(info, vae, text, verifier)
    check_parts(info, vae, dit, text, low, verifier)
    layout = check_layout(info, vae)
    check_redraw_below(info, layout, verifier)
    check_redraw_share(info, layout)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_vae(vae, folder / "vae")
    dit.save_pretrained(folder / "dit", safe_serialization=True)
    text.save_pretrained(folder)
    if low is not None:
        low[0].save_pretrained(folder / LOW / "dit", safe_serialization=True)
        low[1].save_pretrained(folder / LOW, tokenizer=False)
    if verifier is not None:  # float16 on disk (half the bytes; its scores move by about 1e-3)
        copy.deepcopy(verifier).half().save_pretrained(folder / VERIFIER, safe_serialization=True)
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler_config, indent=1))
    (folder / "latent_rgb.json").write_text(json.dumps(np.asarray(latent_rgb).tolist()))
    for config in folder.rglob("config.json"):  # where a network was loaded from: a path of this machine, which
        data = json.loads(config.read_text())   # would make the same recipe's folders differ from run to run
        if isinstance(data, dict) and "_name_or_path" in data:
            data.pop("_name_or_path")
            config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return write_manifest(folder, info)


def write_manifest(folder: str | Path, info: dict[str, Any]) -> Path:
    """(Re)write ``manifest.json``: the sha256 of every file in ``folder`` plus ``info``."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {"format": FORMAT, **info,
                "files": {str(p.relative_to(folder)): sha256(p) for p in files}}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return folder


def is_weights_folder(folder: str | Path) -> bool:
    """Whether ``folder`` looks like an embedded-model weights folder."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return False
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, OSError):  # a broken manifest is still ours (unless a pipeline's): load_folder says what broke
        return not (Path(folder) / "model_index.json").is_file()
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def verify_folder(folder: Path) -> dict[str, Any]:
    """Check the manifest and every file's sha256; return the manifest. Raises WeightsError."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise WeightsError(f"weights folder {str(folder)!r}: unreadable {MANIFEST} ({err})") from err
    if (not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict)
            or not manifest["files"]):
        raise WeightsError(f"weights folder {str(folder)!r}: {MANIFEST} is not a {FORMAT} manifest")
    for rel, digest in manifest["files"].items():
        if (Path(rel).is_absolute() or ".." in Path(rel).parts or rel == MANIFEST or not isinstance(digest, str)
                or not re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise WeightsError(f"weights folder {str(folder)!r}: {MANIFEST} lists {rel!r}: each entry must be a file "
                               "inside the folder with its sha256 (64 hex digits)")
        path = folder / rel
        if not path.is_file():
            raise WeightsError(f"weights file {str(path)!r} is missing (listed in {MANIFEST})")
        if sha256(path) != digest:
            raise WeightsError(f"weights file {str(path)!r} is corrupt or was modified: its sha256 does not "
                               f"match {MANIFEST}; reinstall sora_nb or retrain with `sora-nb train`")
    # every other file is refused, whatever its name: the loaders read more than the listed names (diffusers
    # prefers a *.safetensors.index.json, which would swap in unhashed or missing weights)
    present = set()
    for root, dirs, files in os.walk(folder):
        linked = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        if linked:
            raise WeightsError(f"weights folder {str(folder)!r} holds a linked folder ({os.path.join(root, linked[0])}): "
                               "copy its files in instead")
        present.update(str((Path(root) / name).relative_to(folder)) for name in files)
    unlisted = sorted(present - set(manifest["files"]) - {MANIFEST})
    if unlisted:
        raise WeightsError(f"weights folder {str(folder)!r} holds files not in {MANIFEST}: {', '.join(unlisted[:5])}"
                           f"{', ...' if len(unlisted) > 5 else ''} (remove them, or export the folder again)")
    return manifest


def read_json(path: Path) -> Any:
    """A weights folder's JSON file; WeightsError naming the file if it is not valid JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise WeightsError(f"weights file {str(path)!r} could not be read as JSON ({err})") from err


def _load_model(cls: Any, folder: Path) -> Any:
    """``cls.from_pretrained(folder)`` (safetensors, no network), after checking that ``config.json`` holds only
    settings ``cls`` takes (diffusers would drop a misspelt one with a log line, and build the default), and that
    the file held every parameter and buffer the model has (`check_stored_tensors`); float32 whatever the default dtype."""
    config_path, weights_path = folder / "config.json", folder / "diffusion_pytorch_model.safetensors"
    if config_path.is_file():  # (a missing one: from_pretrained's own error names it)
        config = read_json(config_path)
        if not isinstance(config, dict):
            raise WeightsError(f"weights file {str(config_path)!r} must hold a JSON object")
        params = inspect.signature(cls.__init__).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            unknown = sorted(k for k in config if not k.startswith("_") and (k not in params or k == "self"))
            if unknown:
                raise WeightsError(f"weights file {str(config_path)!r} has settings {cls.__name__} does not take: "
                                   f"{', '.join(unknown)} (misspelt? it takes {', '.join(k for k in params if k != 'self')})")
    try:
        with float32_default():
            module = cls.from_pretrained(folder, use_safetensors=True, local_files_only=True, low_cpu_mem_usage=False)
    except (RuntimeError, ValueError) as err:  # torch's load_state_dict: RuntimeError("... size mismatch for ...")
        if "size mismatch" not in str(err):
            raise
        lines = [line.strip() for line in str(err).splitlines()
                 if line.strip() and "ignore_mismatched_sizes" not in line and not line.startswith("Error(s) in")]
        raise WeightsError(f"weights file {str(weights_path)!r} does not fit the {cls.__name__} that "
                           f"{str(config_path)!r} describes: {' '.join(lines[:4])}"
                           f"{f' (and {len(lines) - 4} more)' if len(lines) > 4 else ''}") from None
    check_stored_tensors(weights_path, module, error=WeightsError)
    return module.float()


DOCUMENTS = ("MODEL_CARD.md", "scores.json")  # a folder's own account of itself: hashed, but not what draws


def weights_digest(manifest: dict[str, Any]) -> str:
    """The model's identity in clips' params (``weights_sha256``): the sha256 of every file the loader reads, so
    two runs with the same seed (the same networks, other wall times in their cards) are the same model."""
    files = {k: v for k, v in manifest["files"].items() if k not in DOCUMENTS}
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


def manifest_digest(folder: str | Path) -> str:
    """The sha256 of a weights folder's manifest file (it lists every file's sha256), "" if it cannot be read:
    `sora_nb.load` caches a folder's model under it, so weights written again into the folder load again."""
    try:
        return hashlib.sha256((Path(folder) / MANIFEST).read_bytes()).hexdigest()
    except OSError:
        return ""


def load_folder(folder: str | Path, *, shipped: bool = False) -> EmbeddedBackend:
    """Load a weights folder written by :func:`save_folder` (hash-checked, safetensors only). Its absolute path
    is recorded in the clips' ``params["model_info"]["folder"]`` unless it is the ``shipped`` weights."""
    folder = Path(folder)
    manifest = verify_folder(folder)
    # modules are built with random weights before the file's replace them: the user's global RNG is left as it was
    with torch.random.fork_rng(devices=[]):
        try:
            vae = load_vae(folder / "vae")
            dit = _load_model(ShapesDiT, folder / "dit")
            with float32_default():
                text = TextEncoder.from_pretrained(folder).float()
            low = None
            if (folder / LOW).is_dir():
                low_dit = _load_model(ShapesDiT, folder / LOW / "dit")
                with float32_default():
                    low = (low_dit, TextEncoder.from_pretrained(folder / LOW, tokenizer_folder=folder).float())
            verifier = (_load_model(ClipVerifier, folder / VERIFIER).float()  # stored in float16
                        if (folder / VERIFIER).is_dir() else None)
            scheduler_config = read_json(folder / "scheduler" / "scheduler_config.json")
            latent_rgb = np.asarray(read_json(folder / "latent_rgb.json"), dtype=np.float32)
            channels = vae.config.latent_channels
            if latent_rgb.shape != (channels + 1, 3):
                raise WeightsError(f"weights file {str(folder / 'latent_rgb.json')!r} must hold ({channels} + 1) x 3 "
                                   f"numbers for a {channels}-channel latent, got shape {latent_rgb.shape}")
        except WeightsError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError, SafetensorError) as err:
            raise WeightsError(f"weights folder {str(folder)!r} could not be loaded: {err}") from err
    info = {k: v for k, v in manifest.items() if k not in {"files", "format"}}
    info.setdefault("name", "shapes")
    info["weights_sha256"] = weights_digest(manifest)
    backend = EmbeddedBackend(vae, dit, text, scheduler_config, latent_rgb, info, low, verifier)
    backend.folder = "" if shipped else str(folder.resolve())
    return backend


def load_default() -> EmbeddedBackend:
    """The shipped weights if the package has them, else the untrained placeholder."""
    if (WEIGHTS_DIR / MANIFEST).is_file():
        return load_folder(WEIGHTS_DIR, shipped=True)
    if any(WEIGHTS_DIR.rglob("*.safetensors")):  # the weights without their manifest: broken, not absent
        raise WeightsError(f"the shipped weights folder {str(WEIGHTS_DIR)!r} has lost its {MANIFEST}, so its files "
                           "cannot be checked: reinstall sora_nb")
    swap = [p for p in (WEIGHTS_DIR.with_name(WEIGHTS_DIR.name + ".partial"),
                        WEIGHTS_DIR.with_name(WEIGHTS_DIR.name + ".old")) if p.is_dir()]
    if swap:  # `sora-nb train --ship` was killed between its two renames
        raise WeightsError(f"the shipped weights are mid-swap ({', '.join(p.name for p in swap)} beside "
                           f"{str(WEIGHTS_DIR)!r}): run the same `sora-nb train --ship` command again, or reinstall sora_nb")
    return untrained()
