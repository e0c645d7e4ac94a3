"""A small Sora-like diffusion transformer over spacetime patches of a video latent.

Read top to bottom: embeddings, one transformer block, the final layer, the model. Shapes use
B batch, C latent channels, F latent frames, h/w latent height/width, N = F*(h/p)*(w/p) tokens,
D hidden size, L text tokens, E text width.

For a noisy latent x_t = (1 - sigma) * x0 + sigma * noise, the network predicts the clean latent
x0 (``prediction="sample"``, the default) or the flow-matching velocity v = noise - x0
(``prediction="velocity"``); ``forward`` always returns the velocity the scheduler wants,
v = (x_t - x0) / sigma in the first case. Predicting x0 matters when a token holds more numbers
than the transformer is wide (a 4x4 patch of 16 latent channels is 256 values): velocity contains the
noise, which cannot pass through that bottleneck, while the clean latent lies on a far smaller
manifold (Li & He 2025, "Back to Basics: Let Denoising Generative Models Denoise"). The shipped model
uses 2x2 patches (64 values per token, 128 wide), which also draw finer shapes than 4x4 ones. It is
conditioned on
- the timestep (sigma * 1000), through adaLN-Zero modulation as in DiT;
- the text token states, through cross-attention (PixArt-alpha style) and a pooled text vector
  added to the timestep embedding;
- positions, through a 3D sin-cos embedding computed for whatever (F, h, w) grid comes in, so any
  duration and the supported resolutions / aspect ratios share one set of weights.
"""

from __future__ import annotations

import copy
import functools
import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: scale and shift normalised tokens per sample."""
    return x * (1 + scale[:, None]) + shift[:, None]  # (B, N, D)


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sin-cos embedding of (possibly fractional) positions: (n,) -> (n, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=positions.device) / half)
    angles = positions.float()[:, None] * freqs[None]  # (n, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)  # (n, dim)


def sincos_3d(frames: int, height: int, width: int, dim: int) -> torch.Tensor:
    """3D position embedding for a (frames, height, width) token grid: (F*h*w, dim).

    The channels are split between time (1/4) and the two spatial axes (3/8 each).
    """
    dt = dim // 4 // 2 * 2
    dy = (dim - dt) // 2 // 2 * 2
    dx = dim - dt - dy
    return _per_token(sincos_1d(torch.arange(frames), dt), sincos_1d(torch.arange(height), dy),
                      sincos_1d(torch.arange(width), dx))  # (F*h*w, dim)


def _per_token(et: torch.Tensor, ey: torch.Tensor, ex: torch.Tensor) -> torch.Tensor:
    """Per-axis features (F, a), (h, b), (w, c) -> one row per token of the grid: (F*h*w, a+b+c)."""
    (frames, a), (height, b), (width, c) = et.shape, ey.shape, ex.shape
    grid = torch.cat([
        et[:, None, None].expand(frames, height, width, a),
        ey[None, :, None].expand(frames, height, width, b),
        ex[None, None, :].expand(frames, height, width, c),
    ], dim=-1)  # (F, h, w, a+b+c)
    return grid.reshape(frames * height * width, a + b + c)


def rope_3d(frames: int, height: int, width: int, head_dim: int, base: float = 100.0) -> torch.Tensor:
    """Rotary angles for a (frames, height, width) token grid: (F*h*w, head_dim/2).

    Each query/key head is split into pairs of channels; a quarter of the pairs rotate with the
    token's frame index, the rest with its row and column (3/8 each); an axis with k pairs turns them at
    base^(-i/k) radians per step, i = 0 .. k-1 (from 1 down to nearly 1/base). A dot product of two rotated vectors then depends on the tokens'
    relative offset in time and space (RoPE, as in Wan and HunyuanVideo), which tells each token
    directly which tokens are its neighbours.
    """
    pairs = head_dim // 2
    pt = pairs // 4
    py = (pairs - pt) // 2
    px = pairs - pt - py
    def axis(n: int, k: int) -> torch.Tensor:
        freqs = base ** (-torch.arange(k, dtype=torch.float32) / max(k, 1))  # (k,)
        return torch.arange(n, dtype=torch.float32)[:, None] * freqs[None]  # (n, k)
    return _per_token(axis(frames, pt), axis(height, py), axis(width, px))  # (F*h*w, pairs)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2i, 2i+1) of x (B, H, N, d) by the angles whose cos and sin are (N, d/2);
    the result is float32. Written out: (x1 cos - x2 sin, x1 sin + x2 cos) for each pair (x1, x2)."""
    return rotate_pairs(x, torch.complex(cos.float(), sin.float()))  # (B, H, N, d)


def rotate_pairs(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """``apply_rope`` with the angles as one complex tensor cos + i sin (N, d/2): each channel pair is a
    complex number, multiplied by its rotation in one kernel (bit for bit the four products and two sums
    written out, about eight times faster on a CPU); the result is float32 (B, H, N, d)."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())  # (B, H, N, d/2) complex
    return torch.view_as_real(pairs * rotation).flatten(-2)  # (B, H, N, d)


@functools.lru_cache(maxsize=16)
def grid_positions(frames: int, height: int, width: int, dim: int, head_dim: int,
                   rope: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A token grid's sin-cos embedding (F*h*w, dim) and, with ``rope``, its rotations cos + i sin
    (F*h*w, head_dim/2), complex; None without. Computed once per grid and kept (every denoising step of a
    clip asks for the same one): read them, never write to them."""
    with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable later by training's autograd
        pos = sincos_3d(frames, height, width, dim)  # (N, D)
        if not rope:
            return pos, None
        angles = rope_3d(frames, height, width, head_dim)  # (N, d/2)
        return pos, torch.complex(angles.cos(), angles.sin())  # (N, d/2) complex


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


class TimestepEmbedder(nn.Module):
    """Scalar timestep -> D-vector (sinusoidal features, then an MLP)."""

    def __init__(self, hidden_size: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sincos_1d(t, self.freq_dim).to(self.mlp[0].weight.dtype))  # (B, D)


class Attention(nn.Module):
    """Multi-head attention; self-attention when ``context`` is None, else cross-attention."""

    def __init__(self, dim: int, num_heads: int, context_dim: int | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None,
                rope: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context  # (B, M, Dc)
        q = rearrange(self.q(x), "B N (H d) -> B H N d", H=self.num_heads)  # (B, H, N, d)
        k, v = rearrange(self.kv(context), "B M (two H d) -> two B H M d", two=2, H=self.num_heads)  # (B, H, M, d)
        dtype = q.dtype
        if rope is not None:  # self-attention with rotary positions: cos + i sin of the (N, d/2) angles
            q, k = rotate_pairs(q, rope), rotate_pairs(k, rope)  # float32, as attention wants
        attn_mask = None if mask is None else mask[:, None, None, :].bool()  # (B, 1, 1, M)
        # attention itself in float32: on CPU its bfloat16 kernel (under autocast) is slower, not faster;
        # the result goes back to the projections' dtype, so a model cast to bfloat16 still runs
        with torch.autocast(x.device.type, enabled=False):
            y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask).to(dtype)  # (B, H, N, d)
        return self.out(rearrange(y, "B H N d -> B N (H d)"))  # (B, N, D)


class DiTBlock(nn.Module):
    """Self-attention over all spacetime tokens, cross-attention to the text, an MLP; adaLN-Zero."""

    def __init__(self, dim: int, num_heads: int, text_dim: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.cross = Attention(dim, num_heads, context_dim=text_dim)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))  # zero-initialised in ShapesDiT

    def forward(self, x: torch.Tensor, c: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                rope: torch.Tensor | None = None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=1)  # 6 x (B, D)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1), rope=rope)  # (B, N, D)
        x = x + self.cross(self.norm2(x), text, text_mask)  # (B, N, D)
        x = x + gate2[:, None] * self.mlp(modulate(self.norm3(x), shift2, scale2))  # (B, N, D)
        return x


class FinalLayer(nn.Module):
    """adaLN-modulated norm, then a linear map from tokens back to latent patches."""

    def __init__(self, dim: int, patch_values: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, patch_values)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(c).chunk(2, dim=1)  # 2 x (B, D)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, N, C*pt*ph*pw)


class ShapesDiT(ModelMixin, ConfigMixin):
    """Text-conditioned diffusion transformer over spacetime patches; returns flow velocity."""

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 16,
        patch_size: tuple[int, int, int] = (1, 2, 2),  # (frames, y, x) latent cells per token
        hidden_size: int = 128,
        depth: int = 6,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        text_dim: int = 128,   # width of the text encoder's token states
        prediction: str = "sample",  # what the network outputs: "sample" (x0) or "velocity"
        self_condition: bool = False,  # also read the previous step's x0 estimate (zeros at the first step)
        rope: bool = False,  # rotary 3D positions in self-attention, on top of the sin-cos embedding
    ):
        super().__init__()
        if prediction not in ("sample", "velocity"):
            raise ValueError(f"prediction must be 'sample' or 'velocity', got {prediction!r}")
        for name, value in (("latent_channels", latent_channels), ("hidden_size", hidden_size), ("depth", depth),
                            ("num_heads", num_heads), ("text_dim", text_dim)):
            _positive_int(name, value)
        if len(patch_size) != 3:
            raise ValueError(f"patch_size must be 3 integers >= 1 (frames, y, x), got {patch_size!r}")
        for value in patch_size:
            _positive_int("patch_size", value)
        if hidden_size % 2 or hidden_size % num_heads:
            raise ValueError(f"hidden_size must be even and a multiple of num_heads ({num_heads}) (the sin-cos "
                             f"positions fill it in pairs, the heads split it), got {hidden_size}")
        if rope and (hidden_size // num_heads) % 2:
            raise ValueError(f"hidden_size / num_heads must be even with rope (channel pairs rotate), got "
                             f"{hidden_size} / {num_heads} = {hidden_size // num_heads}")
        if not (isinstance(mlp_ratio, (int, float)) and mlp_ratio > 0):
            raise ValueError(f"mlp_ratio must be a number > 0, got {mlp_ratio!r}")
        pt, ph, pw = patch_size
        self.patch_values = latent_channels * pt * ph * pw
        self.x_embed = nn.Linear(self.patch_values * (2 if self_condition else 1), hidden_size)
        self.t_embed = TimestepEmbedder(hidden_size)
        self.text_pool = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, hidden_size))
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads, text_dim, mlp_ratio) for _ in range(depth))
        self.final = FinalLayer(hidden_size, self.patch_values)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier for linears; adaLN-Zero: modulation and output layers start at zero (DiT)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.t_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embed.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        nn.init.zeros_(self.final.ada[-1].weight)
        nn.init.zeros_(self.final.ada[-1].bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)

    def grown(self, depth: int) -> "ShapesDiT":
        """A deeper copy that computes exactly what this network computes, to train on from there.

        ``depth - len(self.blocks)`` new blocks are spread evenly among the old ones, each a copy of the
        block before it with its residual branches shut: the adaLN-Zero modulation (so both gates) and
        the ungated cross-attention's output projection set to zero. Each new block then starts as the
        identity, with its attention and MLP weights already useful to open into (progressive stacking,
        Gong et al. 2019, with adaLN-Zero's zero start).
        """
        old = len(self.blocks)
        if not isinstance(depth, int) or depth < old:
            raise ValueError(f"depth must be an integer >= the network's depth {old}, got {depth!r}")
        extra = depth - old
        # the old block each new one follows: spread evenly, several after one block when more than doubling
        after = [min(old - 1, (j + 1) * old // extra - 1) if extra <= old else j * old // extra for j in range(extra)]
        net = type(self).from_config({**self.config, "depth": depth})
        blocks = []
        for i, block in enumerate(self.blocks):
            blocks.append(block)  # only read: load_state_dict below copies its tensors into the new network
            for _ in range(after.count(i)):
                new = copy.deepcopy(block)
                for layer in (new.ada[-1], new.cross.out):
                    nn.init.zeros_(layer.weight)
                    nn.init.zeros_(layer.bias)
                blocks.append(new)
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("blocks.")}
        state.update({f"blocks.{i}.{k}": v for i, b in enumerate(blocks) for k, v in b.state_dict().items()})
        net.load_state_dict(state)
        return net.train(self.training)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor, x0_prev: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, F, h, w), timestep (B,) in [0, 1000], text (B, L, E), text_mask (B, L) -> v like x.

        ``x0_prev`` (like x) is the previous step's clean-latent estimate for a self-conditioned model
        (None: zeros, as at the first step); other models ignore it.
        """
        out = self.network(x, timestep, text, text_mask, x0_prev)  # (B, C, F, h, w)
        if self.config.prediction == "velocity":
            return out
        sigma = (timestep.to(x.dtype) / 1000.0).clamp(min=1e-3).view(-1, 1, 1, 1, 1)  # (B, 1, 1, 1, 1)
        return (x - out) / sigma  # v = (x_t - x0) / sigma

    def predict_x0(self, x: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor,
                   text_mask: torch.Tensor, x0_prev: torch.Tensor | None = None) -> torch.Tensor:
        """The model's clean latent x0 for ``x`` at ``timestep`` (same arguments as ``forward``)."""
        out = self.network(x, timestep, text, text_mask, x0_prev)  # (B, C, F, h, w)
        if self.config.prediction == "sample":
            return out
        return x - (timestep.to(x.dtype) / 1000.0).view(-1, 1, 1, 1, 1) * out  # x0 = x_t - sigma v

    def network(self, x: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor, x0_prev: torch.Tensor | None = None) -> torch.Tensor:
        """The transformer itself: its raw output (x0 or v, by ``config.prediction``), shaped like x."""
        pt, ph, pw = self.config.patch_size
        B, C, Fr, h, w = x.shape
        if Fr % pt or h % ph or w % pw:
            raise ValueError(f"the latent's (frames, height, width) {(Fr, h, w)} must be multiples of the patch "
                             f"size {(pt, ph, pw)}")
        gf, gh, gw = Fr // pt, h // ph, w // pw
        if self.config.self_condition:  # the previous estimate rides along as extra input channels
            x = torch.cat([x, torch.zeros_like(x) if x0_prev is None else x0_prev.to(x.dtype)], dim=1)  # (B, 2C, F, h, w)
        tokens = rearrange(x, "B C (F pt) (h ph) (w pw) -> B (F h w) (C pt ph pw)", pt=pt, ph=ph, pw=pw)  # (B, N, P)
        pos, rope = grid_positions(gf, gh, gw, self.config.hidden_size,
                                   self.config.hidden_size // self.config.num_heads, self.config.rope)
        tokens = self.x_embed(tokens) + pos.to(x.device, x.dtype)[None]  # (B, N, D)
        mask = text_mask.to(text.dtype)[..., None]  # (B, L, 1)
        pooled = (text * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, E)
        c = self.t_embed(timestep) + self.text_pool(pooled)  # (B, D)
        if rope is not None:  # the rotations (N, d/2), shared by every block
            rope = rope.to(x.device)
        for block in self.blocks:
            tokens = block(tokens, c, text, text_mask, rope)  # (B, N, D)
        out = self.final(tokens, c)  # (B, N, P)
        return rearrange(out.to(x.dtype), "B (F h w) (C pt ph pw) -> B C (F pt) (h ph) (w pw)",
                         F=gf, h=gh, w=gw, pt=pt, ph=ph, pw=pw)  # (B, C, F, h, w)
