"""A small video autoencoder: the "video compression network" of the embedded model.

It compresses a clip 4x in time and 4x in each spatial axis (16 x 64 x 64 x 3 -> 4 x 16 x 16 x 16,
a 12x reduction), as Sora, Wan and LTX-Video compress video before the diffusion transformer.

Design, for speed on a laptop CPU: space-to-depth first (each 4x4x4 block of pixels becomes one
192-value cell). Each side is a linear map (a 1x1 convolution initialised from the PCA of training
cells, so the untrained autoencoder already reconstructs at about 25 dB PSNR) plus a residual branch
of 3D convolutions at latent resolution that starts at zero and learns what PCA misses. The decoder
ends with a light per-frame convolution at full resolution to smooth block edges. Frames are padded to a
multiple of 4 by repeating the last one, and trimmed after decoding.

Pixels are in [-1, 1]; ``encode`` returns the raw latent, ``normalize``/``denormalize`` map it to and
from the unit-variance latent the diffusion model works on (statistics measured after training).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn


class OneDNNConv3d(nn.Conv3d):
    """``nn.Conv3d`` (same parameters, same state dict) that infers on oneDNN on a CPU.

    For one small clip (batch 1, as ``generate`` decodes) torch's heuristic picks its reference kernel,
    ``slow_conv3d``, which decodes a default clip about twice as slowly (bench/RESULTS.md, forty-eighth session).
    The result is the same convolution to float rounding: decoded uint8 frames moved by at most one level, and
    no verdict of 400 clips changed. Training (gradients on) keeps torch's own choice. Only the decoder uses it:
    the encoder, whose latents training caches with gradients on, stays bit for bit torch's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        training = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        if (not training and x.device.type == "cpu" and x.dtype == self.weight.dtype == torch.float32
                and self.padding_mode == "zeros" and not isinstance(self.padding, str)
                and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
            return torch.mkldnn_convolution(x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups)
        return super().forward(x)


class ResBlock3d(nn.Module):
    """Two 3x3x3 convolutions with a residual connection."""

    def __init__(self, channels: int, conv: type[nn.Conv3d] = nn.Conv3d):
        super().__init__()
        self.conv1 = conv(channels, channels, 3, padding=1)
        self.conv2 = conv(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))  # (B, c, F, h, w)


def blur_cells(z: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian blur of a latent (B, C, F, h, w) along h and w, sigma in cells (edges replicated)."""
    r = max(1, int(round(2.5 * sigma)))
    x = torch.arange(-r, r + 1, dtype=z.dtype, device=z.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    B, C, Fr, h, w = z.shape
    y = z.permute(0, 2, 1, 3, 4).reshape(B * Fr * C, 1, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return y.reshape(B, Fr, C, h, w).permute(0, 2, 1, 3, 4)


class VideoAutoencoder(ModelMixin, ConfigMixin):
    """Video <-> latent, 4x temporal and 4x spatial compression."""

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 16,
        hidden: int = 64,            # channels of the convolutions at latent resolution
        refine: int = 16,            # channels of the full-resolution refinement convolution
        temporal_factor: int = 4,
        spatial_factor: int = 4,
        latent_mean: float | list[float] = 0.0,  # per-channel statistics of encoded training clips,
        latent_std: float | list[float] = 1.0,   # measured after training (a float: all channels)
        decoder_blocks: int = 1,     # residual blocks of the decoder at latent resolution
        decode_blur: float = 0.0,    # the decoder first blurs the latent in space (Gaussian, sigma in cells; 0: off)
        encoder_blocks: int = 1,     # residual blocks of the encoder at latent resolution
    ):
        super().__init__()
        for name, value in (("latent_channels", latent_channels), ("hidden", hidden), ("refine", refine),
                            ("temporal_factor", temporal_factor), ("spatial_factor", spatial_factor),
                            ("decoder_blocks", decoder_blocks), ("encoder_blocks", encoder_blocks)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name, value in (("latent_mean", latent_mean), ("latent_std", latent_std)):
            values = value if isinstance(value, (list, tuple)) else [value]
            if (len(values) not in (1, latent_channels)
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)):
                raise ValueError(f"{name} must be a finite number or {latent_channels} of them (one per latent "
                                 f"channel), got {value!r}")
        if any(v <= 0 for v in (latent_std if isinstance(latent_std, (list, tuple)) else [latent_std])):
            raise ValueError(f"latent_std must be > 0 (the latent is divided by it), got {latent_std!r}")
        if not (isinstance(decode_blur, (int, float)) and math.isfinite(decode_blur) and decode_blur >= 0):
            raise ValueError(f"decode_blur must be a finite number >= 0 (sigma in latent cells; 0: off), got {decode_blur!r}")
        cell = 3 * temporal_factor * spatial_factor * spatial_factor
        self.enc_linear = nn.Conv3d(cell, latent_channels, 1)
        self.dec_linear = OneDNNConv3d(latent_channels, cell, 1)
        self.enc_in = nn.Conv3d(cell, hidden, 1)
        self.enc_block = ResBlock3d(hidden)
        self.enc_blocks = nn.ModuleList(ResBlock3d(hidden) for _ in range(encoder_blocks - 1))  # more depth (none by default)
        self.enc_out = nn.Conv3d(hidden, latent_channels, 1)
        self.dec_in = OneDNNConv3d(latent_channels, hidden, 3, padding=1)
        self.dec_block1 = ResBlock3d(hidden, OneDNNConv3d)
        self.dec_blocks = nn.ModuleList(ResBlock3d(hidden, OneDNNConv3d) for _ in range(decoder_blocks - 1))  # more depth (none by default)
        self.dec_out = OneDNNConv3d(hidden, cell, 1)
        self.refine1 = nn.Conv2d(3, refine, 3, padding=1)
        self.refine2 = nn.Conv2d(refine, 3, 3, padding=1)
        for layer in (self.enc_out, self.dec_out, self.refine2, *(b.conv2 for b in (*self.enc_blocks, *self.dec_blocks))):  # residual branches start at zero
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @torch.no_grad()
    def init_from_pca(self, video: torch.Tensor) -> None:
        """Set the linear paths to the top principal components of ``video``'s 4x4x4 cells."""
        kt, ks = self.config.temporal_factor, self.config.spatial_factor
        cells = rearrange(self._pad_frames(video), "B c (F kt) (h kh) (w kw) -> (B F h w) (c kt kh kw)",
                          kt=kt, kh=ks, kw=ks)  # (n, 192)
        mean = cells.mean(0)
        _, _, v = torch.linalg.svd(cells - mean, full_matrices=False)
        comps = v[: self.config.latent_channels]  # (C, 192)
        self.enc_linear.weight.copy_(comps[:, :, None, None, None])
        self.enc_linear.bias.copy_(-comps @ mean)
        self.dec_linear.weight.copy_(comps.T[:, :, None, None, None])
        self.dec_linear.bias.copy_(mean)

    def _pad_frames(self, video: torch.Tensor) -> torch.Tensor:
        """Repeat the last frame so the frame count is a multiple of the temporal factor."""
        k = self.config.temporal_factor
        extra = (-video.shape[2]) % k
        if extra:
            video = torch.cat([video, video[:, :, -1:].expand(-1, -1, extra, -1, -1)], dim=2)
        return video  # (B, 3, T', H, W)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> raw latent (B, C, ceil(T/4), H/4, W/4)."""
        kt, ks = self.config.temporal_factor, self.config.spatial_factor
        x = self._pad_frames(video)  # (B, 3, T', H, W)
        x = rearrange(x, "B c (F kt) (h kh) (w kw) -> B (c kt kh kw) F h w", kt=kt, kh=ks, kw=ks)  # (B, 192, F, h, w)
        h = self.enc_block(self.enc_in(x))  # (B, hidden, F, h, w)
        for block in self.enc_blocks:
            h = block(h)
        residual = self.enc_out(F.silu(h))  # (B, C, F, h, w)
        return self.enc_linear(x) + residual  # (B, C, F, h, w)

    def decode(self, z: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Raw latent (B, C, F, h, w) -> video (B, 3, T, H, W) in [-1, 1], trimmed to ``num_frames``."""
        kt, ks = self.config.temporal_factor, self.config.spatial_factor
        if self.config.decode_blur:
            z = blur_cells(z, self.config.decode_blur)
        h = self.dec_block1(self.dec_in(z))  # (B, hidden, F, h, w)
        for block in self.dec_blocks:
            h = block(h)
        residual = self.dec_out(F.silu(h))  # (B, 192, F, h, w)
        x = self.dec_linear(z) + residual  # (B, 192, F, h, w)
        x = rearrange(x, "B (c kt kh kw) F h w -> (B F kt) c (h kh) (w kw)", c=3, kt=kt, kh=ks, kw=ks)  # (B*T', 3, H, W)
        x = x + self.refine2(F.silu(self.refine1(x)))  # (B*T', 3, H, W)
        x = rearrange(x, "(B T) c H W -> B c T H W", B=z.shape[0])  # (B, 3, T', H, W)
        if num_frames is not None:
            x = x[:, :, :num_frames]
        return x.clamp(-1.0, 1.0)

    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and std shaped to broadcast over (B, C, F, h, w)."""
        mean = torch.as_tensor(self.config.latent_mean, dtype=z.dtype, device=z.device)
        std = torch.as_tensor(self.config.latent_std, dtype=z.dtype, device=z.device)
        return mean.reshape(1, -1, 1, 1, 1), std.reshape(1, -1, 1, 1, 1)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latent -> the unit-variance (per channel) latent the diffusion model sees."""
        mean, std = self._stats(z)
        return (z - mean) / std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Unit-variance latent -> raw latent for ``decode``."""
        mean, std = self._stats(z)
        return z * std + mean

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``video`` (for training)."""
        return self.decode(self.encode(video), video.shape[2])
