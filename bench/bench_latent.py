"""How "diffusable" an autoencoder's latent is: its reconstruction and its high-frequency content.

    .venv/bin/python bench/bench_latent.py [--vae DIR ...] [--clips 64] [--threads N]

A diagnostic for the quality bars, not a speed figure. Without ``--vae`` it measures the shipped
model's autoencoder; ``--vae`` takes any number of folders holding a saved ``VideoAutoencoder``
(a training run's ``vae_final`` or a weights folder's ``vae``). On training clips of the shapes
world it prints
- PSNR of the reconstruction, and of decoding the latent with Gaussian noise of 0.3 per-channel
  standard deviations added (how gracefully the decoder takes an imperfect latent);
- the high-frequency share: of the latent's spatial power (per channel and frame, mean removed,
  after per-channel normalisation), the share above half the Nyquist frequency on either axis;
- the same share for the clips' pixels average-pooled to the latent grid, for reference;
- roughness: the share of the latent's power that a 3x3 box blur removes (``train.roughness``).

A diffusion model draws coarse structure at high noise and fine detail at low noise. When the
latent keeps much of its power at high frequencies (far more than the pictures do at that
resolution), shapes are encoded in patterns that change from one latent cell to the next, which
the DiT must produce cell by cell at the end of sampling.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

import sora_nb
from _common import count, parse, parser, print_table
from sora_nb.backends import embedded
from sora_nb.train import clips_to_tensor, roughness
from sora_nb.world import sampler as world_sampler


def high_frequency_share(a: torch.Tensor) -> float:
    """Share of the (mean-removed) spatial power of ``a`` (..., h, w) above half the Nyquist frequency."""
    a = a - a.mean(dim=(-1, -2), keepdim=True)
    power = torch.fft.fft2(a).abs().pow(2)
    fy = torch.fft.fftfreq(a.shape[-2]).abs()[:, None]
    fx = torch.fft.fftfreq(a.shape[-1]).abs()[None]
    return float((power * (torch.maximum(fy, fx) > 0.25)).sum() / power.sum())


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--vae", nargs="*", default=[], help="folders of saved autoencoders (default: the shipped one)")
    p.add_argument("--clips", type=count, default=64)
    args = parse(p)
    video = clips_to_tensor(list(world_sampler.sample(args.clips, seed=3, split="train")))  # (B, 3, T, H, W)
    named = [("shipped", sora_nb.load().backend.vae)] if not args.vae else [
        (d, embedded.load_vae(Path(d))) for d in args.vae]
    rows = []
    for name, vae in named:
        vae = vae.eval()
        k = vae.config.spatial_factor
        with torch.no_grad():
            z = vae.encode(video)  # (B, C, F, h, w)
            std = z.std(dim=(0, 2, 3, 4), keepdim=True)  # (1, C, 1, 1, 1)
            noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
            recon, noisy = vae.decode(z, video.shape[2]), vae.decode(z + 0.3 * std * noise, video.shape[2])
            pixels = F.avg_pool3d(video, (vae.config.temporal_factor, k, k), ceil_mode=True)  # (B, 3, F, h, w)
            psnr = lambda x: 10 * math.log10(4.0 / float(F.mse_loss(x, video)))
            rows.append((name, f"{psnr(recon):.2f}", f"{psnr(noisy):.2f}",
                         f"{high_frequency_share(z / std):.3f}",
                         f"{high_frequency_share(pixels):.3f}", f"{float(roughness(z)):.3f}"))
    print(f"{args.clips} training clips, 2 s at 64x64")
    print_table(rows, header=("autoencoder", "PSNR dB", "PSNR, latent + 0.3 std noise", "latent HF share",
                              "pooled pixels HF share", "roughness"))


if __name__ == "__main__":
    main()
