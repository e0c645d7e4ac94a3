"""A weight soup of embedded-model folders: a copy of BASE whose DiT and text stack are the uniform mean of the
SOURCES' (issue 4's sessions measured such soups with bench/bench_samples.py; see bench/RESULTS.md).

    .venv/bin/python scripts/soup.py BASE OUT SOURCE SOURCE [SOURCE ...] [--part main|low]

``--part main`` (the default) averages ``dit/`` and ``text_encoder/``; ``--part low`` the low-noise expert's
``low/dit/`` and ``low/text_encoder/``. Everything else (autoencoder, tokenizer, sampler settings, the other
DiT) is BASE's. The sources must hold the part with the same tensors (names, shapes, dtypes) as BASE. OUT is
written in a temporary folder beside it, sha256-manifested, loaded as the package loads it, and only then
renamed into place: a refused or failed soup leaves nothing behind. OUT must not exist.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file from a checkout
    sys.path.insert(0, str(ROOT))

from sora_nb.backends import embedded  # noqa: E402

PARTS = {"main": ("dit/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"),
         "low": ("low/dit/diffusion_pytorch_model.safetensors", "low/text_encoder/model.safetensors")}


def mean_state(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform mean of state dicts with the same tensors (in float64, cast back); integer tensors must agree."""
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = (sum(s[key].double() for s in states) / len(states)).to(first.dtype)
        else:
            if any(not torch.equal(s[key], first) for s in states[1:]):
                raise ValueError(f"soup: integer tensor {key!r} differs between the sources; it cannot be averaged")
            out[key] = first.clone()
    return out


def soup(base: str | Path, out: str | Path, sources: list[str | Path], part: str = "main") -> Path:
    """Write OUT: BASE with ``part``'s files the mean of the sources'. Raises ValueError on a bad argument or on
    sources that do not match BASE, before anything is written; the package's WeightsError on a tampered folder."""
    base, out, sources = Path(base), Path(out), [Path(s) for s in sources]
    if part not in PARTS:
        raise ValueError(f"part must be one of {sorted(PARTS)}, got {part!r}")
    if len(sources) < 2:
        raise ValueError(f"sources: a soup needs at least 2 weights folders, got {len(sources)}")
    if out.exists():
        raise ValueError(f"out {str(out)!r} exists; a soup is written to a new folder only")
    manifest = embedded.verify_folder(base)  # sha256 of every file, as the package loads it
    for folder in sources:
        embedded.verify_folder(folder)
    states = {}
    for rel in PARTS[part]:
        if not (base / rel).is_file():
            raise ValueError(f"base {str(base)!r} has no {rel} (part {part!r}"
                             f"{': a folder without a low-noise expert' if part == 'low' else ''})")
        want = {k: (v.shape, v.dtype) for k, v in load_file(str(base / rel)).items()}
        states[rel] = []
        for src in sources:
            if not (src / rel).is_file():
                raise ValueError(f"source {str(src)!r} has no {rel} (part {part!r})")
            state = load_file(str(src / rel))
            got = {k: (v.shape, v.dtype) for k, v in state.items()}
            if got != want:
                diff = sorted(set(got) ^ set(want)) or sorted(k for k in got if got[k] != want[k])
                raise ValueError(f"source {str(src)!r}: {rel} does not match base's tensors (first: {diff[0]!r})")
            states[rel].append(state)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        folder = tmp / "soup"
        shutil.copytree(base, folder)
        for rel, group in states.items():
            save_file(mean_state(group), str(folder / rel), metadata={"format": "pt"})
        info = {k: v for k, v in manifest.items() if k not in ("files", "format")}  # base's, less what is rewritten
        info["description"] = (f"a soup: {base.name}'s folder with its {part} DiT and text stack the mean of "
                               f"{len(sources)} folders' ({', '.join(s.name for s in sources)})")
        embedded.write_manifest(folder, info)
        embedded.load_folder(folder)  # loads as the package would, or raises
        folder.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base", help="the weights folder the soup copies (autoencoder, tokenizer, sampler, other DiT)")
    p.add_argument("out", help="the new folder (must not exist)")
    p.add_argument("sources", nargs="+", help="two or more weights folders whose part is averaged")
    p.add_argument("--part", default="main", choices=sorted(PARTS),
                   help="main: dit/ and text_encoder/; low: the low-noise expert's low/dit/ and low/text_encoder/")
    args = p.parse_args(argv)
    try:
        print(soup(args.base, args.out, args.sources, args.part))
    except (ValueError, embedded.WeightsError) as err:
        p.exit(2, f"soup.py: error: {err}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
