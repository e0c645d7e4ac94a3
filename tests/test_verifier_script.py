"""The latent-frame verifier (`sora_nb.models.verifier`) and its training script (`scripts/train_verifier.py`)."""

from __future__ import annotations

import collections
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sora_nb import world
from sora_nb.backends import embedded
from sora_nb.models.verifier import ClipVerifier

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "sora_nb" / "weights" / "shapes"


def _script():
    spec = importlib.util.spec_from_file_location("train_verifier", ROOT / "scripts" / "train_verifier.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_negative_changes_exactly_the_one_thing_it_names():
    tv = _script()
    rng = np.random.default_rng(0)
    kinds = collections.Counter()
    for clip in world.sample(60, seed=5, split="train", phrasing="train"):
        labels = world.parse(clip.caption)
        for _ in range(6):
            drawn = tv.negative_labels(labels, rng)
            if drawn is None:
                continue
            kind, neg = drawn
            kinds[kind] += 1
            a, b = labels.objects, neg.objects
            if kind in ("colour", "shape", "motion"):
                assert len(a) == len(b)
                diff = [(x, y) for x, y in zip(a, b) if x != y]
                assert len(diff) == 1
                x, y = diff[0]
                assert getattr(x, kind) != getattr(y, kind)
                assert [f for f in ("colour", "shape", "motion", "size", "occluded") if getattr(x, f) != getattr(y, f)] == [kind]
            elif kind == "drop":
                assert len(b) == len(a) - 1 and all(o in a for o in b)
            elif kind == "add":
                assert len(b) == len(a) + 1 and all(o in b for o in a)
            else:  # swap: two objects trade colours, nothing else changes
                assert len(a) == len(b)
                diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
                assert len(diff) == 2
                i, j = diff
                assert (b[i].colour, b[j].colour) == (a[j].colour, a[i].colour) and a[i].colour != a[j].colour
            assert world.caption(neg, rng, phrasing="train")  # every negative can be written as a caption
    assert set(kinds) == set(tv.KINDS)


def test_captions_for_gives_the_true_labels_first_then_three_changed_ones():
    tv = _script()
    rng = np.random.default_rng(1)
    for clip in world.sample(20, seed=6, split="train", phrasing="train"):
        caps = tv.captions_for(clip.caption, rng)
        want = world.parse(clip.caption)
        assert len(caps) == 1 + tv.NEGATIVES
        got = world.parse(caps[0])
        assert [(o.shape, o.colour, o.motion) for o in got.objects] == [(o.shape, o.colour, o.motion) for o in want.objects]
        for neg in caps[1:]:
            assert [(o.shape, o.colour, o.motion) for o in world.parse(neg).objects] != \
                [(o.shape, o.colour, o.motion) for o in want.objects]


def test_the_verifier_scores_frames_of_either_size_and_round_trips(tmp_path):
    torch.manual_seed(0)
    ver = ClipVerifier(latent_channels=16, text_dim=128).eval()
    states, mask = torch.randn(1, 7, 128), torch.ones(1, 7, dtype=torch.long)
    mask[0, 5:] = 0
    for h, w in ((16, 16), (16, 24)):  # 64x64 and 96x64 clips
        latents = torch.randn(3, 4, 16, h, w)  # (n, F, C, h, w), as Video.latents stacks them
        scores = ver.clip_score(latents, states, mask)
        assert scores.shape == (3,) and torch.isfinite(scores).all()
        frame = ver(latents[1, 2:3], states, mask)  # one frame's logit; the clip's is the mean of its frames'
        frames = ver(latents[1], states.expand(4, -1, -1), mask.expand(4, -1))
        assert torch.allclose(frames[2:3], frame, atol=1e-5)
        assert torch.allclose(frames.mean(), scores[1], atol=1e-5)
    # padded text tokens do not count
    longer = torch.cat([states, torch.randn(1, 3, 128)], 1)
    assert torch.allclose(ver.clip_score(latents, longer, torch.nn.functional.pad(mask, (0, 3))),
                          ver.clip_score(latents, states, mask), atol=1e-5)
    ver.save_pretrained(tmp_path / "v", safe_serialization=True)
    assert (tmp_path / "v" / "diffusion_pytorch_model.safetensors").is_file()
    back = ClipVerifier.from_pretrained(tmp_path / "v", use_safetensors=True, low_cpu_mem_usage=False).eval()
    assert torch.equal(back.clip_score(latents, states, mask), ver.clip_score(latents, states, mask))
    with pytest.raises(ValueError, match="multiples of 2 cells"):
        ver.clip_score(torch.randn(1, 4, 16, 15, 16), states, mask)
    with pytest.raises(ValueError, match="at most 32"):
        ver.clip_score(torch.randn(1, 4, 16, 34, 16), states, mask)


def test_train_writes_a_loadable_verifier_the_same_per_seed_and_refuses_bad_arguments(tmp_path, capsys):
    tv = _script()
    a = tv.train(tmp_path / "a", clips=64, steps=3, seed=0, log=lambda s: None)
    b = tv.train(tmp_path / "b", clips=64, steps=3, seed=0, log=lambda s: None)
    name = "diffusion_pytorch_model.safetensors"
    assert (a / name).read_bytes() == (b / name).read_bytes()
    ver = ClipVerifier.from_pretrained(a, use_safetensors=True, low_cpu_mem_usage=False)
    assert ver.config.latent_channels == 16 and ver.config.text_dim == 128
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temporary folder left
    with pytest.raises(ValueError, match="exists"):
        tv.train(a, clips=64, steps=1)
    for bad in (10, 64.0, True, 10**6):
        with pytest.raises(ValueError, match=r"clips must be an integer in \[64, 100000\]"):
            tv.train(tmp_path / "c", clips=bad, steps=1)
    with pytest.raises(ValueError, match=r"steps must be an integer in \[1, 1000000\]"):
        tv.train(tmp_path / "c", clips=64, steps=0)
    assert tv.main([str(a), "--clips", "64", "--steps", "1"]) == 2
    assert "exists" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # was torch's RuntimeError traceback
        tv.main([str(tmp_path / "c"), "--threads", "0"])
    assert exit_.value.code == 2 and "--threads must be an integer >= 1, got 0" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_an_out_made_while_training_keeps_the_trained_verifier(tmp_path):
    """OUT made by someone else during the training (it is checked only at the start): the rename failed and the
    finished verifier was deleted with its temporary folder, the whole run lost."""
    tv = _script()
    out = tmp_path / "v"

    def meanwhile(line):
        out.mkdir(exist_ok=True)
        (out / "theirs.txt").write_text("theirs")

    with pytest.raises(FileExistsError, match="appeared while the verifier trained; it is kept in") as err:
        tv.train(out, clips=64, steps=1, seed=0, log=meanwhile)
    kept = [p for p in tmp_path.iterdir() if p.name != "v"]
    assert len(kept) == 1 and str(kept[0]) in str(err.value)
    assert (kept[0] / "diffusion_pytorch_model.safetensors").is_file()
    assert ClipVerifier.from_pretrained(kept[0], use_safetensors=True, low_cpu_mem_usage=False).config.text_dim == 128
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]  # theirs untouched


def copy_of_shipped(dest: Path, recipe: dict | None = None, scores: bool = True) -> Path:
    """A copy of the shipped folder, re-manifested: without scores.json (and its card), or with its recipe changed."""
    shutil.copytree(SHIPPED, dest)
    if not scores:
        (dest / "scores.json").unlink()
        (dest / "MODEL_CARD.md").unlink()
    elif recipe:
        prior = json.loads((dest / "scores.json").read_text())
        prior["recipe"].update(recipe)
        (dest / "scores.json").write_text(json.dumps(prior))
    embedded.write_manifest(dest, {k: v for k, v in embedded.verify_folder(SHIPPED).items() if k not in ("files", "format")})
    embedded.load_folder(dest)  # a valid folder on its own
    return dest


def test_the_latents_are_the_ones_the_folders_recipe_names(tmp_path):
    """The script read shape_angle from Path(weights)/scores.json alone and always built the pixel encoder's latent:
    --weights shapes (the shipped model by name) found no scores.json and dropped the angle channels, and a plain-
    latent folder (shape_layout false) had its last channels overwritten with disc coverage its DiT never draws."""
    from sora_nb.train import clips_to_tensor

    tv = _script()
    by_path, _, _, _ = tv.training_data(None, 64, 0)
    by_name, _, _, _ = tv.training_data("shapes", 64, 0)
    assert by_path.shape == (64, 16, 4, 16, 16) and torch.equal(by_name, by_path)

    plain = copy_of_shipped(tmp_path / "plain", {"shape_layout": False, "shape_channels": False, "shape_angle": False,
                                                   "pix_steps": 0})
    z, _, _, _ = tv.training_data(str(plain), 64, 0)
    be = embedded.load_folder(plain)
    clips = list(world.sample(64, seed=tv._seed(0, 0), split="train", phrasing="train", duration=2.0, size=(64, 64)))
    with torch.no_grad():  # the plain latent: the autoencoder's encoding of the frames, every channel of it
        want = torch.cat([be.vae.normalize(be.vae.encode(clips_to_tensor(clips[i:i + 32]))).half() for i in (0, 32)])
    torch.testing.assert_close(z.float(), want.float(), rtol=0, atol=2e-3)
    assert (by_path.float() - z.float()).abs().amax(dim=(0, 2, 3, 4))[-7:].min() > 0.5  # the label channels differ
    be, folder, recipe = tv.folder_recipe("shapes")  # the name reads the package's folder, and its recipe
    assert folder == embedded.WEIGHTS_DIR and recipe.shape_angle and recipe.pixel_latent


def test_a_model_without_a_recipe_or_an_out_inside_a_weights_folder_is_refused(tmp_path, capsys):
    """A folder without scores.json trained on a guessed latent (no angle channels); an OUT inside a weights
    folder (beside its verifier/, say) wrote files its manifest does not list, and the folder stopped loading."""
    tv = _script()
    nocard = copy_of_shipped(tmp_path / "nocard", scores=False)
    with pytest.raises(ValueError, match=r"records no recipe \(scores.json: it has none\)"):
        tv.training_data(str(nocard), 64, 0)
    with pytest.raises(ValueError, match="random weights with no weights folder and no recipe"):
        tv.training_data("shapes-untrained", 64, 0)
    assert tv.main([str(tmp_path / "v"), "--weights", str(nocard), "--clips", "64", "--steps", "1"]) == 2
    assert f"weights folder {str(nocard)!r} records no recipe" in capsys.readouterr().err
    for out in (nocard / "verifier_v2", nocard / "sub" / "deeper" / "v"):
        with pytest.raises(ValueError, match=f"is inside the weights folder {str(nocard)!r}"):
            tv.train(out, weights=str(nocard), clips=64, steps=1, log=lambda s: None)
    assert tv.main([str(nocard / "verifier_v2"), "--clips", "64", "--steps", "1"]) == 2
    assert "is inside the weights folder" in capsys.readouterr().err
    embedded.load_folder(nocard)  # still loads: nothing was written in it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nocard"]
