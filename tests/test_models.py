"""The embedded model's networks and weights folder: shapes, save/load, tamper checks."""

import json
import shutil

import numpy as np
import pytest
import torch

import sora_nb
from sora_nb.backends import embedded
from sora_nb.models import ShapesDiT, VideoAutoencoder


@pytest.mark.parametrize("spatial,channels", [(4, 16), (8, 32)])
@pytest.mark.parametrize("frames,height,width", [(8, 64, 64), (16, 64, 64), (16, 64, 96), (32, 64, 96), (5, 64, 64)])
def test_autoencoder_shapes(frames, height, width, spatial, channels):
    vae = VideoAutoencoder(spatial_factor=spatial, latent_channels=channels)
    video = torch.rand(2, 3, frames, height, width) * 2 - 1
    z = vae.encode(video)
    assert z.shape == (2, channels, -(-frames // 4), height // spatial, width // spatial)
    out = vae.decode(z, frames)
    assert out.shape == video.shape
    assert out.min() >= -1 and out.max() <= 1


def test_decoder_convolutions_infer_on_onednn_and_train_as_torch_does():
    """The decoder's OneDNNConv3d is nn.Conv3d's parameters and state dict; with gradients off it computes the same
    convolution on oneDNN (to float rounding, not torch's slow batch-1 kernel), and with them on it is nn.Conv3d.
    The encoder keeps nn.Conv3d, so latents are torch's own."""
    from torch.profiler import profile
    from sora_nb.models.vae import OneDNNConv3d
    vae = VideoAutoencoder(decoder_blocks=2, encoder_blocks=2)
    decoding = [m for n, m in vae.named_modules() if isinstance(m, torch.nn.Conv3d) and n.startswith("dec")]
    encoding = [m for n, m in vae.named_modules() if isinstance(m, torch.nn.Conv3d) and n.startswith("enc")]
    assert len(decoding) == 7 and all(type(m) is OneDNNConv3d for m in decoding)
    assert len(encoding) == 7 and all(type(m) is torch.nn.Conv3d for m in encoding)
    torch.manual_seed(0)
    ours, ref = OneDNNConv3d(8, 6, 3, padding=1), torch.nn.Conv3d(8, 6, 3, padding=1)
    ref.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(ref.state_dict()) == ["weight", "bias"]
    x = torch.randn(1, 8, 4, 16, 16)
    with torch.no_grad(), profile() as prof:
        fast, slow = ours(x), ref(x)
    kernels = {e.key for e in prof.key_averages()}
    assert "aten::mkldnn_convolution" in kernels and "aten::slow_conv3d_forward" in kernels  # ref: torch's choice
    assert fast.shape == slow.shape == (1, 6, 4, 16, 16)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    assert fast.abs().mean() > 0.1  # a real convolution's output, not zeros
    ours(x).square().sum().backward()  # training: torch's own kernel, so gradients are exactly nn.Conv3d's
    ref(x).square().sum().backward()
    assert torch.equal(ours.weight.grad, ref.weight.grad) and torch.equal(ours.bias.grad, ref.bias.grad)
    with torch.no_grad():  # other dtypes and string padding keep torch's path
        assert OneDNNConv3d(8, 6, 3, padding="same")(x).shape == (1, 6, 4, 16, 16)
        assert ours.double()(x.double()).dtype == torch.float64


def test_grid_positions_are_computed_once_and_serve_training_after_inference():
    """A grid's sin-cos embedding and rotations are kept per grid (every step of a clip asks for the same one);
    kept tensors made during inference_mode still serve a training step's autograd afterwards."""
    from sora_nb.models.dit import grid_positions, rope_3d, sincos_3d
    with torch.inference_mode():
        pos, rot = grid_positions(2, 3, 5, 64, 16, True)
    assert pos is grid_positions(2, 3, 5, 64, 16, True)[0]
    assert torch.equal(pos, sincos_3d(2, 3, 5, 64))
    angles = rope_3d(2, 3, 5, 16)
    assert torch.equal(rot, torch.complex(angles.cos(), angles.sin())) and rot.shape == (30, 8)
    assert grid_positions(2, 3, 5, 64, 16, False)[1] is None
    dit = _random_dit(depth=1, rope=True)
    x, t = torch.randn(1, 16, 2, 8, 8), torch.tensor([500.0])
    text, mask = torch.randn(1, 4, 128), torch.ones(1, 4, dtype=torch.long)
    with torch.inference_mode():
        dit(x, t, text, mask)
    dit.train()
    dit(x, t, text, mask).square().mean().backward()
    grad = dit.blocks[0].attn.q.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_autoencoder_pca_init_reconstructs_smooth_video():
    """The PCA-initialised linear path alone reconstructs a smooth clip closely."""
    t = torch.linspace(0, 1, 16)[:, None, None]
    y = torch.linspace(-1, 1, 64)[None, :, None]
    x = torch.linspace(-1, 1, 64)[None, None, :]
    video = torch.stack([torch.sin(3 * x + 2 * t) * torch.cos(2 * y), 0.5 * y + 0 * x * t, x * y * t])[None]  # (1, 3, 16, 64, 64)
    vae = VideoAutoencoder()
    vae.init_from_pca(video)
    err = (vae(video) - video).pow(2).mean().item()
    assert err < 1e-3, err


def test_blur_cells_is_a_normalised_gaussian_in_space_only():
    from sora_nb.models.vae import blur_cells

    z = torch.zeros(1, 2, 3, 11, 11)
    z[0, :, 1, 5, 5] = 1.0
    b = blur_cells(z, 1.0)
    g = np.exp(-0.5 * np.arange(-2, 3) ** 2)
    g /= g.sum()
    assert np.allclose(b[0, 0, 1, 3:8, 3:8].numpy(), np.outer(g, g), atol=1e-6)  # sigma 1 cell, radius 2
    assert float(b[0, :, 0].abs().max()) == 0 and float(b[0, :, 2].abs().max()) == 0  # frames stay apart
    assert torch.allclose(b.sum((3, 4)), z.sum((3, 4)), atol=1e-6)  # mass kept away from the edges
    flat = torch.full((2, 4, 2, 5, 7), 3.0)
    assert torch.allclose(blur_cells(flat, 1.5), flat)  # constants (and the edges) unchanged


def test_decode_blur_blurs_the_latent_before_decoding_and_survives_save_load(tmp_path):
    from sora_nb.models.vae import blur_cells

    torch.manual_seed(0)
    vae = VideoAutoencoder(decoder_blocks=2).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.02 * torch.randn_like(p))
    z = torch.randn(1, 16, 2, 16, 16)
    with torch.no_grad():
        plain = vae.decode(z, 8)
        vae.register_to_config(decode_blur=1.0)
        blurred = vae.decode(z, 8)
        assert not torch.allclose(plain, blurred, atol=1e-3)
        vae.register_to_config(decode_blur=0.0)
        assert torch.allclose(vae.decode(blur_cells(z, 1.0), 8), blurred, atol=1e-6)
        vae.register_to_config(decode_blur=1.0)
        vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
        again = VideoAutoencoder.from_pretrained(tmp_path / "vae", use_safetensors=True, low_cpu_mem_usage=False).eval()
        assert again.config.decode_blur == 1.0 and again.config.decoder_blocks == 2
        assert torch.allclose(again.decode(z, 8), blurred, atol=1e-6)


def _random_dit(std: float = 0.05, **config) -> ShapesDiT:
    """A ShapesDiT with every weight drawn from N(0, std) after ``torch.manual_seed(0)`` (so its output is
    not the zero of adaLN-Zero); the test's later draws continue that seeded stream."""
    torch.manual_seed(0)
    dit = ShapesDiT(**config)
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=std)
    return dit


@pytest.mark.parametrize("latent_frames,h,w", [(1, 16, 16), (4, 16, 16), (4, 16, 24), (8, 16, 24)])
def test_dit_shapes_and_zero_init(latent_frames, h, w):
    dit = ShapesDiT(depth=2)
    x = torch.randn(2, 16, latent_frames, h, w)
    text, mask = torch.randn(2, 5, 128), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    t = torch.tensor([999.0, 10.0])
    out = dit.network(x, t, text, mask)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # adaLN-Zero: the output layer starts at zero
    # x-prediction: x0 = 0 (the latent mean) at start, so the velocity is x_t / sigma
    torch.testing.assert_close(dit(x, t, text, mask), x / torch.tensor([0.999, 0.01]).view(-1, 1, 1, 1, 1))
    torch.nn.init.normal_(dit.final.linear.weight)
    v2 = dit(x, t, text, mask)
    assert torch.isfinite(v2).all() and v2.abs().sum() > 0


@pytest.mark.parametrize("latent_frames,h,w", [(1, 16, 16), (4, 16, 16), (3, 16, 24), (8, 16, 24)])
def test_dit_rope_option_keeps_shapes(latent_frames, h, w):
    """Rotary positions work for every duration and both resolutions, and change the output."""
    dit = _random_dit(depth=2, rope=True)
    x = torch.randn(2, 16, latent_frames, h, w)
    text, mask = torch.randn(2, 5, 128), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    out = dit.network(x, torch.tensor([900.0, 40.0]), text, mask)
    assert out.shape == x.shape and torch.isfinite(out).all()
    plain = _random_dit(depth=2)
    assert not torch.allclose(out, plain.network(x, torch.tensor([900.0, 40.0]), text, mask))


@pytest.mark.parametrize("rope", [False, True])
def test_a_grown_dit_computes_the_same_and_its_new_blocks_can_learn(rope):
    """`ShapesDiT.grown`: more blocks, spread among the old ones, each new one a copy of the block before it
    that starts as the identity, so the output is unchanged for every duration and resolution; the shut
    branches get gradients (they can open); the original is untouched; a shallower depth is refused."""
    dit = _random_dit(depth=3, rope=rope).eval()
    before = {k: v.clone() for k, v in dit.state_dict().items()}
    big = dit.grown(5).eval()
    assert big.config.depth == 5 and len(big.blocks) == 5 and big.config.rope == rope
    # old blocks 0, 1, 2 sit at 0, 2, 3; the new ones (1, 4) copy blocks 0 and 2, their gates and cross output at zero
    for new, old in ((0, 0), (2, 1), (3, 2)):
        assert all(torch.equal(v, dit.blocks[old].state_dict()[k]) for k, v in big.blocks[new].state_dict().items())
    for new, old in ((1, 0), (4, 2)):
        block = big.blocks[new]
        assert torch.count_nonzero(block.ada[-1].weight) == 0 and torch.count_nonzero(block.cross.out.weight) == 0
        assert torch.equal(block.mlp[0].weight, dit.blocks[old].mlp[0].weight)
    for latent_frames, h, w in ((1, 16, 16), (4, 16, 16), (4, 16, 24)):
        x = torch.randn(2, 16, latent_frames, h, w)
        text, mask = torch.randn(2, 5, 128), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
        t = torch.tensor([900.0, 40.0])
        with torch.no_grad():
            torch.testing.assert_close(big.network(x, t, text, mask), dit.network(x, t, text, mask), rtol=0, atol=1e-6)
    big.train()
    big.network(x, t, text, mask).square().mean().backward()
    for new in (1, 4):
        assert big.blocks[new].ada[-1].weight.grad.abs().sum() > 0
        assert big.blocks[new].cross.out.weight.grad.abs().sum() > 0
    assert all(torch.equal(v, dit.state_dict()[k]) for k, v in before.items())
    assert dit.grown(3).config.depth == 3
    for bad in (2, 4.0, "5"):
        with pytest.raises(ValueError, match="depth must be an integer >= the network's depth 3"):
            dit.grown(bad)


def test_a_dit_grown_to_more_than_twice_its_depth_computes_the_same():
    """Past twice the depth the placement put a new block after block -1, which never came: grown(13) of a 6-block
    DiT (the shipped depth; ``ft_depth`` allows up to 48) died in load_state_dict."""
    dit = _random_dit(depth=3).eval()
    x, t = torch.randn(1, 16, 2, 16, 16), torch.tensor([500.0])
    text, mask = torch.randn(1, 5, 128), torch.ones(1, 5, dtype=torch.long)
    for depth in (7, 10, 13):
        big = dit.grown(depth).eval()
        assert len(big.blocks) == depth
        with torch.no_grad():
            torch.testing.assert_close(big.network(x, t, text, mask), dit.network(x, t, text, mask), rtol=0, atol=1e-6)
    # each old block is followed by its share of the 7 new ones (3, 2, 2): blocks 0, 4, 7 are the old ones
    big = dit.grown(10)
    for new, old in ((0, 0), (4, 1), (7, 2)):
        assert all(torch.equal(v, dit.blocks[old].state_dict()[k]) for k, v in big.blocks[new].state_dict().items())


@pytest.mark.parametrize("config, message", [
    (dict(num_heads=3), r"hidden_size must be even and a multiple of num_heads \(3\)"),
    (dict(hidden_size=129, num_heads=3), r"hidden_size must be even"),
    (dict(hidden_size=130, num_heads=2, rope=True), r"hidden_size / num_heads must be even with rope .* = 65"),
    (dict(patch_size=(0, 2, 2)), r"patch_size must be an integer >= 1, got 0"),
    (dict(patch_size=(2, 2)), r"patch_size must be 3 integers"),
    (dict(depth=-1), r"depth must be an integer >= 1, got -1"),
    (dict(depth=0), r"depth must be an integer >= 1, got 0"),
])
def test_a_dit_config_that_cannot_work_is_refused_when_built(config, message):
    """A bad config built (and loaded from a folder) and failed at the first forward pass deep in einops, or ran
    with no blocks at all (depth -1), or read its weights with another head split (num_heads 8 for 4)."""
    with pytest.raises(ValueError, match=message):
        ShapesDiT(**config)


@pytest.mark.parametrize("config, message", [
    (dict(latent_std=0.0), r"latent_std must be > 0"),
    (dict(latent_std=[1.0] * 15 + [-1.0]), r"latent_std must be > 0"),
    (dict(latent_mean=[0.0] * 3), r"latent_mean must be a finite number or 16 of them"),
    (dict(latent_mean=float("nan")), r"latent_mean must be a finite number"),
    (dict(decoder_blocks=0), r"decoder_blocks must be an integer >= 1, got 0"),
    (dict(spatial_factor=0), r"spatial_factor must be an integer >= 1, got 0"),
    (dict(decode_blur=-1.0), r"decode_blur must be a finite number >= 0"),
])
def test_an_autoencoder_config_that_cannot_work_is_refused_when_built(config, message):
    """latent_std 0 divided the latent by zero (inf) with no error; decoder_blocks 0 built one block anyway."""
    with pytest.raises(ValueError, match=message):
        VideoAutoencoder(**config)


@pytest.mark.parametrize("prompt", ["\u0301\u0301\u0301", "\u0610\u0610"])
def test_a_prompt_the_tokenizer_reads_as_empty_is_refused(gen, prompt):
    """Combining marks alone count as visible characters for the request's check, but the tokenizer drops them: the
    clip was drawn from the empty prompt (the unconditional branch) without a word."""
    with pytest.raises(ValueError, match=r"prompt says nothing to model 'shapes': its tokenizer drops every character"):
        gen.request(prompt)
    with pytest.raises(ValueError, match=r"negative_prompt says nothing to model 'shapes'"):
        gen.request("a red circle", negative_prompt=prompt)
    assert gen.request("a red \u00e9toile").prompt == "a red \u00e9toile"  # an accent on a letter is read


def test_rope_scores_depend_on_relative_offsets_only():
    """A query/key dot product after rotary embedding is unchanged when both tokens shift by the same
    offset in time, rows and columns, and changes when only one of them moves."""
    from sora_nb.models.dit import apply_rope, rope_3d
    grid = (4, 6, 7)
    angles = rope_3d(*grid, head_dim=32)
    assert angles.shape == (4 * 6 * 7, 16)
    assert torch.count_nonzero(angles[0]) == 0  # the origin is not rotated
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 32, generator=g), torch.randn(1, 1, 1, 32, generator=g)
    index = lambda f, y, x: (f * grid[1] + y) * grid[2] + x

    def rotate(v, position):
        a = angles[[index(*position)]]
        return apply_rope(v, a.cos(), a.sin())

    def score(pq, pk):
        return float((rotate(q, pq) * rotate(k, pk)).sum())

    base = score((0, 1, 2), (1, 3, 3))
    assert score((2, 2, 4), (3, 4, 5)) == pytest.approx(base, abs=1e-4)  # both moved by (2, 1, 2)
    assert abs(score((0, 1, 2), (1, 3, 5)) - base) > 1e-3  # only the key moved
    # rotation keeps the norm
    torch.testing.assert_close(rotate(q, (3, 5, 6)).norm(), q.norm())


def test_rotate_pairs_is_the_written_out_rotation_bit_for_bit():
    """The complex-multiply rotation gives exactly (x1 cos - x2 sin, x1 sin + x2 cos) per channel pair, for a
    permuted view as attention passes it and for bfloat16 input (result float32), and carries gradients."""
    from sora_nb.models.dit import apply_rope, rope_3d, rotate_pairs
    g = torch.Generator().manual_seed(1)
    angles = rope_3d(3, 4, 5, head_dim=32)  # (60, 16)
    cos, sin = angles.cos(), angles.sin()
    base = torch.randn(2, 60, 4 * 32, generator=g)
    for x in (base.view(2, 60, 4, 32).permute(0, 2, 1, 3), base.view(2, 60, 4, 32).permute(0, 2, 1, 3).bfloat16()):
        x1, x2 = x.float()[..., 0::2], x.float()[..., 1::2]
        expected = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)  # (2, 4, 60, 32)
        got = rotate_pairs(x, torch.complex(cos, sin))
        assert got.dtype == torch.float32 and got.shape == (2, 4, 60, 32)
        assert torch.equal(got, expected)
        assert torch.equal(apply_rope(x, cos, sin), expected)
    leaf = base.clone().requires_grad_(True)
    rotate_pairs(leaf.view(2, 60, 4, 32).permute(0, 2, 1, 3), torch.complex(cos, sin)).square().sum().backward()
    torch.testing.assert_close(leaf.grad, 2 * base)  # a rotation keeps the norm, so d|Rx|^2/dx = 2x


@pytest.mark.parametrize("prediction", ["sample", "velocity"])
def test_velocity_and_x0_agree_for_both_parametrisations(prediction):
    """forward (velocity) and predict_x0 describe the same prediction: x0 = x_t - sigma * v."""
    dit = _random_dit(depth=1, prediction=prediction)
    x, t = torch.randn(3, 16, 2, 16, 16), torch.tensor([1000.0, 500.0, 50.0])
    text, mask = torch.randn(3, 4, 128), torch.ones(3, 4, dtype=torch.long)
    v, x0 = dit(x, t, text, mask), dit.predict_x0(x, t, text, mask)
    torch.testing.assert_close(x - (t / 1000).view(-1, 1, 1, 1, 1) * v, x0, rtol=1e-4, atol=1e-4)
    raw = dit.network(x, t, text, mask)
    torch.testing.assert_close(raw, x0 if prediction == "sample" else v)


def test_self_conditioning_reads_the_previous_estimate():
    """A self-conditioned DiT takes x0_prev as extra input: None is the same as zeros, and a different
    estimate changes the output; a plain DiT's input layer is half as wide."""
    dit = _random_dit(depth=1, self_condition=True)
    assert dit.x_embed.in_features == 2 * ShapesDiT(depth=1).x_embed.in_features == 2 * 16 * 2 * 2
    x, t = torch.randn(2, 16, 2, 16, 24), torch.tensor([900.0, 300.0])
    text, mask = torch.randn(2, 4, 128), torch.ones(2, 4, dtype=torch.long)
    none = dit.predict_x0(x, t, text, mask)
    torch.testing.assert_close(none, dit.predict_x0(x, t, text, mask, torch.zeros_like(x)))
    other = dit.predict_x0(x, t, text, mask, torch.randn_like(x))
    assert other.shape == x.shape and (other - none).abs().mean() > 1e-3
    v = dit(x, t, text, mask, none)
    torch.testing.assert_close(x - (t / 1000).view(-1, 1, 1, 1, 1) * v, dit.predict_x0(x, t, text, mask, none),
                               rtol=1e-4, atol=1e-4)


def test_bfloat16_autocast_keeps_float32_output_close():
    """Under CPU bfloat16 autocast (training's ``bf16``) the output stays float32 and near the float32 one."""
    dit = _random_dit(depth=2, std=0.02)
    x, t = torch.randn(2, 16, 2, 16, 16), torch.tensor([700.0, 100.0])
    text, mask = torch.randn(2, 4, 128), torch.ones(2, 4, dtype=torch.long)
    ref = dit.predict_x0(x, t, text, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = dit.predict_x0(x, t, text, mask)
    assert low.dtype == torch.float32
    rel = ((low - ref).norm() / ref.norm()).item()
    assert 0 < rel < 0.05, rel


def _self_conditioned_backend(info: dict) -> embedded.EmbeddedBackend:
    """A small self-conditioned embedded model with fixed random weights (the global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae, dit, text = embedded.build(dit_kwargs={"self_condition": True, "depth": 1})
        for p in dit.parameters():
            torch.nn.init.normal_(p, std=0.02)
    return embedded.EmbeddedBackend(vae, dit, text, embedded.default_scheduler_config(),
                                    np.zeros((vae.config.latent_channels + 1, 3)), info)


def test_sampler_feeds_each_branch_its_own_previous_estimate():
    """With a self-conditioned DiT, step 1 gets no estimate and every later step gets the x0 of the step
    before, one per guidance branch (cond, uncond); the run stays deterministic per seed."""
    backend = _self_conditioned_backend({"name": "sc-test"})
    dit = backend.dit
    seen, real = [], dit.forward

    def spy(x, t, txt, mask, x0_prev=None):
        v = real(x, t, txt, mask, x0_prev)
        seen.append((x0_prev, x - (t / 1000).view(-1, 1, 1, 1, 1) * v))
        return v

    dit.forward = spy
    gen = sora_nb.Generator(backend)
    a = gen.generate("a red circle", seed=3, steps=4, guidance=3.0, trace=False).frames
    assert len(seen) == 4 and seen[0][0] is None
    for (_, x0_before), (x0_prev, _) in zip(seen[:-1], seen[1:]):
        assert x0_prev.shape[0] == 2  # cond and uncond branches
        torch.testing.assert_close(x0_prev, x0_before)
    assert not torch.equal(seen[1][0][0], seen[1][0][1])  # the branches keep their own estimates
    np.testing.assert_array_equal(a, gen.generate("a red circle", seed=3, steps=4, guidance=3.0, trace=False).frames)


def test_unknown_prediction_is_refused():
    with pytest.raises(ValueError, match="prediction must be 'sample' or 'velocity'"):
        ShapesDiT(depth=1, prediction="epsilon")


def test_padding_tokens_are_ignored():
    """Masked text tokens must not change the output."""
    dit = _random_dit(depth=2)
    x = torch.randn(1, 16, 2, 16, 16)
    text = torch.randn(1, 6, 128)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0]])
    a = dit(x, torch.tensor([500.0]), text, mask)
    text2 = text.clone()
    text2[:, 3:] = 100.0
    b = dit(x, torch.tensor([500.0]), text2, mask)
    torch.testing.assert_close(a, b)


@pytest.fixture
def weights_folder(tmp_path, gen):
    b = gen.backend
    return embedded.save_folder(tmp_path / "w", b.vae, b.dit, b.text, b.scheduler_config, b.latent_rgb.numpy(),
                                {"name": "shapes-test", "trained": False,
                                 "default_guidance": b.limits.default_guidance, "default_eta": b.limits.default_eta,
                                 **{k: b.info[k] for k in ("guidance_profile", "expert_switch") if k in b.info}},
                                b.low)


def test_save_load_round_trip(weights_folder, gen):
    loaded = sora_nb.load(str(weights_folder))
    assert loaded.name == "shapes-test"
    assert loaded.limits.default_guidance == gen.limits.default_guidance == 2.0  # the shipped weights' choice
    assert loaded.limits.default_eta == gen.limits.default_eta == 1.0
    a = loaded.generate("a red circle moving right", seed=4, steps=3, trace=False)
    b = gen.generate("a red circle moving right", seed=4, steps=3, trace=False)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not list(weights_folder.rglob("*.bin")) and list(weights_folder.rglob("*.safetensors"))


def test_the_decoder_is_stored_in_float16_and_loads_as_float32(tmp_path, weights_folder, gen):
    """`save_vae`: the decoding tensors go to disk in float16 (the folder's 30 MB budget), the encoder in float32,
    so a clip's latent is bit for bit the same; loaded back, every parameter is float32 and a decoded frame moves
    by at most one uint8 level against the float32 decoder it was saved from."""
    from safetensors.torch import load_file

    state = load_file(weights_folder / "vae" / "diffusion_pytorch_model.safetensors")
    dec = {k for k in state if k.startswith(embedded.HALF_DECODER)}
    assert dec and any(k.startswith("dec_blocks.") for k in dec) and len(dec) < len(state)
    assert all(state[k].dtype == (torch.float16 if k in dec else torch.float32) for k in state)
    vae = VideoAutoencoder(decoder_blocks=2).eval()  # float32 weights, not yet rounded to float16
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    back = VideoAutoencoder.from_pretrained(embedded.save_vae(vae, tmp_path / "vae"), use_safetensors=True,
                                            low_cpu_mem_usage=False).float().eval()
    assert all(p.dtype == torch.float32 for p in back.parameters()) and back.config.decoder_blocks == 2
    video = torch.rand(1, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(vae.encode(video), back.encode(video))
        z = vae.encode(video)
        a, b = (((m.decode(z, 8) + 1) * 127.5).round().clamp(0, 255) for m in (vae, back))
    assert 0 < (a - b).abs().max() <= 1 and (a != b).float().mean() < 0.1
    assert all(p.dtype == torch.float32 for p in sora_nb.load(str(weights_folder)).backend.vae.parameters())


def test_corrupt_weights_are_refused(weights_folder):
    target = weights_folder / "dit" / "diffusion_pytorch_model.safetensors"
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(embedded.WeightsError, match=r"diffusion_pytorch_model.safetensors' is corrupt or was modified"):
        embedded.load_folder(weights_folder)


def test_truncated_weights_are_refused(weights_folder):
    target = weights_folder / "vae" / "diffusion_pytorch_model.safetensors"
    target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(ValueError, match="is corrupt or was modified"):
        embedded.load_folder(weights_folder)


@pytest.mark.parametrize("rel", ["text_encoder/model.safetensors", "dit/diffusion_pytorch_model.safetensors"])
def test_a_truncated_file_whose_hash_was_updated_is_refused_as_weights(weights_folder, rel):
    """Past the hash check (the manifest edited to match), a broken file is still a WeightsError naming the
    folder, for the text encoder (loaded by transformers) as for the DiT (diffusers), not a library's error."""
    target = weights_folder / rel
    target.write_bytes(target.read_bytes()[:100])
    manifest = json.loads((weights_folder / "manifest.json").read_text())
    manifest["files"][rel] = embedded.sha256(target)
    (weights_folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(embedded.WeightsError, match=r"weights folder .* could not be loaded"):
        embedded.load_folder(weights_folder)


@pytest.mark.parametrize("key,value,match", [
    ("default_guidance", float("nan"), r"default_guidance must be a finite number >= 0 and <= 50"),
    ("default_guidance", 60.0, r"default_guidance must be >= 0 and <= 50, got 60"),
    ("default_eta", "1", r"default_eta must be a number >= 0 and <= 1"),
])
def test_a_bad_default_in_the_manifest_is_refused_at_load(weights_folder, key, value, match):
    """A hand-edited default fails when the folder loads, naming the field, not in every later generate."""
    manifest = json.loads((weights_folder / "manifest.json").read_text())
    manifest[key] = value
    (weights_folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(embedded.WeightsError, match=r"'shapes-test': the manifest's " + match):
        embedded.load_folder(weights_folder)


def test_missing_or_extra_files_are_refused(weights_folder):
    (weights_folder / "dit" / "extra.bin").write_bytes(b"pickle would go here")
    with pytest.raises(embedded.WeightsError, match="files not in manifest.json: dit/extra.bin"):
        embedded.load_folder(weights_folder)
    (weights_folder / "dit" / "extra.bin").unlink()
    (weights_folder / "latent_rgb.json").unlink()
    with pytest.raises(embedded.WeightsError, match="latent_rgb.json' is missing"):
        embedded.load_folder(weights_folder)


def test_bad_manifest_is_refused(weights_folder):
    (weights_folder / "manifest.json").write_text("{not json")
    with pytest.raises(embedded.WeightsError, match="unreadable manifest.json"):
        embedded.load_folder(weights_folder)
    (weights_folder / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(embedded.WeightsError, match="not a sora_nb/shapes manifest"):
        embedded.load_folder(weights_folder)


def test_a_manifest_of_another_shape_or_with_paths_outside_is_refused(weights_folder):
    good = json.loads((weights_folder / "manifest.json").read_text())
    for manifest, match in (([1, 2], "not a sora_nb/shapes manifest"), (None, "not a sora_nb/shapes manifest"),
                            ({**good, "files": {}}, "not a sora_nb/shapes manifest"),
                            ({**good, "files": {**good["files"], "../outside.txt": "0" * 64}}, r"lists '\.\./outside.txt'"),
                            ({**good, "files": {**good["files"], "/etc/hostname": "0" * 64}}, r"lists '/etc/hostname'"),
                            ({**good, "files": {**good["files"], "latent_rgb.json": 5}}, r"lists 'latent_rgb.json': each "
                                                                                         r"entry must be a file inside")):
        (weights_folder / "manifest.json").write_text(json.dumps(manifest))
        assert embedded.is_weights_folder(weights_folder) is (isinstance(manifest, dict))
        with pytest.raises(embedded.WeightsError, match=match):
            embedded.load_folder(weights_folder)


def _rehash(folder):
    info = {k: v for k, v in json.loads((folder / "manifest.json").read_text()).items() if k not in ("files", "format")}
    embedded.write_manifest(folder, info)


def test_an_index_file_or_a_linked_folder_cannot_swap_in_unhashed_weights(weights_folder, tmp_path):
    """diffusers prefers a ``*.safetensors.index.json`` to the hashed file: one with an empty weight map loaded a
    DiT of uninitialised memory (black clips), one naming a ``.dat`` shard unpickled it, both with no error. Every
    unlisted file is now refused, whatever its name, and so is a linked folder (whose files rglob did not see)."""
    index = weights_folder / "dit" / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {}}))
    with pytest.raises(embedded.WeightsError, match=r"holds files not in manifest.json: "
                                                    r"dit/diffusion_pytorch_model.safetensors.index.json"):
        embedded.load_folder(weights_folder)
    index.unlink()
    elsewhere = tmp_path / "elsewhere"
    (weights_folder / "scheduler").rename(elsewhere)
    (weights_folder / "scheduler").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(embedded.WeightsError, match=r"holds a linked folder .*scheduler.*copy its files in instead"):
        embedded.load_folder(weights_folder)


def test_a_weights_file_missing_tensors_is_refused_even_with_its_hash(weights_folder):
    """An export that wrote half a DiT and hashed it loaded: diffusers left the missing half at its random start."""
    from safetensors.torch import load_file, save_file

    target = weights_folder / "dit" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(target))
    dropped = sorted(state)[::2]
    save_file({k: v for k, v in state.items() if k not in dropped}, str(target), metadata={"format": "pt"})
    _rehash(weights_folder)
    with pytest.raises(embedded.WeightsError, match=r"dit/diffusion_pytorch_model.safetensors' does not fit its "
                                                    r"config: missing \["):
        embedded.load_folder(weights_folder)


def test_a_word_level_text_encoder_missing_or_with_extra_tensors_is_refused(tmp_path):
    """transformers only logs the keys a T5 file lacks or has too many: a word-level text encoder (the kind a recipe
    trains by default) that lost a tensor loaded with it at its random start, and drew from a partly random encoder."""
    from safetensors.torch import load_file, save_file

    vae, dit, text = embedded.build()
    folder = tmp_path / "word"
    with torch.no_grad():
        rgb = embedded.fit_latent_rgb(vae, torch.randn(1, 16, 2, 16, 16), vae.decode(torch.randn(1, 16, 2, 16, 16)))
    embedded.save_folder(folder, vae, dit, text, embedded.default_scheduler_config(), rgb, {"name": "word"})
    assert embedded.load_folder(folder).describe()["name"] == "word"
    target = folder / "text_encoder" / "model.safetensors"
    state = load_file(str(target))
    for change in ("drop", "extra"):
        edited = dict(state)
        if change == "drop":
            edited.pop("encoder.block.0.layer.0.SelfAttention.q.weight")
        else:
            edited["junk"] = torch.zeros(2)
        save_file(edited, str(target), metadata={"format": "pt"})
        _rehash(folder)
        missing = r"\['encoder.block.0.layer.0.SelfAttention.q.weight'\]" if change == "drop" else r"\[\]"
        with pytest.raises(embedded.WeightsError, match=r"text_encoder/model.safetensors' does not fit its config: "
                                                        rf"missing {missing}"):
            embedded.load_folder(folder)


@pytest.mark.parametrize("rel, content, match", [
    ("tokenizer/tokenizer.json", b'{"version": "1.0", "truncation"', r"tokenizer/tokenizer.json' is not a valid tokenizer.json"),
    ("scheduler/scheduler_config.json", b'{"shift": 1.0,', r"scheduler/scheduler_config.json' could not be read as JSON"),
    ("latent_rgb.json", b"[[1, 2", r"latent_rgb.json' could not be read as JSON"),
    ("latent_rgb.json", b"[[1, 2]]", r"latent_rgb.json' must hold \(16 \+ 1\) x 3 numbers for a 16-channel latent, "
                                     r"got shape \(1, 2\)"),
    ("text_encoder/pretrained.json", b'{"name": "gt', r"text_encoder/pretrained.json' could not be read as JSON"),
    ("text_encoder/config.json", b'{"d_model": ', r"text_encoder/config.json' could not be read as JSON"),
])
def test_a_broken_file_past_the_hash_check_is_named(weights_folder, rel, content, match):
    """A malformed tokenizer.json escaped as the tokenizers library's bare Exception (not a WeightsError), and the
    JSON files' errors did not say which of the folder's files was broken."""
    (weights_folder / rel).write_bytes(content)
    _rehash(weights_folder)
    with pytest.raises(embedded.WeightsError, match=r"weights (folder|file) .*" + match):
        embedded.load_folder(weights_folder)


def test_a_malformed_manifest_is_named_by_load_not_called_missing(weights_folder):
    (weights_folder / "manifest.json").write_text('{"format": "sora_nb/shapes", "files": ')
    with pytest.raises(embedded.WeightsError, match=r"unreadable manifest.json \(Expecting value"):
        sora_nb.load(str(weights_folder))  # it said "not a sora_nb weights folder (no manifest.json ...)"
    (weights_folder / "model_index.json").write_text("{}")  # beside a pipeline's index it is the pipeline's folder
    assert not embedded.is_weights_folder(weights_folder)


def test_shipped_weights_without_their_manifest_are_an_error_not_the_untrained_model(tmp_path, monkeypatch):
    folder = tmp_path / "shapes"
    shutil.copytree(embedded.WEIGHTS_DIR, folder)
    (folder / "manifest.json").unlink()
    monkeypatch.setattr(embedded, "WEIGHTS_DIR", folder)
    with pytest.raises(embedded.WeightsError, match=r"has lost its manifest.json, so its files cannot be checked: "
                                                    r"reinstall sora_nb"):
        embedded.load_default()
    folder.rename(tmp_path / "shapes.old")  # --ship killed between its two renames: not the placeholder either
    with pytest.raises(embedded.WeightsError, match=r"mid-swap \(shapes.old beside .*run the same `sora-nb train "
                                                    r"--ship` command again"):
        embedded.load_default()
    monkeypatch.setattr(embedded, "WEIGHTS_DIR", tmp_path / "none")  # no weights at all: the placeholder
    assert embedded.load_default().describe()["name"] == "shapes-untrained"


def test_guidance_profile_is_checked_and_maps_noise_level_to_guidance():
    profile = embedded.check_guidance_profile([[0.9, 3], [0.6, 1.0], [0.0, 0.0]])
    assert profile == ((0.9, 3.0), (0.6, 1.0), (0.0, 0.0))
    at = lambda g, sigma: embedded.guidance_at(profile, g, sigma)
    assert (at(2.0, 0.95), at(2.0, 0.7), at(2.0, 0.3)) == (4.0, 2.0, 1.0)  # 1 + weight (g - 1)
    assert (at(5.0, 0.95), at(5.0, 0.9), at(5.0, 0.05)) == (13.0, 5.0, 1.0)  # "above" is strict
    assert at(1.0, 0.95) == 1.0 and at(0.0, 0.95) == 0.0 and at(0.5, 0.3) == 0.5  # g <= 1 is left alone
    assert embedded.guidance_at((), 3.0, 0.5) == 3.0 and embedded.guidance_at(((0.5, 0.0),), 3.0, 0.2) == 3.0
    assert embedded.check_guidance_profile(None) == () == embedded.check_guidance_profile([])
    for bad, match in (("0.9:2", "list of \\[sigma_above, weight\\] pairs"), ([[0.9]], "got the item \\[0.9\\]"),
                       ([[1.0, 2.0]], "sigma_above must be in \\[0, 1\\)"), ([[0.5, -1]], "weight must be in \\[0, 10\\]"),
                       ([[0.5, float("nan")]], "weight must be in"), ([[0.3, 1], [0.3, 0]], "strictly decrease")):
        with pytest.raises(ValueError, match=match):
            embedded.check_guidance_profile(bad)


def _with_profile(gen, profile):
    b = gen.backend
    info = {**{k: v for k, v in b.info.items() if k not in ("guidance_profile", "expert_switch")},
            "name": "profile-test"}  # the main DiT alone (the shipped low-noise expert would take the last steps)
    if profile is not None:
        info["guidance_profile"] = profile
    return sora_nb.Generator(embedded.EmbeddedBackend(b.vae, b.dit, b.text, b.scheduler_config,
                                                      b.latent_rgb.numpy(), info, verifier=b.verifier))


def test_guidance_profile_sets_each_steps_guidance(gen):
    """The trace records the guidance every step used; weight 1 everywhere is plain guidance, and weight 0
    everywhere is no guidance (the same latents as guidance 1, which runs the conditional branch alone)."""
    plain = _with_profile(gen, None)
    kw = dict(seed=5, steps=6, guidance=3.0)
    a = plain.generate("a blue square moving up", **kw)
    np.testing.assert_array_equal(a.trace.guidance.values, np.full(6, 3.0, dtype=np.float32))
    ones = _with_profile(gen, [[0.0, 1.0]]).generate("a blue square moving up", **kw)
    np.testing.assert_array_equal(ones.frames, a.frames)
    profiled = _with_profile(gen, [[0.8, 2.0], [0.0, 0.0]]).generate("a blue square moving up", **kw)
    sigma = profiled.trace.sigma.values
    assert (sigma > 0.8).any() and (sigma <= 0.8).any()
    np.testing.assert_array_equal(profiled.trace.guidance.values, np.where(sigma > 0.8, 5.0, 1.0).astype(np.float32))
    assert np.abs(profiled.frames.astype(int) - a.frames.astype(int)).mean() > 1.0
    assert profiled.params["model_info"]["guidance_profile"] == [[0.8, 2.0], [0.0, 0.0]]
    off = _with_profile(gen, [[0.0, 0.0]]).generate("a blue square moving up", trace=False, **kw)
    cond = plain.generate("a blue square moving up", trace=False, **{**kw, "guidance": 1.0})
    torch.testing.assert_close(off.latents, cond.latents, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(
        _with_profile(gen, [[0.8, 2.0], [0.0, 0.0]]).generate("a blue square moving up", **kw).frames, profiled.frames)


def test_steps_at_guidance_one_skip_the_negative_prompts_pass(gen):
    """Where the profile's weight is 0 the step's guidance is 1, so the DiT runs the prompt's branch
    alone (batch 1, not 2): the same latents as running both and mixing them at weight ~0."""
    profile = [[0.9, 4.0], [0.6, 1.0], [0.0, 0.0]]  # the shipped model's shape: guidance off below sigma 0.6
    skipping = _with_profile(gen, profile)
    dit = skipping.backend.dit
    batches = []
    hook = dit.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    try:
        kw = dict(seed=7, steps=10, guidance=2.0)
        a = skipping.generate("a green triangle moving left", **kw)
    finally:
        hook.remove()
    sigma = a.trace.sigma.values
    assert (sigma <= 0.6).sum() >= 2 and (sigma > 0.6).sum() >= 2
    assert batches == [2 if s > 0.6 else 1 for s in sigma]
    np.testing.assert_array_equal(a.trace.guidance.values, np.select([sigma > 0.9, sigma > 0.6], [5.0, 2.0], 1.0))
    both = _with_profile(gen, [[0.9, 4.0], [0.6, 1.0], [0.0, 1e-9]]).generate("a green triangle moving left", **kw)
    torch.testing.assert_close(a.latents, both.latents, atol=1e-4, rtol=1e-4)
    assert np.abs(a.frames.astype(int) - both.frames.astype(int)).max() <= 1


def test_skipped_negative_pass_keeps_its_self_conditioning_estimate():
    """A self-conditioned DiT under a profile that turns guidance off in the middle: the negative branch
    skips those steps and, when guidance returns, reads its last estimate (not the prompt branch's)."""
    backend = _self_conditioned_backend({"name": "sc-test", "guidance_profile": [[0.8, 1.0], [0.4, 0.0], [0.0, 1.0]]})
    dit = backend.dit
    seen, real = [], dit.forward

    def spy(x, t, txt, mask, x0_prev=None):
        v = real(x, t, txt, mask, x0_prev)
        seen.append((float(t[0]) / 1000, x0_prev, x - (t / 1000).view(-1, 1, 1, 1, 1) * v))
        return v

    dit.forward = spy
    gen = sora_nb.Generator(backend)
    frames = gen.generate("a red circle", seed=3, steps=8, guidance=3.0, trace=False).frames
    sizes = [est.shape[0] for _, _, est in seen]
    assert sizes == [1 if 0.4 < s <= 0.8 else 2 for s, _, _ in seen] and 1 in sizes and sizes[-1] == 2
    last_uncond = None
    for i, (sigma, prev, est) in enumerate(seen):
        if i:
            torch.testing.assert_close(prev[:1], seen[i - 1][2][:1])  # the prompt branch: always its step before
            if prev.shape[0] == 2:
                torch.testing.assert_close(prev[1:], last_uncond)  # the negative branch: its own last estimate
        if est.shape[0] == 2:
            last_uncond = est[1:]
    np.testing.assert_array_equal(frames, gen.generate("a red circle", seed=3, steps=8, guidance=3.0, trace=False).frames)


def test_a_bad_guidance_profile_in_the_manifest_is_refused(weights_folder):
    manifest = json.loads((weights_folder / "manifest.json").read_text())
    manifest["guidance_profile"] = [[0.5, 20.0]]
    (weights_folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(embedded.WeightsError, match=r"'shapes-test': guidance_profile: weight must be in \[0, 10\]"):
        embedded.load_folder(weights_folder)


def _one_dit(b: embedded.EmbeddedBackend, **info) -> embedded.EmbeddedBackend:
    """The backend's main DiT and text stack alone (no low-noise expert), with ``info`` added."""
    base = {k: v for k, v in b.info.items() if k != "expert_switch"}
    return embedded.EmbeddedBackend(b.vae, b.dit, b.text, b.scheduler_config, b.latent_rgb.numpy(), {**base, **info},
                                    verifier=b.verifier)


def test_a_low_noise_expert_takes_exactly_the_steps_at_or_below_its_switch(gen, tmp_path):
    """A second DiT and text stack (``low``, with ``expert_switch``): `EmbeddedBackend.denoiser` gives it every
    step whose sigma is at or below the switch, with its own text states; the steps above are the one-DiT
    model's to the bit; it saves to ``low/`` (no second tokenizer), loads back to the same clip, is hash-checked,
    and a bad switch or a mismatched network is refused."""
    import copy

    b = gen.backend
    kw = dict(seed=4, steps=8, guidance=2.0, retries=0)  # one draw: the steps are the point here
    plain_backend = _one_dit(b, name="one-dit")
    plain = sora_nb.Generator(plain_backend).generate("a cyan star moving down", **kw)
    other, other_text = copy.deepcopy(b.dit), copy.deepcopy(b.text)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(0.5)
    calls = []
    for name, net in (("main", b.dit), ("low", other)):
        forward = net.forward
        net.forward = (lambda f, n: lambda x, t, *a, **k: calls.append((float(t[0]) / 1000, n)) or f(x, t, *a, **k))(
            forward, name)
    texts = []
    encode = other_text.forward
    other_text.forward = lambda prompts: texts.append(list(prompts)) or encode(prompts)
    try:
        backend = embedded.EmbeddedBackend(b.vae, b.dit, b.text, b.scheduler_config, b.latent_rgb.numpy(),
                                           {**plain_backend.info, "name": "experts-test", "expert_switch": 0.7},
                                           low=(other, other_text), verifier=plain_backend.verifier)
        switched = sora_nb.Generator(backend).generate("a cyan star moving down", **kw)
    finally:
        del b.dit.forward
    sigma = plain.trace.sigma.values
    assert [s for s, _ in calls] == pytest.approx(list(sigma), abs=1e-6)
    assert [n for s, n in calls] == ["main" if s > 0.7 else "low" for s in sigma]
    assert len(texts) == 2 and ["a cyan star moving down"] in texts  # its own states of the prompt and the negative
    above = int((sigma > 0.7).sum())
    assert 0 < above < len(sigma)
    np.testing.assert_array_equal(switched.trace.x0.values[:above], plain.trace.x0.values[:above])
    assert np.abs(switched.trace.x0.values[above] - plain.trace.x0.values[above]).max() > 1e-3
    assert np.abs(switched.frames.astype(int) - plain.frames.astype(int)).mean() > 0.5
    assert switched.params["model"] == "experts-test"

    folder = embedded.save_folder(tmp_path / "w", b.vae, b.dit, b.text, b.scheduler_config, b.latent_rgb.numpy(),
                                  backend.info, low=backend.low, verifier=backend.verifier)
    files = json.loads((folder / "manifest.json").read_text())["files"]
    assert {"low/dit/diffusion_pytorch_model.safetensors", "low/text_encoder/model.safetensors"} <= set(files)
    assert not (folder / "low" / "tokenizer").exists()
    loaded = embedded.load_folder(folder)
    assert loaded.expert_switch == 0.7 and loaded.describe()["expert_switch"] == 0.7
    np.testing.assert_array_equal(sora_nb.Generator(loaded).generate("a cyan star moving down", **kw).frames,
                                  switched.frames)
    target = folder / "low" / "dit" / "diffusion_pytorch_model.safetensors"
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(embedded.WeightsError, match=r"low/dit/diffusion_pytorch_model.safetensors' is corrupt"):
        embedded.load_folder(folder)

    args = (b.vae, b.dit, b.text, b.scheduler_config, b.latent_rgb.numpy())
    for switch in (0.0, 1.0, 1.5, float("nan"), "0.5", True):
        with pytest.raises(embedded.WeightsError, match=r"expert_switch must be a noise level in \(0, 1\)"):
            embedded.EmbeddedBackend(*args, {**plain_backend.info, "expert_switch": switch}, low=(other, other_text))
    with pytest.raises(embedded.WeightsError, match=r"expert_switch is 0.5 but there is no low-noise DiT"):
        embedded.EmbeddedBackend(*args, {**plain_backend.info, "expert_switch": 0.5})
    with pytest.raises(embedded.WeightsError, match=r"expert_switch must be a noise level"):  # a low DiT, no switch
        embedded.EmbeddedBackend(*args, plain_backend.info, low=(other, other_text))
    with pytest.raises(embedded.WeightsError, match="must have the main ones' architecture and config"):
        embedded.save_folder(tmp_path / "bad", b.vae, b.dit, b.text, b.scheduler_config, b.latent_rgb.numpy(),
                             {**plain_backend.info, "expert_switch": 0.5}, low=(_random_dit(), other_text))
    assert not (tmp_path / "bad").exists()  # refused before anything is written

def test_the_models_identity_is_what_it_loads_not_its_card(weights_folder):
    """Two runs with the same seed train the same networks but write other wall times into their cards: their
    clips' weights_sha256 differed, so reproduce refused the twin. The card and scores no longer count."""
    first = embedded.load_folder(weights_folder).describe()["weights_sha256"]
    (weights_folder / "MODEL_CARD.md").write_text("another run's wall times")
    (weights_folder / "scores.json").write_text("{}")
    _rehash(weights_folder)
    assert embedded.load_folder(weights_folder).describe()["weights_sha256"] == first
    rgb = json.loads((weights_folder / "latent_rgb.json").read_text())
    rgb[0][0] += 0.5
    (weights_folder / "latent_rgb.json").write_text(json.dumps(rgb))
    _rehash(weights_folder)
    assert embedded.load_folder(weights_folder).describe()["weights_sha256"] != first
