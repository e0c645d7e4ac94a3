"""scripts/soup.py: a weight soup of embedded-model folders is their mean, for the part asked, and nothing else;
a refused soup leaves no folder behind."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sora_nb.backends import embedded

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "sora_nb" / "weights" / "shapes"
LOW_DIT = "low/dit/diffusion_pytorch_model.safetensors"
LOW_TEXT = "low/text_encoder/model.safetensors"
MAIN_DIT = "dit/diffusion_pytorch_model.safetensors"

spec = importlib.util.spec_from_file_location("soup_script", ROOT / "scripts" / "soup.py")
soup_script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(soup_script)


def shifted(src: Path, dest: Path, rel: str, by: float, drop: str | None = None) -> Path:
    """A copy of ``src`` whose ``rel`` floats are shifted by ``by`` (and ``drop`` removed), re-manifested."""
    shutil.copytree(src, dest)
    state = {k: (v + by if v.is_floating_point() else v) for k, v in load_file(str(dest / rel)).items() if k != drop}
    save_file(state, str(dest / rel), metadata={"format": "pt"})
    info = {k: v for k, v in embedded.verify_folder(src).items() if k not in ("files", "format")}
    embedded.write_manifest(dest, info)
    return dest


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("soup")
    return root, shifted(SHIPPED, root / "plus", LOW_DIT, 1.0), shifted(SHIPPED, root / "minus", LOW_DIT, -0.5)


def test_a_low_soup_is_the_mean_of_the_experts_and_keeps_the_rest(folders):
    root, plus, minus = folders
    out = soup_script.soup(SHIPPED, root / "out", [SHIPPED, plus, minus], part="low")
    base, got = load_file(str(SHIPPED / LOW_DIT)), load_file(str(out / LOW_DIT))
    assert got.keys() == base.keys()
    for k, v in base.items():  # mean of +0, +1 and -0.5: +1/6
        want = v + 1 / 6 if v.is_floating_point() else v
        torch.testing.assert_close(got[k], want, rtol=0, atol=1e-6)
    assert not torch.equal(got["blocks.0.ada.1.weight"], base["blocks.0.ada.1.weight"])
    text, base_text = load_file(str(out / LOW_TEXT)), load_file(str(SHIPPED / LOW_TEXT))
    assert text.keys() == base_text.keys()  # averaged too: the three sources share it, so it is unchanged
    assert all(torch.allclose(text[k], base_text[k], rtol=0, atol=1e-6) for k in text)
    for rel in (MAIN_DIT, "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert (out / rel).read_bytes() == (SHIPPED / rel).read_bytes(), rel  # not the part: BASE's, copied
    be = embedded.load_folder(out)  # sha256-manifested: loads as the package loads it
    assert be.low is not None and embedded.verify_folder(out)["expert_switch"] == 0.8
    # the expert is not what the verifier reads: a low soup keeps base's verifier and its redraw floor
    assert be.verifier is not None and be.redraw_below == -8.0
    assert (out / "verifier/diffusion_pytorch_model.safetensors").read_bytes() == \
        (SHIPPED / "verifier/diffusion_pytorch_model.safetensors").read_bytes()
    assert "soup" in embedded.verify_folder(out)["description"]
    assert sorted(p.name for p in root.iterdir()) == ["minus", "out", "plus"]  # no temporary folder left


def test_a_main_soup_leaves_the_expert_alone(folders, tmp_path):
    root, plus, _ = folders
    main_plus = shifted(SHIPPED, tmp_path / "main_plus", MAIN_DIT, 2.0)
    out = soup_script.soup(plus, tmp_path / "out", [SHIPPED, main_plus])
    got, base = load_file(str(out / MAIN_DIT)), load_file(str(SHIPPED / MAIN_DIT))
    torch.testing.assert_close(got["blocks.0.ada.1.weight"], base["blocks.0.ada.1.weight"] + 1.0, rtol=0, atol=1e-6)
    assert (out / LOW_DIT).read_bytes() == (plus / LOW_DIT).read_bytes()  # the base's expert, not averaged
    # the verifier read the base's main text encoder (now averaged) and was trained with its DiT: a main soup drops
    # it and its redraw floor, as a rescore that changes them does; the manifest lists what is there, and it loads
    assert embedded.verify_folder(plus)["redraw_below"] == -8.0 and (plus / "verifier").is_dir()
    manifest = embedded.verify_folder(out)
    assert "redraw_below" not in manifest and not (out / "verifier").exists()
    assert not [f for f in manifest["files"] if f.startswith("verifier/")]
    be = embedded.load_folder(out)
    assert be.verifier is None and be.redraw_below is None and be.low is not None
    assert manifest["layout_check"] == embedded.verify_folder(plus)["layout_check"]  # the rest of the manifest: base's


def test_bad_soups_are_refused_and_leave_nothing(folders, tmp_path):
    root, plus, _ = folders
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="at least 2"):
        soup_script.soup(SHIPPED, out, [plus], part="low")
    with pytest.raises(ValueError, match="part must be one of"):
        soup_script.soup(SHIPPED, out, [SHIPPED, plus], part="high")
    dropped = shifted(SHIPPED, tmp_path / "dropped", LOW_DIT, 0.0, drop="blocks.0.ada.1.bias")
    with pytest.raises(ValueError, match="does not match base's tensors.*blocks.0.ada.1.bias"):
        soup_script.soup(SHIPPED, out, [SHIPPED, dropped], part="low")
    tampered = tmp_path / "tampered"
    shutil.copytree(plus, tampered)
    data = bytearray((tampered / LOW_TEXT).read_bytes()); data[-1] ^= 1
    (tampered / LOW_TEXT).write_bytes(bytes(data))
    with pytest.raises(embedded.WeightsError):
        soup_script.soup(SHIPPED, out, [SHIPPED, tampered], part="low")
    assert not out.exists()
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match="exists"):
        soup_script.soup(SHIPPED, tmp_path / "taken", [SHIPPED, plus], part="low")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dropped", "taken", "tampered"]
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "soup.py"), str(SHIPPED), str(out), str(plus)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "at least 2 weights folders" in done.stderr and not out.exists()


def with_config(src: Path, dest: Path, rels: tuple[str, ...], **changes) -> Path:
    """A copy of ``src`` with the JSON files ``rels`` changed (its tensors as they were), re-manifested; it loads."""
    shutil.copytree(src, dest)
    for rel in rels:
        config = json.loads((dest / rel).read_text())
        config.update(changes)
        (dest / rel).write_text(json.dumps(config))
    embedded.write_manifest(dest, {k: v for k, v in embedded.verify_folder(src).items() if k not in ("files", "format")})
    embedded.load_folder(dest)
    return dest


DITS = ("dit/config.json", "low/dit/config.json")  # the expert must have the main DiT's config to load


def test_sources_of_another_config_or_latent_are_refused_by_name(folders, tmp_path):
    """Sources whose networks had another config (heads, prediction) or were trained in other latent statistics,
    with the same tensor names and shapes, were averaged silently (and the soup kept base's config)."""
    root, plus, _ = folders
    out = tmp_path / "out"
    for rels, changes, part, named in (
            (DITS, {"num_heads": 8}, "main", "dit/config.json: num_heads"),
            (DITS, {"prediction": "velocity"}, "main", "dit/config.json: prediction"),
            (DITS, {"num_heads": 8}, "low", "low/dit/config.json: num_heads"),
            (("low/text_encoder/config.json",), {"layer_norm_epsilon": 1e-5}, "low",
             "low/text_encoder/config.json: layer_norm_epsilon"),
            (("vae/config.json",), {"latent_mean": [0.5] * 16, "latent_std": [3.0] * 16}, "low",
             "vae/config.json: latent_mean, vae/config.json: latent_std")):
        src = with_config(SHIPPED, tmp_path / "src", rels, **changes)
        with pytest.raises(ValueError, match=f"source {str(src)!r} differs from base's \\(part {part!r}\\) in {named}: "):
            soup_script.soup(SHIPPED, out, [SHIPPED, src], part=part)
        shutil.rmtree(src)
    assert not out.exists()
    # the other part's config is not averaged: it does not matter; nor does _name_or_path (where a folder was saved)
    src = with_config(SHIPPED, tmp_path / "src", ("text_encoder/config.json",), layer_norm_epsilon=1e-5)
    src2 = with_config(plus, tmp_path / "src2", DITS, _name_or_path="elsewhere/dit")
    done = soup_script.soup(SHIPPED, out, [src, src2], part="low")
    assert json.loads((done / "text_encoder/config.json").read_text()) == \
        json.loads((SHIPPED / "text_encoder/config.json").read_text())
    assert load_file(str(done / LOW_DIT)).keys() == load_file(str(SHIPPED / LOW_DIT)).keys()


def test_an_out_inside_a_weights_folder_is_refused_before_any_work(tmp_path):
    """An OUT inside a source (or any weights folder) left files its manifest does not list, so it stopped loading;
    an OUT inside BASE copied BASE into itself, level after level."""
    base, src, other = (shutil.copytree(SHIPPED, tmp_path / n) for n in ("base", "src", "other"))
    for out, named in ((src / "soup", f"is inside the source {str(src)!r}"),
                       (other / "a" / "soup", f"is inside the weights folder {str(other)!r}"),
                       (base / "soup", f"is inside the base {str(base)!r}")):
        with pytest.raises(ValueError, match=named):
            soup_script.soup(base, out, [base, src], part="low")
    for folder in (base, src, other):
        assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in SHIPPED.iterdir())
        embedded.load_folder(folder)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "soup.py"), str(base), str(src / "x"), str(base),
                           str(src)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "is inside the source" in done.stderr and not (src / "x").exists()
