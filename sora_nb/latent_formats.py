"""Latent -> RGB previews for the video model families, without running a VAE.

A video VAE's latent is not an image, but a *linear* map from its channels to RGB, fitted once by
least squares against decoded frames, gives a recognisable preview of every frame at latent
resolution for the cost of a matrix product. That is how ComfyUI previews while sampling, and how the
embedded model's ``preview`` works (its map is fitted to its own decoder by
``sora_nb.backends.embedded.fit_latent_rgb``).

This module holds the published maps for the latents of the open video models, so the same previews
(and the trace's ``preview`` variable, and the inspector) work when sora_nb drives a diffusers
pipeline::

    rgb = latent_to_rgb(latent, "wan2.1")     # latent (frame, channel, y, x) -> uint8 (frame, y, x, 3)

Each map applies to the latent *as the transformer sees it* (the normalised latent the sampler
denoises: per-channel mean/std for Wan and Mochi, the VAE scaling factor for HunyuanVideo and
CogVideoX) and produces values in about [-1, 1], turned into bytes as ``(v + 1) * 127.5``, clipped and
rounded (as ``EmbeddedBackend.preview`` does).

Sources (the numbers are measured coefficients, copied as published; commit ids pin the version read)
-------------------------------------------------------------------------------------------------
- Wan 2.1, LTX-Video, HunyuanVideo, Mochi: ComfyUI, ``comfy/latent_formats.py`` (classes ``Wan21``,
  ``LTXV``, ``HunyuanVideo``, ``Mochi``: ``latent_rgb_factors`` and ``latent_rgb_factors_bias``),
  github.com/comfyanonymous/ComfyUI at commit 040a3243468ecefd1f2802592d90458f1ce4d65f.
- CogVideoX: ComfyUI core has no CogVideoX latent format. The table here is the one in kijai's
  ComfyUI-CogVideoXWrapper, ``latent_preview.py`` (``Latent2RGBPreviewer``; published without a bias,
  so the bias is zero), github.com/kijai/ComfyUI-CogVideoXWrapper at commit
  666f7832f95871bc009a96e70b04134ceb13fc56. It is a community fit, less vetted than the others.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)  # (compared and hashed by identity: its arrays are not hashable)
class LatentFormat:
    """A model family's latent -> RGB map: ``rgb = latent @ factors + bias`` per latent pixel. ``factors`` and
    ``bias`` may be given as nested lists; they are kept as float32 arrays, checked to be (C, 3) and (3,)."""

    name: str
    factors: np.ndarray       # (channels, 3): R, G, B weight of each latent channel
    bias: np.ndarray          # (3,)
    source: str               # where the numbers come from

    def __post_init__(self) -> None:
        for field, shape in (("factors", "(channels, 3)"), ("bias", "(3,)")):
            try:
                value = np.array(getattr(self, field), dtype=np.float32)
            except (TypeError, ValueError):
                raise TypeError(f"{field} must be numbers of shape {shape}, got {type(getattr(self, field)).__name__}")
            ok = value.shape == (3,) if field == "bias" else (value.ndim == 2 and value.shape[1] == 3 and len(value))
            if not ok or not np.isfinite(value).all():
                raise ValueError(f"{field} must be finite numbers of shape {shape}, got shape {value.shape}")
            value.setflags(write=False)
            object.__setattr__(self, field, value)

    @property
    def channels(self) -> int:
        """Number of latent channels the map expects."""
        return int(self.factors.shape[0])


# Wan 2.1 (16 channels): ComfyUI comfy/latent_formats.py, class Wan21.
WAN21_FACTORS = [
    [-0.1299, -0.1692, 0.2932],
    [0.0671, 0.0406, 0.0442],
    [0.3568, 0.2548, 0.1747],
    [0.0372, 0.2344, 0.1420],
    [0.0313, 0.0189, -0.0328],
    [0.0296, -0.0956, -0.0665],
    [-0.3477, -0.4059, -0.2925],
    [0.0166, 0.1902, 0.1975],
    [-0.0412, 0.0267, -0.1364],
    [-0.1293, 0.0740, 0.1636],
    [0.0680, 0.3019, 0.1128],
    [0.0032, 0.0581, 0.0639],
    [-0.1251, 0.0927, 0.1699],
    [0.0060, -0.0633, 0.0005],
    [0.3477, 0.2275, 0.2950],
    [0.1984, 0.0913, 0.1861],
]
WAN21_BIAS = [-0.1835, -0.0868, -0.3360]

# HunyuanVideo (16 channels): ComfyUI comfy/latent_formats.py, class HunyuanVideo.
HUNYUAN_FACTORS = [
    [-0.0395, -0.0331, 0.0445],
    [0.0696, 0.0795, 0.0518],
    [0.0135, -0.0945, -0.0282],
    [0.0108, -0.0250, -0.0765],
    [-0.0209, 0.0032, 0.0224],
    [-0.0804, -0.0254, -0.0639],
    [-0.0991, 0.0271, -0.0669],
    [-0.0646, -0.0422, -0.0400],
    [-0.0696, -0.0595, -0.0894],
    [-0.0799, -0.0208, -0.0375],
    [0.1166, 0.1627, 0.0962],
    [0.1165, 0.0432, 0.0407],
    [-0.2315, -0.1920, -0.1355],
    [-0.0270, 0.0401, -0.0821],
    [-0.0616, -0.0997, -0.0727],
    [0.0249, -0.0469, -0.1703],
]
HUNYUAN_BIAS = [0.0259, -0.0192, -0.0761]

# Mochi (12 channels): ComfyUI comfy/latent_formats.py, class Mochi.
MOCHI_FACTORS = [
    [-0.0069, -0.0045, 0.0018],
    [0.0154, -0.0692, -0.0274],
    [0.0333, 0.0019, 0.0206],
    [-0.1390, 0.0628, 0.1678],
    [-0.0725, 0.0134, -0.1898],
    [0.0074, -0.0270, -0.0209],
    [-0.0176, -0.0277, -0.0221],
    [0.5294, 0.5204, 0.3852],
    [-0.0326, -0.0446, -0.0143],
    [-0.0659, 0.0153, -0.0153],
    [0.0185, -0.0217, 0.0014],
    [-0.0396, -0.0495, -0.0281],
]
MOCHI_BIAS = [-0.0940, -0.1418, -0.1453]

# CogVideoX (16 channels): kijai/ComfyUI-CogVideoXWrapper latent_preview.py; no bias published.
COGVIDEOX_FACTORS = [
    [0.11945946736445662, 0.09919175788574555, -0.004832707433877734],
    [-0.0011977028264356232, 0.05496505130267682, 0.021321622433638193],
    [-0.014088548986590666, -0.008701477861945644, -0.020991313281459367],
    [0.03063921972519621, 0.12186477097625073, 0.0139593690235148],
    [0.0927403067854673, 0.030293187650929136, 0.05083134241694003],
    [0.0379112441305742, 0.04935199882777209, 0.058562766246777774],
    [0.017749911959153715, 0.008839453404921545, 0.036005638019226294],
    [0.10610119248526109, 0.02339855688237826, 0.057154257614084596],
    [0.1273639464837117, -0.010959856130713416, 0.043268631260428896],
    [-0.01873510946881321, 0.08220930648486932, 0.10613256772247093],
    [0.008429116376722327, 0.07623856561000408, 0.09295712117576727],
    [0.12938137079617007, 0.12360403483892413, 0.04478930933220116],
    [0.04565908794779364, 0.041064156741596365, -0.017695041535528512],
    [0.00019003240570281826, -0.013965147883381978, 0.05329669529635849],
    [0.08082391586738358, 0.11548306825496074, -0.021464170006615893],
    [-0.01517932393230994, -0.0057985555313003236, 0.07216646476618871],
]
COGVIDEOX_BIAS = [0.0, 0.0, 0.0]

# LTX-Video (128 channels): ComfyUI comfy/latent_formats.py, class LTXV.
LTXV_FACTORS = [
    [1.1202e-02, -6.3815e-04, -1.0021e-02],
    [8.6031e-02, 6.5813e-02, 9.5409e-04],
    [-1.2576e-02, -7.5734e-03, -4.0528e-03],
    [9.4063e-03, -2.1688e-03, 2.6093e-03],
    [3.7636e-03, 1.2765e-02, 9.1548e-03],
    [2.1024e-02, -5.2973e-03, 3.4373e-03],
    [-8.8896e-03, -1.9703e-02, -1.8761e-02],
    [-1.3160e-02, -1.0523e-02, 1.9709e-03],
    [-1.5152e-03, -6.9891e-03, -7.5810e-03],
    [-1.7247e-03, 4.6560e-04, -3.3839e-03],
    [1.3617e-02, 4.7077e-03, -2.0045e-03],
    [1.0256e-02, 7.7318e-03, 1.3948e-02],
    [-1.6108e-02, -6.2151e-03, 1.1561e-03],
    [7.3407e-03, 1.5628e-02, 4.4865e-04],
    [9.5357e-04, -2.9518e-03, -1.4760e-02],
    [1.9143e-02, 1.0868e-02, 1.2264e-02],
    [4.4575e-03, 3.6682e-05, -6.8508e-03],
    [-4.5681e-04, 3.2570e-03, 7.7929e-03],
    [3.3902e-02, 3.3405e-02, 3.7454e-02],
    [-2.3001e-02, -2.4877e-03, -3.1033e-03],
    [5.0265e-02, 3.8841e-02, 3.3539e-02],
    [-4.1018e-03, -1.1095e-03, 1.5859e-03],
    [-1.2689e-01, -1.3107e-01, -2.1005e-01],
    [2.6276e-02, 1.4189e-02, -3.5963e-03],
    [-4.8679e-03, 8.8486e-03, 7.8029e-03],
    [-1.6610e-03, -4.8597e-03, -5.2060e-03],
    [-2.1010e-03, 2.3610e-03, 9.3796e-03],
    [-2.2482e-02, -2.1305e-02, -1.5087e-02],
    [-1.5753e-02, -1.0646e-02, -6.5083e-03],
    [-4.6975e-03, 5.0288e-03, -6.7390e-03],
    [1.1951e-02, 2.0712e-02, 1.6191e-02],
    [-6.3704e-03, -8.4827e-03, -9.5483e-03],
    [7.2610e-03, -9.9326e-03, -2.2978e-02],
    [-9.1904e-04, 6.2882e-03, 9.5720e-03],
    [-3.7178e-02, -3.7123e-02, -5.6713e-02],
    [-1.3373e-01, -1.0720e-01, -5.3801e-02],
    [-5.3702e-03, 8.1256e-03, 8.8397e-03],
    [-1.5247e-01, -2.1437e-01, -2.1843e-01],
    [3.1441e-02, 7.0335e-03, -9.7541e-03],
    [2.1528e-03, -8.9817e-03, -2.1023e-02],
    [3.8461e-03, -5.8957e-03, -1.5014e-02],
    [-4.3470e-03, -1.2940e-02, -1.5972e-02],
    [-5.4781e-03, -1.0842e-02, -3.0204e-03],
    [-6.5347e-03, 3.0806e-03, -1.0163e-02],
    [-5.0414e-03, -7.1503e-03, -8.9686e-04],
    [-8.5851e-03, -2.4351e-03, 1.0674e-03],
    [-9.0016e-03, -9.6493e-03, 1.5692e-03],
    [5.0914e-03, 1.2099e-02, 1.9968e-02],
    [1.3758e-02, 1.1669e-02, 8.1958e-03],
    [-1.0518e-02, -1.1575e-02, -4.1307e-03],
    [-2.8410e-02, -3.1266e-02, -2.2149e-02],
    [2.9336e-03, 3.6511e-02, 1.8717e-02],
    [-1.6703e-02, -1.6696e-02, -4.4529e-03],
    [4.8818e-02, 4.0063e-02, 8.7410e-03],
    [-1.5066e-02, -5.7328e-04, 2.9785e-03],
    [-1.7613e-02, -8.1034e-03, 1.3086e-02],
    [-9.2633e-03, 1.0803e-02, -6.3489e-03],
    [3.0851e-03, 4.7750e-04, 1.2347e-02],
    [-2.2785e-02, -2.3043e-02, -2.6005e-02],
    [-2.4787e-02, -1.5389e-02, -2.2104e-02],
    [-2.3572e-02, 1.0544e-03, 1.2361e-02],
    [-7.8915e-03, -1.2271e-03, -6.0968e-03],
    [-1.1478e-02, -1.2543e-03, 6.2679e-03],
    [-5.4229e-02, 2.6644e-02, 6.3394e-03],
    [4.4216e-03, -7.3338e-03, -1.0464e-02],
    [-4.5013e-03, 1.6082e-03, 1.4420e-02],
    [1.3673e-02, 8.8877e-03, 4.1253e-03],
    [-1.0145e-02, 9.0072e-03, 1.5695e-02],
    [-5.6234e-03, 1.1847e-03, 8.1261e-03],
    [-3.7171e-03, -5.3538e-03, 1.2590e-03],
    [2.9476e-02, 2.1424e-02, 3.0424e-02],
    [-3.4925e-02, -2.4340e-02, -2.5316e-02],
    [-3.4127e-02, -2.2406e-02, -1.0589e-02],
    [-1.7342e-02, -1.3249e-02, -1.0719e-02],
    [-2.1478e-03, -8.6051e-03, -2.9878e-03],
    [1.2089e-03, -4.2391e-03, -6.8569e-03],
    [9.0411e-04, -6.6886e-03, -6.7547e-05],
    [1.6048e-02, -1.0057e-02, -2.8929e-02],
    [1.2290e-03, 1.0163e-02, 1.8861e-02],
    [1.7264e-02, 2.7257e-04, 1.3785e-02],
    [-1.3482e-02, -3.6427e-03, 6.7481e-04],
    [4.6782e-03, -5.2423e-03, 2.4467e-03],
    [-5.9113e-03, -6.2244e-03, -1.8162e-03],
    [1.5496e-02, 1.4582e-02, 1.9514e-03],
    [7.4958e-03, 1.5886e-03, -8.2305e-03],
    [1.9086e-02, 1.6360e-03, -3.9674e-03],
    [-5.7021e-03, -2.7307e-03, -4.1066e-03],
    [1.7450e-03, 1.4602e-02, 2.5794e-02],
    [-8.2788e-04, 2.2902e-03, 4.5161e-03],
    [1.1632e-02, 8.9193e-03, -7.2813e-03],
    [7.5721e-03, 2.6784e-03, 1.1393e-02],
    [5.1939e-03, 3.6903e-03, 1.4049e-02],
    [-1.8383e-02, -2.2529e-02, -2.4477e-02],
    [5.8842e-04, -5.7874e-03, -1.4770e-02],
    [-1.6125e-02, -8.6101e-03, -1.4533e-02],
    [2.0540e-02, 2.0729e-02, 6.4338e-03],
    [3.3587e-03, -1.1226e-02, -1.6444e-02],
    [-1.4742e-03, -1.0489e-02, 1.7097e-03],
    [2.8130e-02, 2.3546e-02, 3.2791e-02],
    [-1.8532e-02, -1.2842e-02, -8.7756e-03],
    [-8.0533e-03, -1.0771e-02, -1.7536e-02],
    [-3.9009e-03, 1.6150e-02, 3.3359e-02],
    [-7.4554e-03, -1.4154e-02, -6.1910e-03],
    [3.4734e-03, -1.1370e-02, -1.0581e-02],
    [1.1476e-02, 3.9281e-03, 2.8231e-03],
    [7.1639e-03, -1.4741e-03, -3.8066e-03],
    [2.2250e-03, -8.7552e-03, -9.5719e-03],
    [2.4146e-02, 2.1696e-02, 2.8056e-02],
    [-5.4365e-03, -2.4291e-02, -1.7802e-02],
    [7.4263e-03, 1.0510e-02, 1.2705e-02],
    [6.2669e-03, 6.2658e-03, 1.9211e-02],
    [1.6378e-02, 9.4933e-03, 6.6971e-03],
    [1.7173e-02, 2.3601e-02, 2.3296e-02],
    [-1.4568e-02, -9.8279e-03, -1.1556e-02],
    [1.4431e-02, 1.4430e-02, 6.6362e-03],
    [-6.8230e-03, 1.8863e-02, 1.4555e-02],
    [6.1156e-03, 3.4700e-03, -2.6662e-03],
    [-2.6983e-03, -5.9402e-03, -9.2276e-03],
    [1.0235e-02, 7.4173e-03, -7.6243e-03],
    [-1.3255e-02, 1.9322e-02, -9.2153e-04],
    [2.4222e-03, -4.8039e-03, -1.5759e-02],
    [2.6244e-02, 2.5951e-02, 2.0249e-02],
    [1.5711e-02, 1.8498e-02, 2.7407e-03],
    [-2.1714e-03, 4.7214e-03, -2.2443e-02],
    [-7.4747e-03, 7.4166e-03, 1.4430e-02],
    [-8.3906e-03, -7.9776e-03, 9.7927e-03],
    [3.8321e-02, 9.6622e-03, -1.9268e-02],
    [-1.4605e-02, -6.7032e-03, 3.9675e-03],
]
LTXV_BIAS = [-0.0571, -0.1657, -0.2512]

_COMFY = "ComfyUI comfy/latent_formats.py @ 040a3243468ecefd1f2802592d90458f1ce4d65f, class "
_KIJAI = "kijai/ComfyUI-CogVideoXWrapper latent_preview.py @ 666f7832f95871bc009a96e70b04134ceb13fc56"


def _format(name: str, factors: list, bias: list, source: str) -> LatentFormat:
    """A read-only :class:`LatentFormat` from nested lists."""
    return LatentFormat(name=name, factors=factors, bias=bias, source=source)


FORMATS: dict[str, LatentFormat] = {
    "wan2.1": _format("wan2.1", WAN21_FACTORS, WAN21_BIAS, _COMFY + "Wan21"),
    "ltx-video": _format("ltx-video", LTXV_FACTORS, LTXV_BIAS, _COMFY + "LTXV"),
    "hunyuanvideo": _format("hunyuanvideo", HUNYUAN_FACTORS, HUNYUAN_BIAS, _COMFY + "HunyuanVideo"),
    "mochi": _format("mochi", MOCHI_FACTORS, MOCHI_BIAS, _COMFY + "Mochi"),
    "cogvideox": _format("cogvideox", COGVIDEOX_FACTORS, COGVIDEOX_BIAS, _KIJAI),
}

# Other spellings people use (diffusers pipeline class names, short names) -> the canonical key. (Wan 2.2's TI2V 5B
# has a 48-channel VAE of its own, with no published map: its previews are grey.)
ALIASES = {
    "wan": "wan2.1", "wan21": "wan2.1", "wan-2.1": "wan2.1", "wan_2_1": "wan2.1", "wanpipeline": "wan2.1",
    "ltx": "ltx-video", "ltxv": "ltx-video", "ltxvideo": "ltx-video", "ltxpipeline": "ltx-video",
    "hunyuan": "hunyuanvideo", "hunyuan-video": "hunyuanvideo", "hunyuanvideopipeline": "hunyuanvideo",
    "mochi-1": "mochi", "mochipipeline": "mochi",
    "cogvideo": "cogvideox", "cogvideoxpipeline": "cogvideox",
    # the image-to-video pipelines share their family's latent; Wan 2.2's A14B models use the Wan 2.1 VAE
    "wanimagetovideopipeline": "wan2.1", "wan2.2": "wan2.1", "wan22": "wan2.1",
    "ltximagetovideopipeline": "ltx-video", "cogvideoximagetovideopipeline": "cogvideox",
}


def get_format(family: str | LatentFormat) -> LatentFormat:
    """The :class:`LatentFormat` for a family name (``"wan2.1"``, ``"ltx-video"``, ``"hunyuanvideo"``,
    ``"mochi"``, ``"cogvideox"`` or an alias such as ``"wan"``, ``"LTXPipeline"``)."""
    if isinstance(family, LatentFormat):
        return family
    if not isinstance(family, str):
        raise TypeError(f"family must be a model family name ({', '.join(FORMATS)}) or a LatentFormat, "
                        f"got {type(family).__name__}")
    key = family.strip().lower().replace(" ", "")
    key = ALIASES.get(key, key)
    if key not in FORMATS:
        raise ValueError(f"unknown latent family {family!r}: use one of {', '.join(FORMATS)}")
    return FORMATS[key]


def linear_rgb(latent: Any, factors: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``(frame, channel, y, x)`` latent through a ``(channel, 3)`` map to uint8 ``(frame, y, x, 3)``."""
    z = np.asarray(latent.detach().float().cpu() if hasattr(latent, "detach") else latent, dtype=np.float32)
    if z.ndim != 4:
        raise ValueError(f"latent must have shape (frame, channel, y, x); got {z.shape}")
    if z.shape[1] != factors.shape[0]:
        raise ValueError(f"latent has {z.shape[1]} channels (shape (frame, channel, y, x) = {z.shape}); "
                         f"this map expects {factors.shape[0]}")
    z = np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)  # (a float16 overflow's NaN shows as the bias, not a warning)
    rgb = np.einsum("fcyx,cr->fyxr", z, factors, optimize=True) + bias  # (F, y, x, 3)
    return np.clip(np.rint((rgb + 1.0) * 127.5), 0, 255).astype(np.uint8)


def latent_to_rgb(latent: Any, family: str | LatentFormat) -> np.ndarray:
    """A cheap RGB preview of a ``(frame, channel, y, x)`` latent (numpy or torch) of a model family:
    uint8 ``(frame, y, x, 3)`` at latent resolution."""
    fmt = get_format(family)
    return linear_rgb(latent, fmt.factors, fmt.bias)
