"""Load-time checks of the embedded model's weights folders (`sora_nb.backends.embedded`): what used to be
accepted at load and fail (or silently draw wrong clips) at generate. Every tampered folder is a copy under
``tmp_path``, re-hashed with ``write_manifest``; the shipped folder is only read."""

import copy
import json
import re
import shutil

import numpy as np
import pytest
import torch

from sora_nb.backends import embedded
from sora_nb.models import ShapesDiT, TextEncoder, VideoAutoencoder, build_encoder
from sora_nb.models.verifier import ClipVerifier
from sora_nb.request import Request
from sora_nb import sampler


@pytest.fixture(scope="module")
def shipped():
    return embedded.load_folder(embedded.WEIGHTS_DIR, shipped=True)


def _copy(tmp_path):
    folder = tmp_path / "w"
    shutil.copytree(embedded.WEIGHTS_DIR, folder)
    return folder


def _rehash(folder):
    info = {k: v for k, v in json.loads((folder / "manifest.json").read_text()).items() if k not in ("files", "format")}
    embedded.write_manifest(folder, info)


def _edit_json(folder, rel, fn):
    path = folder / rel
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _backend_args(b):
    return (b.vae, b.dit, b.text, b.scheduler_config, b.latent_rgb.numpy())


def _short_clip(backend):
    req = Request.build(backend.limits, "a red circle moving right", steps=2, duration=1.0, seed=0)
    latents, frames = sampler.run(backend, req)
    return latents, frames


# -- 1: scheduler/scheduler_config.json -------------------------------------------------------------------
@pytest.mark.parametrize("edit, match", [
    ({"shift": "abc"}, r"scheduler/scheduler_config.json: shift must be a finite number > 0, got 'abc'"),
    ({"shift": 0.0}, r"scheduler/scheduler_config.json: shift must be a finite number > 0, got 0.0"),
    ({"shift": float("nan")}, r"scheduler/scheduler_config.json: shift must be a finite number > 0, got nan"),
    ({"num_train_timesteps": 500}, r"scheduler/scheduler_config.json: num_train_timesteps must be 1000 .* got 500"),
])
def test_a_bad_scheduler_config_is_refused_by_the_backend(shipped, edit, match):
    vae, dit, text, config, rgb = _backend_args(shipped)
    with pytest.raises(embedded.WeightsError, match=match):
        embedded.EmbeddedBackend(vae, dit, text, {**config, **edit}, rgb, shipped.info, shipped.low, shipped.verifier)


def test_a_scheduler_config_whose_noise_levels_do_not_fall_from_1_to_0_is_refused(shipped):
    config = {k: v for k, v in shipped.scheduler_config.items() if k != "_use_default_values"}
    with pytest.raises(embedded.WeightsError, match=r"scheduler/scheduler_config.json: its settings \(.*invert_sigmas=True"
                                                    r"\) give the noise levels .* fall from 1 to 0"):
        embedded.check_scheduler({"name": "x"}, {**config, "invert_sigmas": True})
    with pytest.raises(embedded.WeightsError, match=r"scheduler/scheduler_config.json: its settings \(.*"
                                                    r"time_shift_type='bogus'\) do not make a scheduler"):
        embedded.check_scheduler({"name": "x"}, {**config, "time_shift_type": "bogus"})
    with pytest.raises(embedded.WeightsError, match=r"scheduler/scheduler_config.json must hold a JSON object"):
        embedded.check_scheduler({"name": "x"}, [1, 2])
    sigmas = embedded.check_scheduler({"name": "x"}, shipped.scheduler_config).sigmas.tolist()
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0


@pytest.mark.parametrize("edit, match", [
    ({"shift": 0.0}, r"scheduler/scheduler_config.json: shift .* got 0.0"),
    ({"num_train_timesteps": 500}, r"scheduler/scheduler_config.json: num_train_timesteps .* got 500"),
])
def test_a_tampered_scheduler_config_fails_at_load_not_at_generate(tmp_path, edit, match):
    folder = _copy(tmp_path)
    _edit_json(folder, "scheduler/scheduler_config.json", lambda d: d.update(edit))
    _rehash(folder)
    with pytest.raises(embedded.WeightsError, match=match):
        embedded.load_folder(folder)


def test_save_folder_refuses_a_bad_scheduler_config_before_writing(tmp_path, shipped):
    vae, dit, text, config, rgb = _backend_args(shipped)
    with pytest.raises(embedded.WeightsError, match=r"scheduler/scheduler_config.json: shift .* got 0"):
        embedded.save_folder(tmp_path / "x", vae, dit, text, {**config, "shift": 0}, rgb, {"name": "x"})
    assert not (tmp_path / "x").exists()


# -- 2: a float64 default dtype ----------------------------------------------------------------------------
def test_a_float64_default_dtype_loads_float32_networks_and_is_left_as_set(shipped):
    ref_latents, ref_frames = _short_clip(shipped)  # (loads the frozen text encoder in float32 first: it is cached)
    try:
        torch.set_default_dtype(torch.float64)
        backend = embedded.load_folder(embedded.WEIGHTS_DIR, shipped=True)
        assert torch.get_default_dtype() == torch.float64
        nets = [backend.vae, backend.dit, backend.text, backend.verifier, *backend.low]
        dtypes = {t.dtype for net in nets for t in [*net.parameters(), *net.buffers()] if t.is_floating_point()}
        assert dtypes == {torch.float32}
        latents, frames = _short_clip(backend)  # was: RuntimeError mat1 and mat2 must have the same dtype
        assert torch.get_default_dtype() == torch.float64
        assert frames.shape == ref_frames.shape and np.abs(frames.astype(int) - ref_frames.astype(int)).max() <= 2
        fresh = embedded.untrained()
        assert torch.get_default_dtype() == torch.float64
        dtypes = {p.dtype for net in (fresh.vae, fresh.dit, fresh.text) for p in net.parameters()}
        assert dtypes == {torch.float32}
        _short_clip(fresh)
    finally:
        torch.set_default_dtype(torch.float32)


# -- 3: parts that do not fit ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parts():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return embedded.build()


def _small_dit(**kw):
    return ShapesDiT(**{"hidden_size": 32, "depth": 1, "num_heads": 2, "text_dim": 128, **kw})


@pytest.mark.parametrize("case, match", [
    ("vae8_dit16", r"the DiT \(dit/config.json\) denoises 16-channel latents but the autoencoder \(vae/config.json\) "
                   r"makes 8-channel ones"),
    ("text_dim64", r"the DiT \(dit/config.json\) reads 64-wide text states but its text encoder "
                   r"\(text_encoder/config.json\) makes 128-wide ones"),
    ("patch3", r"the DiT's patch_size \(1, 3, 3\) \(dit/config.json\) does not tile the 16x16 latent grid of the size 64x64"),
    ("verifier_cells16", r"the verifier \(verifier/config.json\) reads latent frames of at most 16 cells per side.*"
                         r"the size 96x64 has a 16x24 latent grid"),
    ("low_text64", r"the DiT \(low/dit/config.json\) reads 128-wide text states but its text encoder "
                   r"\(low/text_encoder/config.json\) makes 64-wide ones"),
])
def test_parts_that_do_not_fit_are_refused_before_save_folder_writes(tmp_path, parts, case, match):
    vae, _, text = parts
    dit, low, verifier, info = _small_dit(), None, None, {"name": case}
    if case == "vae8_dit16":
        vae = VideoAutoencoder(latent_channels=8, hidden=8, encoder_blocks=1, decoder_blocks=1)
    elif case == "text_dim64":
        dit = _small_dit(text_dim=64)
    elif case == "patch3":
        dit = _small_dit(patch_size=(1, 3, 3))
    elif case == "verifier_cells16":
        verifier = ClipVerifier(max_cells=16, text_dim=text.width)
    elif case == "low_text64":
        low = (copy.deepcopy(dit), TextEncoder(text.tokenizer, build_encoder(len(text.tokenizer), width=64)))
        info["expert_switch"] = 0.5
    rgb = np.zeros((vae.config.latent_channels + 1, 3), np.float32)
    config = embedded.default_scheduler_config()
    with pytest.raises(embedded.WeightsError, match=match):
        embedded.save_folder(tmp_path / "x", vae, dit, text, config, rgb, info, low=low, verifier=verifier)
    assert not (tmp_path / "x").exists()
    with pytest.raises(embedded.WeightsError, match=match):
        embedded.EmbeddedBackend(vae, dit, text, config, rgb, info, low=low, verifier=verifier)


# -- 4: check_expert compares configs as saved -------------------------------------------------------------
def test_check_expert_accepts_a_fresh_dit_and_its_saved_copy(tmp_path, parts):
    _, _, text = parts
    dit = _small_dit(rope=True)
    dit.save_pretrained(tmp_path / "dit", safe_serialization=True)
    loaded = ShapesDiT.from_pretrained(tmp_path / "dit", use_safetensors=True, low_cpu_mem_usage=False)
    assert isinstance(dit.config.patch_size, tuple) and isinstance(loaded.config.patch_size, list)
    low, switch = embedded.check_expert({"name": "x", "expert_switch": 0.5}, dit, text, (loaded, text))
    assert low[0] is loaded and switch == 0.5
    with pytest.raises(embedded.WeightsError, match="must have the main ones' architecture and config"):
        embedded.check_expert({"name": "x", "expert_switch": 0.5}, dit, text, (_small_dit(rope=False), text))


# -- 5: size mismatches name their subfolder ---------------------------------------------------------------
@pytest.mark.parametrize("rel", ["dit", "low/dit"])
def test_a_size_mismatch_names_the_subfolder_and_drops_the_ignore_hint(tmp_path, rel):
    folder = _copy(tmp_path)
    _edit_json(folder, f"{rel}/config.json", lambda d: d.update(hidden_size=64))
    _rehash(folder)
    with pytest.raises(embedded.WeightsError) as info:
        embedded.load_folder(folder)
    message = str(info.value)
    assert f"{rel}/diffusion_pytorch_model.safetensors' does not fit the ShapesDiT that" in message
    assert f"'{folder / rel / 'config.json'}' describes: size mismatch for" in message
    assert "ignore_mismatched_sizes" not in message


# -- 6: the manifest's name ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [None, 5, ["a"], "", "  "])
def test_a_name_that_is_not_a_non_empty_str_is_refused(shipped, name):
    with pytest.raises(embedded.WeightsError, match=r"name .* must be a non-empty string, got " + re.escape(repr(name))):
        embedded.EmbeddedBackend(*_backend_args(shipped), {**shipped.info, "name": name}, shipped.low, shipped.verifier)


def test_a_manifest_with_a_bad_name_fails_at_load(tmp_path):
    folder = _copy(tmp_path)
    _edit_json(folder, "manifest.json", lambda d: d.update(name=None))  # the manifest is not hashed
    with pytest.raises(embedded.WeightsError, match=r"manifest.json's \"name\"\) must be a non-empty string, got None"):
        embedded.load_folder(folder)
    with pytest.raises(embedded.WeightsError, match="must be a non-empty string, got 5"):
        embedded.save_folder(tmp_path / "x", *_parts_for_save(), {"name": 5})
    assert not (tmp_path / "x").exists()


def _parts_for_save():
    vae, dit, text = embedded.build(dit_kwargs={"hidden_size": 32, "depth": 1, "num_heads": 2})
    return vae, dit, text, embedded.default_scheduler_config(), np.zeros((vae.config.latent_channels + 1, 3))


# -- 7: settings a network does not take -------------------------------------------------------------------
@pytest.mark.parametrize("rel, fn, key", [
    ("dit/config.json", lambda d: (d.pop("rope"), d.update(rop=True)), "rop"),
    ("low/dit/config.json", lambda d: d.update(bogus=1), "bogus"),
    ("vae/config.json", lambda d: d.update(latent_chanels=16), "latent_chanels"),
    ("verifier/config.json", lambda d: d.update(maxcells=16), "maxcells"),
])
def test_a_config_key_the_network_does_not_take_is_refused(tmp_path, rel, fn, key):
    folder = _copy(tmp_path)
    _edit_json(folder, rel, fn)
    _rehash(folder)
    with pytest.raises(embedded.WeightsError, match=rf"{rel}' has settings \w+ does not take: {key} \(misspelt\?"):
        embedded.load_folder(folder)


def test_the_shipped_configs_diffusers_keys_are_accepted(shipped):
    data = json.loads((embedded.WEIGHTS_DIR / "dit" / "config.json").read_text())
    assert {"_class_name", "_diffusers_version"} <= set(data)
    assert shipped.dit.config.rope is True and shipped.limits.name == "shapes"
