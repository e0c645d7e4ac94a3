"""The embedded model's text encoder: a word-level tokenizer and a small ``transformers`` T5 encoder.

Both are built in code (no Hub download): the tokenizer from a word list with the ``tokenizers``
library, the encoder from a ``T5Config``. They are trained with the diffusion transformer and saved
beside it (``tokenizer/tokenizer.json``, ``text_encoder/model.safetensors``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel
from transformers.utils import logging as hf_logging

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
MAX_TOKENS = 48


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Hide transformers' per-file progress bars while loading or saving a small model."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def build_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer over ``words``; unknown words map to ``<unk>``."""
    vocab = {PAD: 0, EOS: 1, UNK: 2}
    for word in sorted({w.lower() for w in words}):
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                   model_max_length=MAX_TOKENS)


def build_encoder(vocab_size: int, width: int = 128, layers: int = 2, heads: int = 4) -> T5EncoderModel:
    """A small T5 encoder (relative position buckets, no dropout)."""
    config = T5Config(vocab_size=vocab_size, d_model=width, d_kv=width // heads, d_ff=2 * width,
                      num_layers=layers, num_heads=heads, dropout_rate=0.0, pad_token_id=0,
                      eos_token_id=1, decoder_start_token_id=0)
    return T5EncoderModel(config)


class TextEncoder(torch.nn.Module):
    """Prompts -> token states ``(B, L, E)`` and a padding mask ``(B, L)``."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, encoder: T5EncoderModel):
        super().__init__()
        self.tokenizer = tokenizer
        self.encoder = encoder

    @property
    def width(self) -> int:
        """Width E of the token states."""
        return self.encoder.config.d_model

    def tokenize(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask, padded to the longest prompt, at most MAX_TOKENS."""
        return self.tokenizer(list(prompts), padding=True, truncation=True, max_length=MAX_TOKENS,
                              return_tensors="pt", return_token_type_ids=False)

    def count_tokens(self, prompt: str) -> int:
        """Number of tokens ``prompt`` takes, before truncation (end token included)."""
        if not hasattr(self, "_counter"):  # a private copy: the fast tokenizer's truncation state is shared
            self._counter = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
            self._counter.no_truncation()
            self._counter.no_padding()
        return len(self._counter.encode(prompt).ids)

    def unknown_words(self, prompt: str) -> list[str]:
        """Words of ``prompt`` the tokenizer has never seen (they all map to ``<unk>``)."""
        backend = self.tokenizer.backend_tokenizer
        words = [w for w, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(prompt))]
        vocab = self.tokenizer.get_vocab()
        return [w for w in words if w not in vocab]

    def forward(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenize(prompts)
        device = self.encoder.device
        ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
        states = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, E)
        return states, mask

    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``tokenizer/`` and ``text_encoder/`` (safetensors) under ``folder``."""
        folder = Path(folder)
        with quiet_progress():
            self.tokenizer.save_pretrained(folder / "tokenizer")
            self.encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "TextEncoder":
        """Load what ``save_pretrained`` wrote; safetensors only, no network."""
        folder = Path(folder)
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer" / "tokenizer.json"),
                                            pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                            model_max_length=MAX_TOKENS)
        with quiet_progress():
            encoder = T5EncoderModel.from_pretrained(folder / "text_encoder", use_safetensors=True,
                                                     local_files_only=True)
        return cls(tokenizer, encoder)
