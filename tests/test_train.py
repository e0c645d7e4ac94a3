"""The training recipe at a tiny budget: it runs, learns, resumes, is deterministic, and loads."""

import json

import numpy as np
import pytest
import torch

import sora_nb
from sora_nb import train

FAST = dict(train.TINY, vae_steps=6, dit_steps=6, eval_clips=2, log_every=1, ckpt_every=3,
            cache=((2.0, 64, 64, 16),), vae_batch=2, dit_batch=4)


def run(tmp_path, name, **overrides):
    out = tmp_path / name
    args = ["--out", str(out), "--seed", "3", "--set"] + [f"{k}={json.dumps(v)}" for k, v in {**FAST, **overrides}.items()]
    assert train.main(args) == 0
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return run(tmp_path_factory.mktemp("train"), "a")


def test_tiny_run_writes_a_loadable_weights_folder(tiny_run):
    folder = tiny_run / "weights"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "sora_nb/shapes" and manifest["trained"] is True
    assert all(not f.endswith((".bin", ".pt", ".pkl")) for f in manifest["files"])
    gen = sora_nb.load(str(folder))
    v = gen.generate("a red circle moving right", steps=3, trace=False)
    assert v.frames.shape == (16, 64, 64, 3)
    card = (folder / "MODEL_CARD.md").read_text()
    assert "wall time" in card and "| train/train |" in card
    scores = json.loads((folder / "scores.json").read_text())["scores"]
    assert set(scores) == {"train/train", "heldout/train", "train/heldout"}
    assert 0.0 <= scores["train/train"]["colour"] <= 1.0


def test_losses_are_logged_and_finite(tiny_run):
    log = [json.loads(line) for line in (tiny_run / "log.jsonl").read_text().splitlines()]
    vae = [r["loss"] for r in log if r.get("stage") == "vae"]
    dit = [r["loss"] for r in log if r.get("stage") == "dit"]
    assert len(vae) == 6 and len(dit) == 6
    assert np.isfinite(vae).all() and np.isfinite(dit).all()
    assert any(r.get("stage") == "eval" for r in log)


def test_same_seed_same_weights_and_resume_matches(tmp_path, tiny_run):
    """A second run with the same seed, interrupted and resumed, ends with identical weights."""
    out = tmp_path / "b"
    # first leg: stop the DiT after 3 steps (checkpoint at 3), then resume to 6
    args = ["--out", str(out), "--seed", "3", "--set"] + [f"{k}={json.dumps(v)}" for k, v in FAST.items()]
    import sora_nb.train as t

    class Interrupt(Exception):
        pass

    original = t._ema_update
    count = {"n": 0}

    def interrupting(ema, model, decay):
        original(ema, model, decay)
        if ema.__class__.__name__ == "T5EncoderModel":
            count["n"] += 1
            if count["n"] == 4:  # after the checkpoint at step 3 was written
                raise Interrupt

    t._ema_update = interrupting
    try:
        with pytest.raises(Interrupt):
            train.main(args)
    finally:
        t._ema_update = original
    assert json.loads((out / "dit_ckpt" / "state.json").read_text())["step"] == 3
    assert train.main(args) == 0
    a = json.loads((tiny_run / "weights" / "manifest.json").read_text())["files"]
    b = json.loads((out / "weights" / "manifest.json").read_text())["files"]
    for name in ("dit/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                 "text_encoder/model.safetensors"):
        assert a[name] == b[name], name


def test_optimizer_state_round_trips_without_pickle(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    train.save_optimizer(opt, tmp_path / "optim")
    opt2 = torch.optim.AdamW(model.parameters(), lr=5.0)
    train.load_optimizer(opt2, tmp_path / "optim")
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["lr"] == 1e-3
    for k in s1["state"]:
        torch.testing.assert_close(s1["state"][k]["exp_avg"], s2["state"][k]["exp_avg"])
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".safetensors"]
