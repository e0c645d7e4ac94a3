"""The thin public API: :func:`load` a model, :meth:`Generator.generate` a :class:`~sora_nb.video.Video`."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import numbers
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Iterable

from . import sampler
from .backend import Backend
from ._checks import check_int, check_run_options
from .request import MAX_SEED, Request
from .trace import TraceRecorder
from .video import Video

DEFAULT_MODEL = "shapes"
MAX_CANDIDATES = 16  # Generator.best_of
CANDIDATE_STRIDE = 1_000_003  # candidate j's seed is seed + CANDIDATE_STRIDE * j
RETRY_STRIDE = 999_999_937  # a request's redraw a draws its noise with seed + RETRY_STRIDE * a (Generator.run)
_loaded: dict[Any, "Generator"] = {}
_load_lock = threading.Lock()


@dataclasses.dataclass
class _Draw:
    """One draw of a `Generator.run`, its frames None until `Generator._decoded` decodes them (a redraw decodes
    only the draw it keeps)."""

    latents: Any          # (frame, channel, y, x) on the CPU, as Video.latents
    device_latents: Any   # the same on the model's device, for the decoder
    params: dict
    trace: Any
    frames: Any = None    # uint8 (T, H, W, 3) once decoded


class Generator:
    """A loaded model. ``generate`` takes the same keywords whatever the backend."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self._local = threading.local()

    @property
    def last_latents(self) -> Any:
        """Final latents of this thread's latest finished run, kept even if its decode failed (per thread, so a
        live panel's runs or another thread's never replace the ones a failed decode left here)."""
        return getattr(self._local, "latents", None)

    @last_latents.setter
    def last_latents(self, value: Any) -> None:
        self._local.latents = value

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
        if lim.family:  # diffusers models: any multiple (the sizes are suggestions), or only the sizes listed
            took = (f"width/height multiples of {lim.size_multiple}, default {lim.default_size[0]}x{lim.default_size[1]}"
                    if lim.size_multiple else f"sizes [{sizes}]")
            return (f"Generator(model={self.name!r}, family={lim.family!r}, fps={lim.fps:g}, frames={lim.frame_rule} "
                    f"up to {lim.max_frames}, {took})")
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
        duration: float | None = None,
        guidance: float | None = None,
        steps: int = 20,
        eta: float | None = None,
        width: int | None = None,
        height: int | None = None,
        negative_prompt: str = "",
        trace: bool = True,
        record_every: int = 1,
        observers: Iterable[Any] = (),
        cancel: threading.Event | None = None,
        num_frames: int | None = None,
        image: Any = None,
        retries: int | None = None,
    ) -> Video:
        """Generate a clip.

        Args:
          prompt: what to draw, e.g. ``"a red circle moving right"``.
          seed: integer seed (same seed and parameters, same video); None draws a fresh one, which
            is recorded in ``params["seed"]``.
          duration: seconds of video, > 0 and up to the model's ``max_duration`` (default 2); the frame
            count is ``round(duration * fps)`` moved to the nearest count the model accepts.
          num_frames: the frame count instead of ``duration`` (it must follow the model's rule, e.g.
            4k+1 for Wan; ``generator.limits.frame_rule``). Both together must agree.
          guidance: classifier-free guidance scale, 0 to 50: 0 draws the unconditional branch alone (the
            negative prompt's, when one is given), 1 the prompt alone (no guidance: a negative prompt then
            has no effect);
            default: the model's own (``generator.limits.default_guidance``; 5 unless its weights say).
            (diffusers pipelines turn guidance off at <= 1; HunyuanVideo's is distilled guidance.)
            An embedded model may vary it by noise level (its manifest's ``guidance_profile``: the
            weight g - 1 scaled per step; the shipped shapes model's raises it in the noisiest steps and
            turns it off in the last ones); ``video.trace.guidance`` holds what each step used.
          steps: denoising steps, 1 to 1000.
          eta: fresh noise per step, 0 to ``generator.limits.max_eta``: 0 is the deterministic sampler (the
            flow ODE), 1 re-noises each step's clean estimate with new noise (still reproducible per
            seed); default: the model's own (``limits.default_eta``: 1 for the shipped shapes model, 0
            for diffusers pipelines, which accept only 0).
          width, height: a size the model supports (``generator.limits.sizes``; diffusers models take
            any multiple of ``generator.limits.size_multiple``); default ``limits.default_size``.
          image: the first frame, for image-to-video models (a PIL image or uint8 array).
          retries: how many times to redraw a clip that fails the model's own check, 0 to
            ``generator.limits.max_retries``, for models that judge their draws (the shipped shapes model: its
            layout breaks between latent frames, an object vanishing or splitting, or its verifier scores it under
            the manifest's ``redraw_below``; up to 8, default 3, ``limits.default_retries``; other models accept
            only 0). Redraw a takes new noise (seed ``seed + 999999937 * a``) and ``limits.redraw_steps(steps, a)``
            steps (shapes: 12 of 20 for the first, 8 for later ones), and the draw with the fewest breaks, then the
            highest score, is kept; ``params["retry"]`` says which (see :meth:`run`). The same seed still gives the
            same clip.
          negative_prompt: what to steer away from (the unconditional branch of guidance): the embedded model
            uses it where the guidance is not 1, diffusers pipelines where it is above 1 (HunyuanVideo only with
            ``call_kwargs={"true_cfg_scale": ...}`` above 1); a diffusers run that would not use it warns.
          trace: record every step into ``video.trace`` (an xarray Dataset).
          record_every: keep every k-th step in the trace (the last is always kept).
          observers: extra observers of the sampling loop (``on_start``/``on_step``/``on_end``).
          cancel: a ``threading.Event``; setting it stops the run between steps, skipping the decode,
            and raises :class:`sora_nb.Cancelled`.
        """
        kwargs: dict[str, Any] = dict(seed=seed, steps=steps,
                                      negative_prompt=negative_prompt, trace=trace, record_every=record_every)
        for name, value in (("guidance", guidance), ("eta", eta), ("width", width), ("height", height),
                            ("duration", duration), ("num_frames", num_frames), ("image", image),
                            ("retries", retries)):
            if value is not None:
                kwargs[name] = value
        return self._run(self.request(prompt, **kwargs), observers=observers, cancel=cancel)

    def best_of(self, prompt: str, *, candidates: int = 2, accept: float | None = None, seed: int | None = 0,
                observers: Iterable[Any] = (), cancel: threading.Event | None = None, **kwargs: Any) -> Video:
        """Generate ``candidates`` clips of one prompt and return the one the model's verifier scores highest.

        Candidate j has seed ``seed + 1000003 * j`` (so candidate 0 is ``generate(prompt, seed=seed)``'s clip);
        every other keyword is :meth:`generate`'s, and all are checked before the first clip is drawn. The
        verifier (`sora_nb.models.verifier`, in the weights folder's ``verifier/``) reads only the final latents
        and the prompt's text states. The clip returned is the picked candidate's, trace and all, with
        ``params["seed"]`` its own seed, so ``generate(prompt, seed=params["seed"], ...)`` draws it again, and
        ``params["best_of"]``: ``{"candidates", "accept", "seeds", "scores", "picked"}``. It costs ``candidates``
        clips (fewer with ``accept``), and each candidate is a `run` of its own, so a model's layout redraws
        (``retries``, default 3 for the shipped shapes model) apply to each; pass ``retries=0`` for exactly that many.

        ``accept`` (a finite verifier score, or None): stop at the first candidate scored at or above it and
        return that one; only if none is, the highest. ``seeds`` and ``scores`` then list the clips drawn.
        With the shipped verifier, ``candidates=4, accept=0`` passed every check as often as the highest of 4
        (.683 over two samples of 200 train prompts) while drawing 2.0 clips on average instead of 4; the
        highest of 8 did no better than of 4 (bench/RESULTS.md, thirty-seventh session).
        Only a model with a verifier has it (the shipped shapes model does); others raise ValueError.
        """
        score = getattr(self.backend, "score_clip", None)
        if score is None or getattr(self.backend, "verifier", None) is None:
            raise ValueError(f"best_of needs a model with a verifier; model {self.name!r} has none "
                             "(the embedded shapes model ships one)")
        candidates = check_int("candidates", candidates, 2, MAX_CANDIDATES)
        if accept is not None:
            if isinstance(accept, bool) or not isinstance(accept, numbers.Real):
                raise TypeError(f"accept must be a finite number (a verifier score) or None, "
                                f"got {type(accept).__name__} {accept!r}")
            try:
                shown = float(accept)  # (numpy's float32/float16 NaN or inf is no Python float, but converts)
            except OverflowError:  # an int too large for a float
                shown = "a number too large for a float"
            if isinstance(shown, str) or not math.isfinite(shown):
                raise ValueError(f"accept must be a finite number (a verifier score) or None, got {shown}")
        observers, cancel = check_run_options(observers, cancel)
        # None means "the model's default" for the keywords whose `generate` default is None, as there
        first = self.request(prompt, seed=seed, **{k: v for k, v in kwargs.items()
                                                   if v is not None or k not in DEFAULT_WHEN_NONE})
        seeds = [(first.seed + CANDIDATE_STRIDE * j) % (MAX_SEED + 1) for j in range(candidates)]
        best, scores = None, []
        for j, s in enumerate(seeds):
            video = self._run(dataclasses.replace(first, seed=s), observers=observers, cancel=cancel)
            scores.append(float(score(video.latents, first.prompt)[0]))
            taken = accept is not None and scores[-1] >= accept
            if best is None or taken or scores[-1] > max(scores[:-1]):
                best, picked = video, j
            if taken:
                break
        best.params["best_of"] = {"candidates": candidates, "accept": None if accept is None else float(accept),
                                  "seeds": seeds[:len(scores)], "scores": scores, "picked": picked}
        return best

    def run(self, request: Request, *, observers: Iterable[Any] = (),
            cancel: threading.Event | None = None) -> Video:
        """Run an already validated :class:`Request`.

        For a model that judges its draws (``limits.max_retries`` > 0; the backend's ``judge_draw(latents,
        prompt) -> (breaks, score, ok)``), a draw that is not ok (the shipped shapes model: its object count
        changes between latent frames, or its verifier scores it under the manifest's ``redraw_below``) is drawn
        again with new noise, up to ``request.retries`` times, stopping at the first ok draw; the draw with the
        fewest breaks, then the highest score (the first of equals), is returned, its own trace and latents with
        it. Redraw a takes ``limits.redraw_steps(request.steps, a)`` steps (the shipped model: 12 of 20, then 8,
        so that a clip redrawn twice costs 2 clips, not 3). ``params["seed"]`` and ``params["steps"]`` stay the request's, so
        the same call gives the same clip, and ``params["retry"]`` records ``{"seeds", "steps", "flaws",
        "picked"}`` (and ``"scores"`` when the backend scores draws): the seed each draw's noise came from, its
        steps, its breaks (and score), and the one kept. Observers see every draw as a run of its own
        (``on_start`` ... ``on_end``, with that draw's request); only the kept draw is decoded, after the last.
        """
        return self._run(self._checked(request), observers=observers, cancel=cancel)

    def _run(self, request: Request, *, observers: Iterable[Any] = (),
             cancel: threading.Event | None = None) -> Video:
        """`run` of a request this generator has just validated (`request`): generate, best_of and reproduce
        build theirs that way, so it is not checked twice (nor warned about twice)."""
        observers, cancel = check_run_options(observers, cancel)
        judge = getattr(self.backend, "judge_draw", None) if self.limits.max_retries > 0 else None
        seeds, steps, flaws, scores, best = [], [], [], [], None
        for a in range(1 + (request.retries if judge is not None else 0)):
            seed = (request.seed + RETRY_STRIDE * a) % (MAX_SEED + 1)
            n = request.steps if a == 0 else self.limits.redraw_steps(request.steps, a)
            this = dataclasses.replace(request, seed=seed, steps=n)
            if judge is None:
                return self._decoded(self._run_once(this, request, observers, cancel))
            draw = self._run_once(this, request, observers, cancel, decode=False)  # only the kept draw is decoded
            seeds.append(seed)
            steps.append(n)
            breaks, score, ok = judge(draw.latents, request.prompt)
            flaws.append(int(breaks))
            scores.append(score)
            key = (flaws[-1], 0.0 if score is None else -float(score))  # fewest breaks, then the highest score
            if best is None or key < best_key:
                best, picked, best_key = draw, a, key
            if ok:
                break
        best.params["retry"] = {"seeds": seeds, "steps": steps, "flaws": flaws, "picked": picked}
        if any(v is not None for v in scores):
            best.params["retry"]["scores"] = scores
        # the trace is a redraw's: its attrs are the call's, as params are (the same call draws it again), and
        # noise_seed / noise_steps say which draw it holds; set before decoding, so that a DecodeError's trace has
        # them too
        if best.trace is not None and len(seeds) > 1:
            best.trace.attrs.update(seed=request.seed, steps=request.steps, noise_seed=seeds[picked],
                                    noise_steps=steps[picked], retry=json.dumps(best.params["retry"]))
        return self._decoded(best)

    def _checked(self, request: Any) -> Request:
        """``request`` validated against this model (as `request` validates keywords): a Request built by hand,
        or for another model, is refused by the field at fault instead of drawing a clip from it."""
        if not isinstance(request, Request):
            raise TypeError(f"request must be a sora_nb.Request (make one with generator.request(prompt, ...)), "
                            f"got {type(request).__name__}")
        fields = {f.name: getattr(request, f.name) for f in dataclasses.fields(Request) if f.name != "prompt"}
        if request.num_frames is None:  # duration decides, as in generate
            fields.pop("num_frames")
        return self.request(request.prompt, **fields)

    def _run_once(self, request: Request, asked: Request, observers: Iterable[Any],
                  cancel: threading.Event | None, decode: bool = True) -> _Draw:
        """One draw of ``request``; its params are ``asked``'s (the request as the user made it). With
        ``decode=False`` its frames are None, for `_decoded` to decode."""
        from . import __version__

        recorder = TraceRecorder(self.backend.preview, request.record_every) if request.trace else None
        all_observers = ([recorder] if recorder else []) + list(observers)
        try:
            latents, frames = sampler.run(self.backend, request, observers=all_observers, cancel=cancel, decode=decode)
        except sampler.DecodeError as err:
            self.last_latents = err.latents
            err.trace = recorder.dataset if recorder else None
            raise
        self.last_latents = latents.detach().cpu()
        model = self.backend.describe()
        params = asked.asdict()
        num_frames = self.backend.num_frames(request) if frames is None else int(frames.shape[0])
        params.update(model=model.get("name", self.name), num_frames=num_frames,
                      fps=float(self.limits.fps), sora_nb_version=__version__,
                      model_info={k: v for k, v in model.items() if k != "name"}, runtime=runtime())
        return _Draw(latents=self.last_latents, device_latents=latents, params=params,
                     trace=recorder.dataset if recorder else None, frames=frames)

    def _decoded(self, draw: _Draw) -> Video:
        """The draw's Video, decoding its latents first if `_run_once` did not (a failure is a DecodeError that
        keeps them)."""
        self.last_latents = draw.latents
        frames = draw.frames
        if frames is None:
            try:
                frames = sampler.decode_latents(self.backend, draw.device_latents, draw.params["num_frames"])
            except sampler.DecodeError as err:
                err.trace = draw.trace
                raise
        return Video(frames=frames, fps=float(self.limits.fps), params=draw.params, trace=draw.trace,
                     latents=draw.latents)

    def decode(self, latents: Any, num_frames: int) -> Any:
        """Decode ``(frame, channel, y, x)`` latents (``video.latents``, ``generator.last_latents`` or a
        :class:`sora_nb.sampler.DecodeError`'s) into uint8 frames ``(T, H, W, 3)``. ``num_frames``: 1 to the frames
        the latents hold: F latent frames hold ``F * t`` frames (``t`` = ``limits.temporal_factor``), or with a causal
        VAE (a frame rule ``4k+1``: every diffusers family) ``(F - 1) * t + 1``."""
        import torch

        if not isinstance(latents, torch.Tensor) or latents.ndim != 4:
            raise TypeError(f"latents must be a (frame, channel, y, x) torch tensor (video.latents, "
                            f"generator.last_latents or a DecodeError's .latents), got {type(latents).__name__}"
                            f"{tuple(getattr(latents, 'shape', ()))}")
        channels = self.backend.latent_channels() if hasattr(self.backend, "latent_channels") else latents.shape[1]
        if latents.shape[1] != channels:  # (the VAE's own (channel, frame, y, x) layout, or another model's latents)
            raise ValueError(f"latents must be (frame, channel, y, x) with this model's {channels} channels, got shape "
                             f"{tuple(latents.shape)}")
        f, t = latents.shape[0], max(1, self.limits.temporal_factor)
        most = (f - 1) * t + 1 if self.limits.frame_step > 1 else f * t
        num_frames = check_int("num_frames", num_frames, 1, most)
        frames = self.backend.decode(latents, num_frames)
        if frames.shape[0] != num_frames:  # a causal VAE's latents hold (frames - 1) * factor + 1
            raise ValueError(f"num_frames must be 1 to {frames.shape[0]} for these {latents.shape[0]} latent frames, "
                             f"got {num_frames}")
        return frames


# `generate`'s keywords whose None means "the model's default" (the others refuse None, as `Request` does); best_of
# passes its keywords on the same way
DEFAULT_WHEN_NONE = frozenset(name for name, p in inspect.signature(Generator.generate).parameters.items()
                              if p.default is None)


def load(model: Any = DEFAULT_MODEL, *, device: Any = None, dtype: Any = None, offload: str | None = None,
         vae_tiling: bool = False, **options: Any) -> Generator:
    """Load a model: the embedded one by name, or a diffusers video pipeline.

    ``model`` is one of

    - ``"shapes"`` (the embedded default) or ``"shapes-untrained"``; a sora_nb weights folder;
    - a diffusers text- or image-to-video pipeline object (Wan 2.1/2.2, LTX-Video, CogVideoX,
      HunyuanVideo, Mochi), a local folder saved with ``save_pretrained``, or a Hugging Face repo id
      such as ``"Wan-AI/Wan2.1-T2V-1.3B-Diffusers"``.

    For diffusers pipelines: ``device`` (default ``"cuda"`` when there is one, else the CPU; a
    pipeline object stays where it is unless asked), ``dtype`` (default bfloat16 on CUDA, float32 on
    the CPU; pipeline objects keep theirs unless asked), ``offload`` (None, ``"model"`` for
    ``enable_model_cpu_offload`` or ``"sequential"`` for ``enable_sequential_cpu_offload``),
    ``vae_tiling`` (tiled VAE decode) and ``options`` for the backend (``fps``, ``max_frames``,
    ``default_size``, ``sizes``, ``call_kwargs`` passed to every pipeline call); see
    :mod:`sora_nb.backends.diffusers_video`. The embedded model takes none of these.

    Loaded generators are cached per name and options, so ``load("shapes")`` twice costs one load;
    pipeline objects are wrapped anew each time.
    """
    from .backends import diffusers_video, embedded

    if isinstance(model, Generator):
        return model
    pipeline_options = dict(device=device, dtype=dtype, offload=offload, vae_tiling=vae_tiling, **options)
    if not isinstance(model, (str, os.PathLike)) and diffusers_video.is_pipeline(model):
        return Generator(diffusers_video.from_pipeline(model, **pipeline_options))
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str):
        raise TypeError(f"model must be a model name ({', '.join(known_models())}), a folder path, a diffusers "
                        f"repo id or a diffusers pipeline object, got {type(model).__name__}")
    if not model.strip():
        raise ValueError(f"model must be a model name ({', '.join(known_models())}), a folder path or a diffusers "
                         "repo id, got an empty string")
    path = Path(model).expanduser()
    embedded_name = model in ("shapes", "shapes-untrained") or (path.is_dir() and embedded.is_weights_folder(path))
    if embedded_name and any(v not in (None, False) for v in pipeline_options.values()):
        given = ", ".join(k for k, v in pipeline_options.items() if v not in (None, False))
        raise TypeError(f"the embedded model takes no loading options (got {given}); they are for diffusers "
                        "pipelines")
    if embedded_name and model not in ("shapes", "shapes-untrained"):
        # a folder is cached under its path and its manifest (every file's sha256): weights trained again into
        # the same folder load anew instead of returning the model loaded before
        folder = path.resolve()
        key = ("folder", str(folder), embedded.manifest_digest(folder))
    elif model == "shapes":  # the shipped folder, by its manifest too: weights shipped since (`sora-nb train
        # --ship` in another process) load anew instead of the ones loaded before
        key = ("name", model, embedded.manifest_digest(embedded.WEIGHTS_DIR))
    elif embedded_name:
        key = ("name", model)
    else:
        key = ("pipeline", model, repr(sorted((k, repr(v)) for k, v in pipeline_options.items())))
        if path.is_dir() and diffusers_video.is_pipeline_folder(path):  # a pipeline folder saved again loads anew
            # (only a pipeline folder is walked: `load("~")` stat-ed every file under it before saying it is no model)
            folder = path.resolve()
            key = ("pipeline folder", str(folder), diffusers_video.folder_fingerprint(folder), key[2])
    with _load_lock:
        if key in _loaded:
            return _loaded[key]
        if model == "shapes":
            gen = Generator(embedded.load_default())
        elif model == "shapes-untrained":
            gen = Generator(embedded.untrained())
        elif path.is_dir():
            if embedded.is_weights_folder(path):
                gen = Generator(embedded.load_folder(path))
            elif diffusers_video.is_pipeline_folder(path):
                gen = Generator(diffusers_video.from_pretrained(str(path), **pipeline_options))
            else:
                raise ValueError(f"model folder {model!r} is not a sora_nb weights folder (no {embedded.MANIFEST} "
                                 f"with format {embedded.FORMAT!r}) nor a diffusers pipeline folder (no "
                                 f"{diffusers_video.MODEL_INDEX})")
        elif path.exists():  # a file (a typo'd repo id would not exist here): not looked up on the Hub
            raise ValueError(f"model {model!r} is a file, not a weights folder or a diffusers pipeline folder")
        elif diffusers_video.looks_like_repo_id(model):
            gen = Generator(diffusers_video.from_pretrained(model, **pipeline_options))
        else:
            raise ValueError(f"unknown model {model!r}: use one of {', '.join(known_models())}, a path to a "
                             "weights folder or diffusers pipeline folder, or a diffusers repo id (owner/name)")
        if key[0] in ("folder", "pipeline folder") or key[:2] == ("name", "shapes"):  # the model loaded before from weights since
            for old in [k for k in _loaded if k[:2] == key[:2]]:  # replaced is not kept
                del _loaded[old]
        _loaded[key] = gen
        return gen


def known_models() -> list[str]:
    """Names :func:`load` understands."""
    return ["shapes", "shapes-untrained"]


def best_of(prompt: str, **kwargs: Any) -> Video:
    """The best of several clips by the embedded model's verifier (``load("shapes")``); see :meth:`Generator.best_of`."""
    model = kwargs.pop("model", DEFAULT_MODEL)
    return load(model).best_of(prompt, **kwargs)


def generate(prompt: str, **kwargs: Any) -> Video:
    """Generate a clip with the embedded default model (``load("shapes")``); see :meth:`Generator.generate`."""
    recorded = sorted(set(kwargs) & (RECORDED_ONLY - {"model"}))
    if recorded:  # e.g. generate(**video.params)
        raise TypeError(f"{', '.join(recorded)} {'is' if len(recorded) == 1 else 'are'} recorded in a clip's params, "
                        "not parameters of generate: sora_nb.reproduce(video) (or a params dict, or a saved clip's "
                        "path) makes the clip again")
    model = kwargs.pop("model", DEFAULT_MODEL)
    return load(model).generate(prompt, **kwargs)


def _as_method(function: Any, method: Any) -> None:
    """Give the module-level ``function`` the keywords, defaults and docs of the Generator ``method`` it calls
    (plus ``model=``), so ``help()`` and a notebook's tooltip show them rather than ``**kwargs``."""
    sig = inspect.signature(method)
    params = [p for p in sig.parameters.values() if p.name != "self"]
    model = inspect.Parameter("model", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_MODEL)
    at = next((i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_KEYWORD), len(params))
    function.__signature__ = sig.replace(parameters=[*params[:at], model, *params[at:]])
    function.__doc__ = (f"{function.__doc__}\n\n``model``: anything :func:`load` takes (default ``{DEFAULT_MODEL!r}``). "
                        f"The rest, from :meth:`Generator.{method.__name__}`:\n\n{inspect.getdoc(method)}")


_as_method(generate, Generator.generate)
_as_method(best_of, Generator.best_of)


def runtime() -> dict[str, Any]:
    """What besides the model and the params shapes a clip's pixels: torch's build and its CPU thread count (a
    float32 sum in another order can move a pixel by a level)."""
    import torch

    return {"torch": torch.__version__, "threads": torch.get_num_threads()}


# what a clip's params record besides its request's fields: which model made it, and how
DECIDING_FIELDS = ("negative_prompt", "seed", "steps", "guidance", "eta", "width", "height", "retries")
RECORDED_ONLY = frozenset({"model", "model_info", "fps", "sora_nb_version", "retry", "best_of", "runtime"})
REQUEST_FIELDS = frozenset(f.name for f in dataclasses.fields(Request))
# model_info fields that must agree between the clip and the model that draws it again (those the model records)
SAME_MODEL_FIELDS = ("weights_sha256", "family", "pipeline", "scheduler", "scheduler_config", "x0", "dtype",
                     "call_kwargs", "vae_tiling")


def reproduce(clip: Any, *, model: Any = None, image: Any = None, trace: bool | None = None,
              observers: Iterable[Any] = (), cancel: threading.Event | None = None) -> Video:
    """Make a clip again from what it records: a :class:`Video`, its ``params`` dict, or the path of a clip saved
    as mp4 or webm (whose metadata hold its params; :func:`sora_nb.read_params`).

    The model is ``model`` when given (anything :func:`load` takes, or a :class:`Generator`); else the one the clip
    names: its weights folder (``params["model_info"]["folder"]``, for weights loaded from a folder other than
    the shipped ones), else ``params["model"]`` (``"shapes"``, a diffusers repo id or folder, loaded with the
    recorded ``dtype``, ``fps``, ``call_kwargs``, ``vae_tiling`` and ``max_frames``). Before anything is drawn, the model's ``model_info`` is
    compared with the clip's (the weights' sha256 for embedded models; the pipeline, scheduler, x0 rule, dtype,
    call_kwargs and VAE tiling for diffusers ones), its fps and its name with ``params["model"]``: a model that would draw
    another clip under the same name is refused, naming what differs, instead of
    drawing another clip. A clip made from an image (image-to-video) needs that ``image`` again; its sha256 is
    checked. ``trace`` (default: as recorded) and ``observers``/``cancel`` are :meth:`Generator.generate`'s.

    The clip returned has the same frames on the same machine with the same torch build and CPU thread count,
    which the clip records (``params["runtime"]``; a RuntimeWarning says when they differ). A clip picked by
    ``best_of`` is drawn again from its own seed (``params["seed"]``), so its params have no ``best_of`` entry;
    one that was redrawn (``retries``) redraws the same way."""
    from . import __version__
    from .backends import diffusers_video
    from .media import read_params
    from .request import describe_image

    if isinstance(clip, Video):
        params = clip.params
    elif isinstance(clip, dict):
        params = clip
    elif isinstance(clip, (str, os.PathLike)):
        params = read_params(clip, "clip")
        if not params:
            raise ValueError(f"clip {os.fspath(clip)!r} carries no sora_nb params: reproduce reads an mp4 or webm "
                             "written by sora_nb (a .gif carries none)")
    else:
        raise TypeError(f"clip must be a Video, its params dict or the path of a saved mp4/webm clip, got "
                        f"{type(clip).__name__}")
    if "prompt" not in params or "model" not in params:
        raise ValueError("clip's params must hold at least 'prompt' and 'model' (a Video's params, as "
                         f"sora_nb.generate records them); got keys {', '.join(sorted(map(str, params))) or 'none'}")
    for key in ("prompt", "model"):
        if not isinstance(params[key], str):
            raise TypeError(f"clip's params[{key!r}] must be a str, got {type(params[key]).__name__}")
    # every key that decides the pixels (a missing one was the model's default: another clip, drawn silently)
    missing = [k for k in DECIDING_FIELDS if k not in params]
    if "num_frames" not in params and "duration" not in params:
        missing.append("num_frames (or duration)")
    if missing:
        raise ValueError(f"clip's params lack {', '.join(missing)}, which decide its frames: reproduce needs a "
                         "Video's params as sora_nb.generate records them")
    unknown = sorted(set(params) - REQUEST_FIELDS - RECORDED_ONLY)
    if unknown:
        raise ValueError(f"clip's params hold keys this sora_nb ({__version__}) does not know: {', '.join(unknown)} "
                         f"(written by sora_nb {params.get('sora_nb_version', '?')})")
    info = params.get("model_info") or {}
    if not isinstance(info, dict):
        raise TypeError(f"clip's params['model_info'] must be a dict, got {type(info).__name__}")
    # a diffusers clip's load options that shape its frames
    recorded = {k: v for k, v in (("fps", params.get("fps")), ("call_kwargs", info.get("call_kwargs")),
                                  ("vae_tiling", info.get("vae_tiling") is True or None),
                                  ("max_frames", info.get("max_frames") if isinstance(info.get("max_frames"), int) else None))
                if v is not None and (k != "call_kwargs" or isinstance(v, dict))}
    if model is None:
        if info.get("source") == "object":
            raise ValueError(f"clip was made by a diffusers pipeline object ({params['model']!r}), which cannot be "
                             "loaded by name: pass model= that pipeline (or a Generator over it)")
        if info.get("folder") and "pipeline" not in info:
            if not isinstance(info["folder"], str):
                raise TypeError(f"clip's params['model_info']['folder'] must be a str (a weights folder), got "
                                f"{type(info['folder']).__name__}")
            if not Path(info["folder"]).is_dir():
                raise ValueError(f"clip was made by the weights in folder {info['folder']!r}, which is not there "
                                 "any more: pass model= the folder (or a Generator) with those weights")
            gen = load(info["folder"])
        elif "pipeline" in info and info.get("dtype"):  # a diffusers pipeline, with the options that shape a clip
            options = {"dtype": info["dtype"], **recorded}
            folder = info.get("folder")
            if isinstance(folder, str) and folder and Path(folder).is_dir():  # a saved pipeline folder: its
                options["name"] = params["model"]  # absolute path, whatever the working folder is now
                gen = load(folder, **options)
            else:
                gen = load(params["model"], **options)
        else:
            gen = load(params["model"])
    elif "pipeline" in info and not isinstance(model, (str, os.PathLike, Generator)):
        # a pipeline object: with the options the clip records (the object's own name when it was given one)
        gen = load(model, name=params["model"], **recorded)
    elif ("pipeline" in info and info.get("dtype") and isinstance(model, (str, os.PathLike))
          and diffusers_video.is_pipeline_folder(model)):
        # a pipeline folder (the one that made it, or a copy moved elsewhere): loaded as the clip records, under
        # its recorded name (the folder's path, absolute or not, is not the model)
        gen = load(os.fspath(model), name=params["model"], dtype=info["dtype"], **recorded)
    else:
        gen = load(model)
    loaded = gen.backend.describe()
    differ = [(key, loaded.get(key), info.get(key)) for key in SAME_MODEL_FIELDS
              if key in info and loaded.get(key) != info.get(key)]
    if gen.name != params["model"]:
        differ.insert(0, ("name", gen.name, params["model"]))
    if "fps" in params and float(gen.limits.fps) != params["fps"]:
        differ.append(("fps", float(gen.limits.fps), params["fps"]))
    if differ:
        said = "; ".join(f"{key} {now!r}, the clip's {then!r}" for key, now, then in differ)
        where = info.get("folder") or params["model"]
        raise ValueError(f"model {gen.name!r} is not the model that made this clip ({said}): pass model= the weights "
                         f"that made it ({where!r})")
    fields = {k: v for k, v in params.items() if k in REQUEST_FIELDS and k != "image"}
    if trace is not None:
        fields["trace"] = trace
    recorded_image = params.get("image")
    if recorded_image is not None and image is None:
        raise ValueError(f"clip was made from an image ({recorded_image}): pass image= that image")
    if image is not None:
        fields["image"] = image
    request = gen.request(params["prompt"], **{k: v for k, v in fields.items() if k != "prompt"})
    if image is not None and recorded_image != describe_image(request.image):
        raise ValueError(f"image is not the one that made this clip: {describe_image(request.image)}, the clip's "
                         f"{recorded_image or 'none (a text-to-video clip)'}")
    made, now = params.get("runtime"), runtime()
    if isinstance(made, dict) and made and made != now:
        warnings.warn(f"this clip was made with torch {made.get('torch')} on {made.get('threads')} CPU threads and "
                      f"this process has torch {now['torch']} on {now['threads']}: its pixels may differ by a level "
                      "or so (torch.set_num_threads to match)", RuntimeWarning, stacklevel=2)
    return gen._run(request, observers=observers, cancel=cancel)
