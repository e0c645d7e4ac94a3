"""A weight soup of embedded-model folders: a copy of BASE whose DiT and text stack are the uniform mean of the
SOURCES' (issue 4's sessions measured such soups with bench/bench_samples.py; see bench/RESULTS.md).

    .venv/bin/python scripts/soup.py BASE OUT SOURCE SOURCE [SOURCE ...] [--part main|low]

``--part main`` (the default) averages ``dit/`` and ``text_encoder/``; ``--part low`` the low-noise expert's
``low/dit/`` and ``low/text_encoder/``. Everything else (autoencoder, tokenizer, sampler settings, the other
DiT) is BASE's, but a main soup has no verifier (``verifier/`` and the manifest's ``redraw_below`` go: the
verifier reads the main text encoder's states and was trained with BASE's DiT, as a rescore that changes them
drops it). The sources must hold the part with the same tensors (names, shapes, dtypes) as BASE, the same
configs for it (``_name_or_path`` and library versions aside) and tokenizer, and the same latent statistics
(``vae/config.json``'s ``latent_mean``, ``latent_std``). OUT is written in a temporary folder beside it,
sha256-manifested, loaded as the package loads it, and only then renamed into place: a refused or failed soup
leaves nothing behind. OUT must not exist, nor be inside BASE, a source or any weights folder (a folder with
manifest.json).
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
# written by the library that saved a network, not a property of it: may differ between the folders of a soup
IGNORED_CONFIG_KEYS = ("_name_or_path", "_diffusers_version", "transformers_version")
LATENT_STATS = ("latent_mean", "latent_std")  # the autoencoder's (vae/config.json): every DiT is trained in them


def folder_above(path: Path) -> Path | None:
    """The weights folder (a folder with manifest.json) that ``path`` would be inside, or None."""
    for parent in path.resolve().parents:
        if (parent / embedded.MANIFEST).is_file():
            return parent
    return None


def config_differences(base: Path, src: Path, part: str) -> list[str]:
    """What of ``src``'s that the soup's ``part`` depends on differs from ``base``'s: the part's JSON files (each
    network's config and its text encoder's, `IGNORED_CONFIG_KEYS` aside), the tokenizer both parts read, and the
    autoencoder's latent statistics (`LATENT_STATS`) the networks were trained in. Each as "FILE: KEY" (or
    "FILE (only in base|source)")."""
    folders = sorted({str(Path(rel).parent) for rel in PARTS[part]}) + ["tokenizer"]
    differ = []
    for sub in folders:
        names = sorted({p.name for p in (base / sub).glob("*.json")} | {p.name for p in (src / sub).glob("*.json")})
        for name in names:
            rel = f"{sub}/{name}"
            if not (src / rel).is_file() or not (base / rel).is_file():
                differ.append(f"{rel} (only in {'base' if (base / rel).is_file() else 'source'})")
                continue
            a, b = embedded.read_json(base / rel), embedded.read_json(src / rel)
            if not isinstance(a, dict) or not isinstance(b, dict):
                if a != b:
                    differ.append(rel)
                continue
            keys = sorted(k for k in set(a) | set(b) if k not in IGNORED_CONFIG_KEYS and a.get(k, ...) != b.get(k, ...))
            differ += [f"{rel}: {k}" for k in keys]
    a, b = embedded.read_json(base / "vae" / "config.json"), embedded.read_json(src / "vae" / "config.json")
    differ += [f"vae/config.json: {k}" for k in LATENT_STATS if a.get(k) != b.get(k)]
    return differ


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
    where = out.resolve()
    for role, folder in [("base", base)] + [("source", s) for s in sources]:
        if where.is_relative_to(folder.resolve()):
            raise ValueError(f"out {str(out)!r} is inside the {role} {str(folder)!r}: the soup would be copied into "
                             "the folder it copies, which then no longer loads; choose an out outside it")
    inside = folder_above(out)
    if inside is not None:
        raise ValueError(f"out {str(out)!r} is inside the weights folder {str(inside)!r}: files there that its "
                         f"{embedded.MANIFEST} does not list stop it loading; choose an out outside it")
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
    for src in sources:
        differ = config_differences(base, src, part)
        if differ:
            raise ValueError(f"source {str(src)!r} differs from base's (part {part!r}) in "
                             f"{', '.join(differ[:6])}{', ...' if len(differ) > 6 else ''}: a soup averages "
                             "networks of one architecture, trained in one latent")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        folder = tmp / "soup"
        shutil.copytree(base, folder)
        for rel, group in states.items():
            save_file(mean_state(group), str(folder / rel), metadata={"format": "pt"})
        info = {k: v for k, v in manifest.items() if k not in ("files", "format")}  # base's, less what is rewritten
        if part == "main":
            # the verifier reads the main text encoder's states and was trained with BASE's DiT: dropped with its
            # redraw floor, as sora_nb.train's rescore drops them when the main text encoder changes
            shutil.rmtree(folder / embedded.VERIFIER, ignore_errors=True)
            info.pop("redraw_below", None)
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
