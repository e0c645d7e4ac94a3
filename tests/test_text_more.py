"""Text encoder edge cases: saved tokenizer bytes independent of the tokenizer's call history and of save /
load round trips; the word-level tokenizer splitting text as the world's `tokenize` does."""

import hashlib
from pathlib import Path

import pytest

from sora_nb import world
from sora_nb.models.text import TextEncoder, build_adapted, build_encoder, build_tokenizer

SHIPPED = Path(__file__).resolve().parents[1] / "sora_nb" / "weights" / "shapes"


def _files(folder: Path) -> dict[str, str]:
    """sha256 of each tokenizer file (comparing hashes: a failed comparison of the bytes takes pytest minutes to show)."""
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted((folder / "tokenizer").iterdir())}


def _word_level() -> TextEncoder:
    tok = build_tokenizer(["a", "red", "circle", "moving", "right", ".", ","])
    return TextEncoder(tok, build_encoder(len(tok), width=32, layers=1, heads=2))


@pytest.mark.parametrize("kind", ["word", "adapted"])
def test_saved_tokenizer_bytes_do_not_depend_on_call_history_or_round_trips(tmp_path, kind):
    text = _word_level() if kind == "word" else TextEncoder(*build_adapted(width=32, layers=1, heads=2))
    text.save_pretrained(tmp_path / "fresh")                  # never called
    text(["a red circle", "a"])
    text.save_pretrained(tmp_path / "used")                   # after a padded forward
    text.unknown_words("a violet disk")
    text.save_pretrained(tmp_path / "asked")                  # after an unpadded call
    TextEncoder.from_pretrained(tmp_path / "used").save_pretrained(tmp_path / "again")  # saved, loaded, saved
    want = _files(tmp_path / "used")
    for name in ("fresh", "asked", "again"):
        assert _files(tmp_path / name) == want, name


def test_shipped_tokenizer_saves_back_byte_identical(tmp_path):
    text = TextEncoder.from_pretrained(SHIPPED)
    text(["A Red Circle, moving right.", "a"])
    text.save_pretrained(tmp_path)
    assert _files(tmp_path) == _files(SHIPPED)


@pytest.mark.parametrize("prompt", ["a red circle moving rïght", "a red circle...", "  A RED\tCircle,moving right  ",
                                    "ａ ｒｅｄ circle", "a red_circle 12"])
def test_word_level_tokenizer_splits_as_the_world_does(prompt):
    tok = build_tokenizer(world.vocabulary())
    text = TextEncoder(tok, build_encoder(len(tok), width=32, layers=1, heads=2))
    ids = text.tokenize([prompt])["input_ids"][0].tolist()
    want = [w if w in tok.get_vocab() else tok.unk_token for w in world.tokenize(prompt)] + [tok.eos_token]
    assert tok.convert_ids_to_tokens(ids) == want
    assert text.unknown_words(prompt) == [w for w in world.tokenize(prompt) if w not in tok.get_vocab()]
