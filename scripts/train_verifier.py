"""Train a latent-frame verifier (`sora_nb.models.verifier.ClipVerifier`) for an embedded weights folder.

    .venv/bin/python scripts/train_verifier.py OUT [--weights FOLDER] [--clips 6000] [--steps 2000] [--seed 0]

The world's true clips (train split, train phrasings, 2 s at 64x64, the default generation) are encoded as
the folder's DiT was trained to draw them (the latent its recipe names, as sora_nb.train builds its caches:
after the pixel-encoder stage, the pixel encoder's latent with the label channels from the labels; normalised),
so FOLDER (or a name `sora_nb.load` accepts, such as "shapes") must record its recipe (scores.json, as
`sora_nb.train` exports it). Each caption is written again from its parsed labels with three negatives: the
same labels with one thing changed (`negative_labels`). Every caption's token states come from the
folder's own main text encoder. Each step shows the verifier one random latent frame per clip and asks it
to pick the true caption among the four (cross-entropy). 300 clips are kept out and the pick accuracy on
them (a fifth of the clips when fewer than 1500; frame 1) is printed every 100 steps.

Nothing here reads the evaluator: the labels are the world's own, and at generation the verifier sees only
the latents and the prompt's text states. OUT (a diffusers folder: config.json + safetensors) is written in
a temporary folder beside it and renamed into place when done; OUT must not exist, nor be inside a weights
folder (a folder with manifest.json: a file there that it does not list stops it loading). The same seed and
arguments give the same weights.

OUT is the verifier alone: nothing here writes it into a weights folder. To make a folder that uses it (its
`verifier/`, stored in float16, and the manifest's `redraw_below`, the score under which `generate` redraws),
write the folder's networks again with it:

    import sora_nb
    from sora_nb.backends import embedded
    from sora_nb.models.verifier import ClipVerifier
    b = sora_nb.load("FOLDER").backend
    info = {k: v for k, v in b.info.items() if k != "weights_sha256"}   # add or change "redraw_below" here
    embedded.save_folder("NEW", b.vae, b.dit, b.text, b.scheduler_config, b.latent_rgb.numpy(), info, b.low,
                         ClipVerifier.from_pretrained("OUT"))

`sora_nb.load("NEW")` then loads it (its card and scores are not copied: NEW has none until evaluated).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file from a checkout
    sys.path.insert(0, str(ROOT))

import sora_nb  # noqa: E402
from sora_nb import world  # noqa: E402
from sora_nb.backends import embedded  # noqa: E402
from sora_nb.backends.embedded import WeightsError  # noqa: E402
from sora_nb.models.verifier import ClipVerifier  # noqa: E402
from sora_nb.train import Recipe, clips_to_tensor, pixel_label_latent, recipe_latent  # noqa: E402
from sora_nb.world import spec  # noqa: E402

KINDS = ("colour", "shape", "motion", "drop", "add", "swap")
KIND_P = (0.22, 0.22, 0.20, 0.13, 0.13, 0.10)
NEGATIVES = 3
HELD_OUT = 300
SHIPPED = ROOT / "sora_nb" / "weights" / "shapes"


def _seed(seed: int, k: int) -> int:
    """The k-th seed of a run (clips 0, captions 1, weights 2, batches 3), apart from the training stages'."""
    return (seed * 1_000_003 + 11 * 10_007 + k) % (2**31)


def negative_labels(labels: spec.Labels, rng: np.random.Generator) -> tuple[str, spec.Labels] | None:
    """(kind, labels with one thing changed), or None when the drawn change does not apply to these labels."""
    objs = list(labels.objects)
    kind = str(rng.choice(KINDS, p=KIND_P))
    i = int(rng.integers(len(objs)))
    o = objs[i]
    if kind == "colour" and o.colour:
        objs[i] = dataclasses.replace(o, colour=str(rng.choice([c for c in spec.COLOURS if c != o.colour])))
    elif kind == "shape":
        objs[i] = dataclasses.replace(o, shape=str(rng.choice([s for s in spec.SHAPES if s != o.shape])))
    elif kind == "motion" and o.motion and not o.occluded:
        objs[i] = dataclasses.replace(o, motion=str(rng.choice([m for m in spec.MOTIONS if m != o.motion])))
    elif kind == "drop" and len(objs) > 1:
        objs.pop(i)
    elif kind == "add" and len(objs) < spec.MAX_OBJECTS:
        objs.insert(int(rng.integers(len(objs) + 1)), spec.ObjectLabel(
            shape=str(rng.choice(spec.SHAPES)), colour=str(rng.choice(spec.COLOURS)), motion=str(rng.choice(spec.MOTIONS))))
    elif kind == "swap" and len(objs) > 1:
        j = (i + 1 + int(rng.integers(len(objs) - 1))) % len(objs)
        a, b = objs[i], objs[j]
        if not a.colour or not b.colour or a.colour == b.colour:
            return None
        objs[i], objs[j] = dataclasses.replace(a, colour=b.colour), dataclasses.replace(b, colour=a.colour)
    else:
        return None
    occluder = labels.occluder and any(x.occluded for x in objs)
    return kind, dataclasses.replace(labels, objects=objs, occluder=occluder)


def captions_for(caption: str, rng: np.random.Generator) -> list[str]:
    """The caption written again from its parsed labels, then NEGATIVES captions of changed labels (all in
    train phrasings, so the true one cannot be told by its wording)."""
    labels = world.parse(caption)
    out = [world.caption(labels, rng, phrasing="train")]
    while len(out) < 1 + NEGATIVES:
        changed = negative_labels(labels, rng)
        if changed is not None:
            out.append(world.caption(changed[1], rng, phrasing="train"))
    return out


def folder_recipe(weights: str | None) -> tuple[embedded.EmbeddedBackend, Path, Recipe]:
    """The embedded model ``weights`` names (a weights folder or a name `sora_nb.load` accepts; None: this
    checkout's shipped folder), loaded as `sora_nb.load` loads it; the folder it was read from; and that folder's
    recorded recipe (its scores.json), which says what latent its DiT was trained to draw. Raises ValueError
    naming a model that is not an embedded weights folder or whose folder records no recipe."""
    try:
        be = sora_nb.load(str(SHIPPED) if weights is None else weights).backend
    except (TypeError, ValueError) as err:
        raise ValueError(f"weights {weights!r}: {err}") from None
    if not isinstance(be, embedded.EmbeddedBackend):
        raise ValueError(f"weights {weights!r} is not an embedded-model weights folder (a verifier reads the "
                         f"embedded model's latents), got a {type(be).__name__}")
    # the folder the model was read from: a folder's own path, or the package's weights for the name "shapes"
    folder = Path(be.folder) if be.folder else (embedded.WEIGHTS_DIR if "weights_sha256" in be.info else None)
    if folder is None:
        raise ValueError(f"weights {weights!r} loads {be.info.get('name', '?')!r}, random weights with no weights "
                         "folder and no recipe; give a folder sora_nb.train exported")
    path = folder / "scores.json"
    why = "it has none"
    if path.is_file():
        try:
            prior = json.loads(path.read_text())
            why = "" if isinstance(prior, dict) and isinstance(prior.get("recipe"), dict) else "it holds no 'recipe'"
        except (OSError, ValueError) as err:
            why = f"it cannot be read as JSON ({err})"
    if why:
        raise ValueError(f"weights folder {str(folder)!r} records no recipe ({path.name}: {why}): the verifier "
                         "trains on the latent the folder's DiT draws (its recipe's shape_layout, shape_channels, "
                         "shape_angle and pix_steps), so it needs a folder sora_nb.train exported or rescored")
    fields = {f.name for f in dataclasses.fields(Recipe)}
    try:
        recipe = Recipe(**{k: v for k, v in prior["recipe"].items() if k in fields})
    except (TypeError, ValueError) as err:
        raise ValueError(f"weights folder {str(folder)!r}: the recipe in {path.name} is not one sora_nb.train "
                         f"reads ({err})") from None
    return be, folder, recipe


def folder_latent(recipe: Recipe, vae, clips: list) -> torch.Tensor:
    """The clips' latent as ``recipe``'s DiT was trained on it (not yet normalised), as sora_nb.train builds its
    caches: `pixel_label_latent` for an autoencoder after the pixel-encoder stage (``recipe.pixel_latent``), else
    `recipe_latent` (the plain latent, with shape channels, or the disc layout, as the recipe says)."""
    video = clips_to_tensor(clips)
    if recipe.pixel_latent:
        return pixel_label_latent(vae, clips, video, recipe.shape_angle)
    return recipe_latent(recipe, vae, clips, video)


@torch.no_grad()
def training_data(weights: str | None, clips: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(latents (n, C, F, h, w) float16 normalised, states (n, 4, L, D) float16, masks (n, 4, L), text width)."""
    be, _, recipe = folder_recipe(weights)
    lats, caps, batch = [], [], []
    for clip in world.sample(clips, seed=_seed(seed, 0), split="train", phrasing="train",
                             duration=2.0, size=(64, 64)):
        batch.append(clip)
        if len(batch) == 32 or len(caps) + len(batch) == clips:
            z = folder_latent(recipe, be.vae, batch)
            lats.append(be.vae.normalize(z).half())
            caps += [c.caption for c in batch]
            batch = []
    rng = np.random.default_rng(_seed(seed, 1))
    texts = [c for cap in caps for c in captions_for(cap, rng)]
    states, masks = [], []
    for i in range(0, len(texts), 128):
        s, m = be.text(texts[i:i + 128])
        states.append(s.float()); masks.append(m)
    length = max(s.shape[1] for s in states)
    states = torch.cat([F.pad(s, (0, 0, 0, length - s.shape[1])) for s in states]).half()
    masks = torch.cat([F.pad(m, (0, length - m.shape[1])) for m in masks])
    n = len(caps)
    return torch.cat(lats), states.reshape(n, 1 + NEGATIVES, length, -1), masks.reshape(n, 1 + NEGATIVES, length), be.text.width


def weights_folder_above(path: str | Path) -> Path | None:
    """The weights folder (a folder with a manifest.json) that ``path`` would be inside, or None."""
    for parent in Path(path).resolve().parents:
        if (parent / embedded.MANIFEST).is_file():
            return parent
    return None


def train(out: str | Path, weights: str | None = None, clips: int = 6000, steps: int = 2000, seed: int = 0,
          batch: int = 32, lr: float = 1e-3, log=print) -> Path:
    """Train and write the verifier to ``out``; returns its path."""
    out = Path(out)
    if out.exists():
        raise ValueError(f"out {str(out)!r} exists; the verifier is written to a new folder only")
    inside = weights_folder_above(out)
    if inside is not None:
        raise ValueError(f"out {str(out)!r} is inside the weights folder {str(inside)!r}: a file there that its "
                         f"{embedded.MANIFEST} does not list stops the folder loading; write the verifier outside it "
                         "(and into a folder with save_folder, as this script's help shows)")
    if not (isinstance(clips, int) and not isinstance(clips, bool) and 64 <= clips <= 100_000):
        raise ValueError(f"clips must be an integer in [64, 100000], got {clips!r}")
    if not (isinstance(steps, int) and not isinstance(steps, bool) and 1 <= steps <= 1_000_000):
        raise ValueError(f"steps must be an integer in [1, 1000000], got {steps!r}")
    t0 = time.perf_counter()
    z, states, masks, width = training_data(weights, clips, seed)
    log(f"data {time.perf_counter() - t0:.0f} s: latents {tuple(z.shape)}, captions {tuple(states.shape[:3])}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed(seed, 2))
        ver = ClipVerifier(latent_channels=z.shape[1], text_dim=width)
    opt = torch.optim.AdamW(ver.parameters(), lr=lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(_seed(seed, 3))
    train_n, options = len(z) - min(HELD_OUT, len(z) // 5), 1 + NEGATIVES
    held = torch.arange(train_n, len(z))
    for step in range(steps):
        for group in opt.param_groups:  # warm-up, then cosine to 10%
            group["lr"] = lr * min(1.0, (step + 1) / 100) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
        idx = torch.randint(0, train_n, (batch,), generator=g)
        frame = torch.randint(0, z.shape[2], (batch,), generator=g)
        frames = z[idx, :, frame].float()
        frames = frames + torch.rand(batch, 1, 1, 1, generator=g) * 0.3 * torch.randn(frames.shape, generator=g)
        memory = ver.encode_frames(frames).repeat_interleave(options, 0)
        logits = ver.score(memory, states[idx].reshape(batch * options, *states.shape[2:]).float(),
                           masks[idx].reshape(batch * options, -1))
        loss = F.cross_entropy(logits.reshape(batch, options), torch.zeros(batch, dtype=torch.long))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"step {step} loss {loss.item():.3f} held-out pick accuracy {pick_accuracy(ver, z[held], states[held], masks[held]):.3f} "
                f"{time.perf_counter() - t0:.0f} s")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp's folder is private; the verifier is not
    try:
        ver.eval().save_pretrained(tmp, safe_serialization=True)
        ClipVerifier.from_pretrained(tmp, use_safetensors=True, low_cpu_mem_usage=False)  # it loads before it is put in place
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists() or out.is_symlink():  # made while this trained (a rename would replace an empty folder, or fail)
        raise FileExistsError(f"out {str(out)!r} appeared while the verifier trained; it is kept in {str(tmp)!r}: "
                              "move that folder where you want it")
    try:
        tmp.rename(out)
    except OSError as err:
        raise OSError(f"the verifier could not be renamed to {str(out)!r} ({err.strerror}); it is kept in "
                      f"{str(tmp)!r}") from err
    return out


@torch.no_grad()
def pick_accuracy(ver: ClipVerifier, z: torch.Tensor, states: torch.Tensor, masks: torch.Tensor) -> float:
    """Share of clips whose true caption gets the highest logit among the four, on latent frame 1."""
    was = ver.training
    ver.eval()
    options = states.shape[1]
    memory = ver.encode_frames(z[:, :, min(1, z.shape[2] - 1)].float()).repeat_interleave(options, 0)
    logits = ver.score(memory, states.reshape(-1, *states.shape[2:]).float(), masks.reshape(len(z) * options, -1))
    ver.train(was)
    return float((logits.reshape(-1, options).argmax(1) == 0).float().mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--weights", default=None, help="an embedded weights folder that records its recipe (scores.json), "
                   "or a model name sora_nb.load accepts, such as shapes (default: the shipped model)")
    p.add_argument("--clips", type=int, default=6000)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads (an integer >= 1)")
    args = p.parse_args(argv)
    for name in ("clips", "steps", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be an integer >= 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    try:
        train(args.out, args.weights, args.clips, args.steps, args.seed, log=lambda s: print(s, flush=True))
    except (ValueError, WeightsError) as e:
        print(f"train_verifier: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
