"""What the embedded model's text encoder says: a fresh probe reads each object back from its token states.

    .venv/bin/python bench/bench_text_probe.py [--weights FOLDER] [--captions 6000] [--steps 1500] [--test 1000] [--threads N]

A diagnostic for the quality bars (issue 4), not a speed figure. The DiT sees a prompt only through the
text encoder's token states, so what a probe cannot read back from them, the DiT cannot draw. This trains
a new `sora_nb.train.CaptionProbe` (one query per object slot attending over the states, linear heads for
each object's shape, colour, motion and size, and the scene's object count) on the frozen states of
``--captions`` train-split, train-phrasing captions (world seed 11), then reads ``--test`` fresh captions
(seed 12) of each of the model card's three samples: train prompts, held-out combinations, held-out
phrasings. The probe never sees a held-out template or word. The first table gives, by the caption's
object count, the share of objects whose four attributes are all read right, and the count read right;
the second, for the held-out phrasings, each attribute alone, and the captions with and without the two
held-out words ("violet", "disk"), which no training caption contains.
"""

from __future__ import annotations

import re
import time

import torch

import sora_nb
from _common import count, parse, parser, print_table
from sora_nb import world
from sora_nb.train import PROBE_FIELDS, CaptionProbe

SAMPLES = (("train", "train"), ("heldout", "train"), ("train", "heldout"))
HELDOUT_WORDS = re.compile(r"\b(violet|disk)\b")


def captions(n: int, seed: int, split: str = "train", phrasing: str = "train") -> list[str]:
    return [c.caption for c in world.sample(n, seed=seed, split=split, phrasing=phrasing)]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--weights", default=None, help="a weights folder (default: the shipped model)")
    p.add_argument("--captions", type=count, default=6000)
    p.add_argument("--steps", type=count, default=1500)
    p.add_argument("--test", type=count, default=1000)
    args = parse(p)
    text = (sora_nb.load(args.weights) if args.weights else sora_nb.load()).backend.text

    @torch.no_grad()
    def states(caps: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tok = text.tokenize(caps)
        return text.encoder(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state, \
            tok["attention_mask"]  # (N, L, E), (N, L)

    torch.manual_seed(0)
    probe = CaptionProbe(text.width)
    opt = torch.optim.Adam(probe.parameters(), lr=2e-3)
    train_caps = captions(args.captions, 11)
    s, m = states(train_caps)
    targets = probe.targets(train_caps)
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(args.steps):
        i = torch.randint(0, len(train_caps), (128,), generator=g)
        loss, accuracy = probe.loss_from_targets(s[i], m[i], {k: v[i] for k, v in targets.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"probe: {args.steps} steps on {len(train_caps)} train captions in {time.perf_counter() - start:.0f} s, "
          f"last batch's fields read right {float(accuracy):.3f}")

    rows, fields = [], []
    for split, phrasing in SAMPLES:
        caps = captions(args.test, 12, split, phrasing)
        s, m = states(caps)
        t = probe.targets(caps)
        with torch.no_grad():
            logits = probe(s, m)
        objects = t["count"]  # (N,)
        present = objects[:, None] > torch.arange(probe.slots)[None]  # (N, slots): the slots the caption fills
        whole = torch.ones_like(present)
        for name, _ in PROBE_FIELDS:
            whole &= logits[name].argmax(-1) == t[name]
        cells = [f"{whole[objects == k][:, :k].float().mean():.3f} ({int((objects == k).sum())})" for k in (1, 2, 3)]
        rows.append([f"{split}/{phrasing}", *cells, f"{(logits['count'].argmax(-1) == objects).float().mean():.3f}"])
        if phrasing == "heldout":
            fields = [[name, f"{(logits[name].argmax(-1) == t[name])[present].float().mean():.3f}"] for name, _ in PROBE_FIELDS]
            said = torch.tensor([bool(HELDOUT_WORDS.search(c)) for c in caps])[:, None] & present
            n_said = int(said.any(1).sum())
            fields += [[f"objects read whole, the {len(caps) - n_said} captions without 'violet' or 'disk'",
                        f"{whole[present & ~said].float().mean():.3f}"],
                       [f"objects read whole, the {n_said} captions with one of them", f"{whole[said].float().mean():.3f}"]]
    print(f"\nobjects whose shape, colour, motion and size are all read right ({args.test} captions a sample; objects "
          "by the caption's count, captions in brackets)")
    print_table(rows, ("split / phrasing", "1 object", "2 objects", "3 objects", "count read right"))
    print("\nheld-out phrasings: each attribute alone, over every asked object")
    print_table(fields, ("read", "share right"))


if __name__ == "__main__":
    main()
