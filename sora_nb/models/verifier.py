"""A latent-frame verifier: how well does one latent frame show a caption?

A small transformer reads one frame of the DiT's (normalised) latent as 2x2-cell tokens, and the
caption's token states from the model's own text encoder cross-attend to them; the mean over the
caption's tokens gives one logit. It is trained (``scripts/train_verifier.py``) on the world's true
clips, each against captions with one thing changed (a colour, a shape, a motion, an object dropped,
added or two colours swapped), so a higher logit means the frame matches the caption better.

A clip's score is the mean of its frames' logits (`ClipVerifier.clip_score`): a frame where an
object's shape or colour flips, or a ghost appears, pulls it down. Picking the best of a prompt's
candidate clips by this score is measured in ``bench/bench_candidates.py --verifier``; it reads
only the latents and the model's text states, never the evaluator. `Generator.best_of` picks by it, and
`generate` redraws a draw it scores under the manifest's ``redraw_below`` (`EmbeddedBackend.judge_draw`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


class _Block(nn.Module):
    """Pre-norm self-attention, optional cross-attention to ``memory``, MLP."""

    def __init__(self, width: int, heads: int, cross: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.cross = nn.MultiheadAttention(width, heads, batch_first=True) if cross else None
        self.norm2 = nn.LayerNorm(width) if cross else None
        self.norm3 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None, memory: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, key_padding_mask=pad, need_weights=False)[0]
        if self.cross is not None:
            h = self.norm2(x)
            x = x + self.cross(h, memory, memory, need_weights=False)[0]
        return x + self.mlp(self.norm3(x))


class ClipVerifier(ModelMixin, ConfigMixin):
    """Scores latent frames (B, C, h, w) against text states (B, L, text_dim) with mask (B, L)."""

    @register_to_config
    def __init__(self, latent_channels: int = 16, text_dim: int = 128, hidden_size: int = 96, num_heads: int = 4,
                 latent_layers: int = 2, pair_layers: int = 2, patch_size: int = 2, max_cells: int = 32):
        super().__init__()
        grid = max_cells // patch_size
        self.embed = nn.Linear(latent_channels * patch_size * patch_size, hidden_size)
        self.rows = nn.Parameter(torch.randn(grid, hidden_size) * 0.02)
        self.cols = nn.Parameter(torch.randn(grid, hidden_size) * 0.02)
        self.latent_blocks = nn.ModuleList([_Block(hidden_size, num_heads, False) for _ in range(latent_layers)])
        self.text_in = nn.Linear(text_dim, hidden_size)
        self.pair_blocks = nn.ModuleList([_Block(hidden_size, num_heads, True) for _ in range(pair_layers)])
        self.head = nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, 1))

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) latent frames -> (B, tokens, hidden) token states."""
        b, c, h, w = frames.shape
        p, limit = self.config.patch_size, self.config.max_cells
        if h % p or w % p or h > limit or w > limit:
            raise ValueError(f"latent frames must be multiples of {p} cells and at most {limit} per side, got {h}x{w}")
        t = frames.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)
        pos = (self.rows[: h // p, None] + self.cols[None, : w // p]).reshape(1, -1, self.rows.shape[1])
        x = self.embed(t) + pos
        for block in self.latent_blocks:
            x = block(x)
        return x

    def score(self, memory: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits (B,) of encoded frames ``memory`` against text ``states`` / ``mask`` (1 = token)."""
        x = self.text_in(states.to(memory.dtype))
        for block in self.pair_blocks:
            x = block(x, mask == 0, memory)
        m = mask.unsqueeze(-1).to(x)
        return self.head((x * m).sum(1) / m.sum(1).clamp(min=1)).squeeze(-1)

    def forward(self, frames: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.score(self.encode_frames(frames), states, mask)

    @torch.no_grad()
    def clip_score(self, latents: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Scores (n,) of n clips' latents (n, F, C, h, w), as ``Video.latents`` stacks them, against one
        caption's states (1, L, text_dim) and mask (1, L): the mean of their frames' logits."""
        n, f = latents.shape[:2]
        frames = latents.reshape(n * f, *latents.shape[2:]).float()
        logits = self(frames, states.float().expand(n * f, -1, -1), mask.expand(n * f, -1))
        return logits.reshape(n, f).mean(1)
