"""Command line: ``sora-nb generate "a red circle moving right" --seed 0 --duration 2 -o clip.mp4``, and
``sora-nb reproduce clip.mp4 -o again.mp4``.

Bad input exits with status 2 and one line on stderr naming the parameter and its allowed range.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (no usage dump)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"sora-nb: error: {message}\n")


def _number(kind: type):
    """argparse type that keeps our own messages (range checks happen in Request.build)."""
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        return value
    convert.__name__ = kind.__name__
    return convert


def build_parser() -> argparse.ArgumentParser:
    """The ``sora-nb`` argument parser."""
    from sora_nb import __version__

    parser = _Parser(prog="sora-nb", description="Explore text-to-video diffusion transformers.")
    parser.add_argument("--version", action="version", version=f"sora-nb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    gen = sub.add_parser("generate", help="generate a clip and write it to a video file",
                         description="Generate a clip from a prompt and write it (mp4/webm/gif by extension). "
                                     "The mp4 and webm carry every parameter as JSON metadata.")
    gen.add_argument("prompt", help='what to draw, e.g. "a red circle moving right" (1 to 400 characters)')
    gen.add_argument("-o", "--output", default="clip.mp4",
                     help="output file; .mp4, .webm or .gif; its folder must exist; a file of that name is replaced once "
                          "the new one is complete (default: clip.mp4)")
    gen.add_argument("--seed", type=_number(int), default=0,
                     help="integer seed in [0, 4294967295] (2^32 - 1); same seed and options give the same clip (default: 0)")
    gen.add_argument("--duration", type=_number(float), default=2.0,
                     help="seconds of video, > 0 and up to the model's maximum (4 for shapes) (default: 2)")
    gen.add_argument("--guidance", type=_number(float), default=None,
                     help="classifier-free guidance scale in [0, 50]; 0 ignores the prompt, 1 disables "
                          "guidance (default: the model's own, e.g. the shapes model's card value)")
    gen.add_argument("--steps", type=_number(int), default=20, help="denoising steps in [1, 1000] (default: 20)")
    gen.add_argument("--eta", type=_number(float), default=None,
                     help="fresh noise per step in [0, 1]: 0 is the deterministic sampler, 1 re-noises every "
                          "step (default: the model's own; diffusers pipelines accept only 0)")
    gen.add_argument("--width", type=_number(int), default=None,
                     help="width in pixels, one the model supports (shapes: 64 or 96) (default: the model's)")
    gen.add_argument("--height", type=_number(int), default=None,
                     help="height in pixels, one the model supports (shapes: 64) (default: the model's)")
    gen.add_argument("--negative-prompt", default="", help="what to steer away from (default: none)")
    gen.add_argument("--best-of", type=_number(int), default=1,
                     help="draw this many clips (seeds seed, seed + 1000003, ...) and keep the one the model's verifier "
                          "scores highest, in [1, 16]; needs a model with a verifier (shapes has one) (default: 1)")
    gen.add_argument("--accept", type=_number(float), default=None,
                     help="with --best-of: stop at the first clip the verifier scores at least this, else keep the "
                          "highest (shapes: 0, with --best-of 4, is the measured choice) (default: always the highest)")
    gen.add_argument("--retries", type=_number(int), default=None,
                     help="redraw a clip that fails the model's own check (shapes: its layout breaks between latent frames, an "
                          "object vanishing or splitting, or its verifier scores it under the manifest's redraw_below) "
                          "up to this many times, each redraw in the model's share of the steps (shapes: 12 of 20, then 8), "
                          "keeping the best draw; shapes: 0 to 8; models without a check "
                          "accept only 0 (default: the model's own; shapes: 3)")
    gen.add_argument("--model", default="shapes",
                     help="shapes, shapes-untrained, a weights folder from sora-nb train, or a diffusers video "
                          "pipeline: a Hub repo id (e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers; needs the network or "
                          "its cache) or a local pipeline folder (default: shapes)")
    again = sub.add_parser("reproduce", help="make a saved clip again from the params its file records",
                           description="Read the params an mp4 or webm written by sora-nb records, load the model "
                                       "that made it (refusing other weights under its name), draw it again and "
                                       "write it. Same machine, same frames.")
    again.add_argument("clip", help="an mp4 or webm written by sora-nb (or Video.save)")
    again.add_argument("-o", "--output", required=True,
                       help="output file; .mp4, .webm or .gif; its folder must exist; not the clip itself; a "
                            "file of that name is replaced once the new one is complete")
    again.add_argument("--model", default=None,
                       help="the model or weights folder to draw it with (default: the one the clip records)")
    sub.add_parser("models", help="list the model names sora-nb knows (--model also takes weights folders and "
                                  "diffusers pipelines)")
    # `sora-nb train ...` goes to sora_nb.train's own parser before this one parses (see main); listed here for --help
    sub.add_parser("train", help="train the embedded model from the shapes world (sora-nb train --help)",
                   add_help=False)
    return parser


def cmd_generate(args: argparse.Namespace) -> int:
    """Validate everything first, generate, write atomically, print where."""
    import sora_nb
    from sora_nb.api import MAX_CANDIDATES
    from sora_nb.media import check_output_path, ffmpeg_exe

    out = check_output_path(args.output, "--output")
    ffmpeg_exe()  # before the model runs, not after
    if not 1 <= args.best_of <= MAX_CANDIDATES:
        raise ValueError(f"--best-of must be an integer in [1, {MAX_CANDIDATES}], got {args.best_of}")
    if args.accept is not None and args.best_of < 2:
        raise ValueError(f"--accept needs --best-of 2 or more, got --best-of {args.best_of}")
    gen = sora_nb.load(args.model)
    kwargs = dict(seed=args.seed, duration=args.duration, steps=args.steps,
                  negative_prompt=args.negative_prompt, trace=False)
    if args.guidance is not None:
        kwargs["guidance"] = args.guidance
    if args.eta is not None:
        kwargs["eta"] = args.eta
    if args.width is not None:
        kwargs["width"] = args.width
    if args.height is not None:
        kwargs["height"] = args.height
    if args.retries is not None:
        kwargs["retries"] = args.retries
    start = time.perf_counter()
    if args.best_of > 1:
        video = gen.best_of(args.prompt, candidates=args.best_of, accept=args.accept, **kwargs)
    else:
        video = gen._run(gen.request(args.prompt, **kwargs))  # (validated just now)
    elapsed = time.perf_counter() - start
    path = video.save(out)
    t, h, w, _ = video.frames.shape
    picked = video.params.get("best_of")
    best = ""
    if picked:
        drawn, accept = len(picked["seeds"]), picked.get("accept")
        if accept is not None and picked["scores"][picked["picked"]] >= accept:
            best = f", accepted by the verifier after {drawn} of {picked['candidates']} clips"
        else:
            best = f", best of {drawn} by the verifier" + ("" if accept is None else f" (none reached {accept:g})")
    retry = video.params.get("retry")
    if retry and len(retry["seeds"]) > 1:
        best += f", {len(retry['seeds'])} draws by the model's check (kept draw {retry['picked'] + 1})"
    print(f"wrote {path} ({t} frames {w}x{h} @ {video.fps:g} fps, model {video.params['model']}, "
          f"seed {video.params['seed']}{best}, generated in {elapsed:.2f} s)")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Check the output, draw the clip again, write it atomically, say whether the frames match the file's."""
    import numpy as np

    import sora_nb
    from sora_nb.media import check_input_path, check_output_path, ffmpeg_exe

    clip = check_input_path(args.clip, "clip")
    out = check_output_path(args.output, "--output")
    if out.exists() and os.path.samefile(out, clip):
        raise ValueError(f"--output {str(out)!r} is the clip itself: write the new clip to another name, so the "
                         "two can be compared")
    ffmpeg_exe()
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", RuntimeWarning)
        try:
            video = sora_nb.reproduce(clip, model=args.model, trace=False)
        except ValueError as err:  # the API's advice in the command's words
            raise ValueError(_cli_words(str(err))) from None
    for warning in said:
        print(f"sora-nb: note: {warning.message}", file=sys.stderr)
    elapsed = time.perf_counter() - start
    one_codec = out.suffix.lower() == clip.suffix.lower()  # equal frames encode equally
    before = sora_nb.read_video(clip) if one_codec else None  # read before the save (a link may name the clip)
    path = video.save(out)
    try:
        again = None if before is None else sora_nb.read_video(path)
    except KeyboardInterrupt:  # stopped while comparing: the clip is written (main would say nothing was)
        print(f"sora-nb: stopped after writing {path}, before comparing its frames with the clip's", file=sys.stderr)
        return 130
    if before is None:  # (the README promises a verdict: say why there is none)
        same = (f"; frames not compared: a {out.suffix.lower()} is encoded otherwise than the {clip.suffix.lower()} "
                "clip, write the same format to compare")
    elif np.array_equal(again, before):
        same = ", the same frames as the clip's"
    else:
        same = ", frames DIFFER from the clip's (another machine or torch build?)"
    t, h, w, _ = video.frames.shape
    print(f"wrote {path} ({t} frames {w}x{h}, model {video.params['model']}, seed {video.params['seed']}, "
          f"made again in {elapsed:.2f} s, the model's load included{same})")
    return 0


def _cli_words(message: str) -> str:
    """`sora_nb.reproduce`'s advice as the command line takes it: ``--model`` for ``model=``, no Generator."""
    for api, cli in ((" (or a Generator over it)", ""), (" (or a Generator)", ""), ("pass model= ", "pass --model ")):
        message = message.replace(api, cli)
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sora-nb`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # every later argument is the trainer's own, options included (--out, --help)
        from sora_nb.train import main as train_main

        return train_main(argv[1:], prog="sora-nb train")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            return cmd_generate(args)
        if args.command == "reproduce":
            return cmd_reproduce(args)
        if args.command == "models":
            import sora_nb

            print("\n".join(sora_nb.known_models()))
            return 0
    except (ValueError, TypeError) as err:
        print(f"sora-nb: error: {err}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as err:  # e.g. ffmpeg missing, a disk full or a folder refused at write time
        print(f"sora-nb: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: one line (the clip is written whole or not at all)
        print("sora-nb: stopped; nothing was written", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
