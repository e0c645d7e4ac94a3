"""The world's language: caption templates with synonyms, the parser (caption -> labels), vocabulary."""

from __future__ import annotations

import itertools
import re
import unicodedata
from typing import Optional, Union

import numpy as np

from . import spec
from .spec import Labels, ObjectLabel

PHRASINGS = ("train", "heldout", "any")

# Words for each attribute. HELDOUT_* words appear only with phrasing="heldout" (or "any").
COLOUR_WORDS = {c: [c] for c in spec.COLOURS}
COLOUR_WORDS["cyan"] = ["cyan", "turquoise"]
HELDOUT_COLOUR_WORDS = {"purple": ["violet"]}
SHAPE_WORDS = {
    "circle": ["circle", "disc", "ball"],
    "square": ["square", "box", "block"],
    "triangle": ["triangle"],
    "star": ["star"],
    "cross": ["cross", "plus sign"],
}
HELDOUT_SHAPE_WORDS = {"circle": ["disk"]}
SIZE_WORDS = {"small": ["small", "little", "tiny"], "large": ["large", "big"]}
BACKGROUND_WORDS = {
    "dark": ["dark", "black"],
    "light": ["light", "white", "pale"],
    "navy": ["navy", "navy blue"],
    "gradient": ["gradient", "shaded"],
}
BACKGROUND_NOUNS = ["background", "backdrop"]
BACKGROUND_PREPS = ["on", "against", "over", "in front of"]

TRAVEL_VERBS = [("moving", "moves"), ("sliding", "slides"), ("heading", "heads"),
                ("drifting", "drifts"), ("gliding", "glides")]
DIRECTION_WORDS = {
    "right": ["right", "to the right", "rightward"],
    "left": ["left", "to the left", "leftward"],
    "up": ["up", "upward", "upwards"],
    "down": ["down", "downward", "downwards"],
}
for _v in ("up", "down"):
    for _h in ("left", "right"):
        _edge = "top" if _v == "up" else "bottom"
        DIRECTION_WORDS[f"{_v}-{_h}"] = [
            f"{_v} and to the {_h}", f"diagonally {_v} and {_h}", f"toward the {_edge} {_h}"]
# Motions that are a verb phrase of their own: (gerund forms, third-person forms), aligned.
MOTION_PHRASES = {
    "bounce": (["bouncing", "bouncing up and down", "hopping"], ["bounces", "bounces up and down", "hops"]),
    "grow": (["growing", "getting bigger", "expanding"], ["grows", "gets bigger", "expands"]),
    "shrink": (["shrinking", "getting smaller", "contracting"], ["shrinks", "gets smaller", "contracts"]),
    "spin": (["spinning", "rotating", "twirling"], ["spins", "rotates", "twirls"]),
    "still": (["standing still", "staying still", "not moving", "resting"],
              ["stands still", "stays still", "does not move", "rests"]),
}
OCCLUDER_VERBS = [("passing", "passes"), ("going", "goes"), ("slipping", "slips"), ("disappearing", "disappears")]
OCCLUDER_NOUNS = ["grey bar", "gray bar", "grey pillar", "grey wall"]
OCCLUDER_EXITS = ("and coming out the other side", "and comes out the other side")
REAPPEARS = ("and reappearing", "and reappears")

# Object templates. Slots: {a} article, {size} optional size word, {colour}, {shape}, {mg}/{m3}
# gerund/third-person motion, {og}/{o3} optional occluder phrase.
TEMPLATES = {
    "adjective": "{a} {size}{colour} {shape} {mg}{og}",
    "bare": "{size}{colour} {shape} {mg}{og}",
    "apposition": "{a} {size}{shape}, {colour}, {mg}{og}",
    "relative": "{a} {size}{colour} {shape} that {m3}{o3}",
    "in_colour": "{a} {size}{shape} in {colour} {mg}{og}",
    # held out of phrasing="train":
    "motion_first": "{mg}, {a} {size}{colour} {shape}{og}",
    "that_is": "{a} {size}{shape} that is {colour} and {mg}{og}",
}
HELDOUT_TEMPLATES = ("motion_first", "that_is")
TRAIN_TEMPLATES = tuple(t for t in TEMPLATES if t not in HELDOUT_TEMPLATES)
# How several object phrases are joined, for 2 and 3 objects.
JOINERS = {2: ["{0} and {1}", "{0}, and {1}", "{0} while {1}", "{0}; {1}"],
           3: ["{0}, {1} and {2}", "{0}, {1}, and {2}", "{0} and {1} and {2}", "{0}; {1}; {2}"]}
PREFIXES = ["", "", "", "", "a video of ", "a clip showing "]
FILLERS = {"a", "an", "the", "and", "that", "is", "in", "while", "of", "video", "clip",
           "showing", ",", ";", ":", "."}
FILLERS |= {w for pair in TRAVEL_VERBS + OCCLUDER_VERBS for w in pair}


def tokenize(text: str) -> list:
    """Lower-case words and punctuation marks, the units of `vocabulary` (accents dropped: "rïght" is "right")."""
    plain = "".join(ch for ch in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(ch))
    return re.findall(r"[a-z]+|[^\sa-z]", plain)


def _words(table: dict, heldout: dict, key: str, phrasing: str) -> list:
    """Synonyms of key allowed by phrasing."""
    words = list(table.get(key, []))
    if phrasing in ("heldout", "any"):
        words += heldout.get(key, [])
    return words


def _pick(rng: np.random.Generator, options):
    """One element of a list, chosen by rng."""
    return options[rng.integers(len(options))]


def _motion_phrase(motion: str, form: int, rng: np.random.Generator) -> str:
    """A verb phrase for motion: form 0 gerund ("moving right"), 1 third person ("moves right")."""
    if motion in spec.DIRECTIONS:
        return f"{_pick(rng, TRAVEL_VERBS)[form]} {_pick(rng, DIRECTION_WORDS[motion])}"
    i = rng.integers(len(MOTION_PHRASES[motion][0]))
    return MOTION_PHRASES[motion][form][i]


def _occluder_phrase(form: int, rng: np.random.Generator) -> str:
    """ "passing behind a grey bar" (form 0) or "passes behind a grey bar" (form 1), and variants."""
    verb = _pick(rng, OCCLUDER_VERBS)
    phrase = f"{verb[form]} behind a {_pick(rng, OCCLUDER_NOUNS)}"
    if verb[0] == "disappearing":
        return phrase + " " + REAPPEARS[form]
    if rng.random() < 0.4:
        phrase += " " + OCCLUDER_EXITS[form]
    return phrase


def _article(next_word: str) -> str:
    """ "an" before a vowel sound, else "a"."""
    return "an" if next_word[:1] in "aeiou" else "a"


def object_phrase(obj: ObjectLabel, template: str, rng: np.random.Generator, phrasing: str = "train",
                  mention_size: bool = False) -> str:
    """The phrase naming one object with one template."""
    size = ""
    if mention_size and obj.size:
        size = _pick(rng, SIZE_WORDS[obj.size]) + " "
    fields = {
        "size": size,
        "colour": _pick(rng, _words(COLOUR_WORDS, HELDOUT_COLOUR_WORDS, obj.colour, phrasing)),
        "shape": _pick(rng, _words(SHAPE_WORDS, HELDOUT_SHAPE_WORDS, obj.shape, phrasing)),
        "mg": _motion_phrase(obj.motion, 0, rng),
        "m3": _motion_phrase(obj.motion, 1, rng),
        "og": "", "o3": "",
    }
    if obj.occluded:
        sep = ", " if rng.random() < 0.5 else " "
        fields["og"] = sep + _occluder_phrase(0, rng)
        fields["o3"] = sep + _occluder_phrase(1, rng)
    text = TEMPLATES[template].format(a="{a}", **fields)
    while "{a}" in text:
        after = text.split("{a}", 1)[1].split()
        text = text.replace("{a}", _article(after[0] if after else ""), 1)
    return text


def _background_phrase(background: str, rng: np.random.Generator) -> tuple:
    """(phrase, position): e.g. ("on a dark background", "end")."""
    word = _pick(rng, BACKGROUND_WORDS[background])
    noun = _pick(rng, BACKGROUND_NOUNS)
    style = rng.integers(3)
    if style == 2:
        return f"{word} {noun}", "comma"
    prep = _pick(rng, BACKGROUND_PREPS)
    return f"{prep} {_article(word)} {word} {noun}", ("end" if style == 0 else "start")


def _check_phrasing(phrasing: str) -> None:
    """Raise ValueError for an unknown phrasing."""
    if phrasing not in PHRASINGS:
        raise ValueError(f"phrasing must be one of {', '.join(PHRASINGS)}; got {phrasing!r}")


def _check_caption_labels(labels: Labels) -> None:
    """Raise, naming the field and its allowed values, for labels a caption cannot be written of: 1 to
    `spec.MAX_OBJECTS` objects, each with a known shape, colour and motion (all three required) and a known size
    or none; a known background or none. Unlike `spec.check_labels` a scene that cannot be rendered (a spinning
    circle, a white object on a light background) can be written: a caption can be wrong about a clip."""
    if not isinstance(labels, Labels):
        raise TypeError(f"labels must be a sora_nb.world.Labels, got {type(labels).__name__}")
    objs = labels.objects
    if not isinstance(objs, (list, tuple)) or not 1 <= len(objs) <= spec.MAX_OBJECTS:
        got = len(objs) if isinstance(objs, (list, tuple)) else type(objs).__name__
        raise ValueError(f"labels.objects must hold 1 to {spec.MAX_OBJECTS} objects, got {got}")
    fields = (("shape", spec.SHAPES, False), ("colour", spec.COLOURS, False), ("motion", spec.MOTIONS, False),
              ("size", spec.SIZES, True))
    for i, obj in enumerate(objs):
        if not isinstance(obj, ObjectLabel):
            raise TypeError(f"labels.objects[{i}] must be a sora_nb.world.ObjectLabel, got {type(obj).__name__}")
        for name, allowed, optional in fields:
            value = getattr(obj, name)
            if value is None and not optional:
                raise ValueError(f"caption() needs the shape, colour and motion of every object: labels.objects[{i}]."
                                 f"{name} is None; it must be one of {', '.join(allowed)}")
            if value is not None and value not in allowed:
                raise ValueError(f"labels.objects[{i}].{name} must be one of {', '.join(allowed)}"
                                 f"{' or None' if optional else ''}; got {value!r}")
    if labels.background is not None and labels.background not in spec.BACKGROUNDS:
        raise ValueError(f"labels.background must be one of {', '.join(spec.BACKGROUNDS)} or None; "
                         f"got {labels.background!r}")


def caption_with_templates(labels: Labels, rng: Union[np.random.Generator, int, None] = 0, phrasing: str = "train",
                           template: Optional[str] = None, mention_size: Optional[bool] = None,
                           mention_background: Optional[bool] = None) -> tuple:
    """Like `caption`, and also return the template name used for each object."""
    _check_phrasing(phrasing)
    _check_caption_labels(labels)
    if not isinstance(rng, np.random.Generator):
        if rng is not None and (isinstance(rng, bool) or not isinstance(rng, (int, np.integer)) or rng < 0):
            raise ValueError(f"rng must be a numpy Generator, a seed (an int >= 0) or None, got {rng!r}")
        rng = np.random.default_rng(rng)
    if template is not None and template not in TEMPLATES:
        raise ValueError(f"template must be one of {', '.join(TEMPLATES)}; got {template!r}")
    pool = {"train": TRAIN_TEMPLATES, "heldout": HELDOUT_TEMPLATES, "any": tuple(TEMPLATES)}[phrasing]
    if mention_size is None:
        mention_size = bool(rng.random() < 0.4)
    if mention_background is None:
        mention_background = bool(rng.random() < 0.7)
    names, phrases = [], []
    for obj in labels.objects:
        name = template or _pick(rng, pool)
        names.append(name)
        phrases.append(object_phrase(obj, name, rng, phrasing, mention_size))
    n = len(phrases)
    text = phrases[0] if n == 1 else _pick(rng, JOINERS[n]).format(*phrases)
    if mention_background and labels.background is not None:
        bg, where = _background_phrase(labels.background, rng)
        text = {"end": f"{text} {bg}", "start": f"{bg}, {text}", "comma": f"{text}, {bg}"}[where]
    prefix = _pick(rng, PREFIXES)
    if prefix and not text.startswith(("a ", "an ")):
        prefix = ""
    return prefix + text, tuple(names)


def caption(labels: Labels, rng: Union[np.random.Generator, int, None] = 0, phrasing: str = "train",
            template: Optional[str] = None, mention_size: Optional[bool] = None,
            mention_background: Optional[bool] = None) -> str:
    """A caption for labels in one of many phrasings, chosen by rng (a Generator or a seed).

    phrasing: "train" (training templates and words), "heldout" (only held-out templates, and
    held-out synonyms may appear) or "any". template forces one object template for all objects.
    Size and background are mentioned at random unless mention_size / mention_background say.
    Labels need 1 to 3 objects, each with a shape, colour and motion of the world's (`spec.SHAPES`, `spec.COLOURS`,
    `spec.MOTIONS`) and a size of `spec.SIZES` or None, and a background of `spec.BACKGROUNDS` or None; anything
    else is refused by name (ValueError). A scene the world cannot draw (a spinning circle) can be captioned.
    """
    return caption_with_templates(labels, rng, phrasing, template, mention_size, mention_background)[0]


# ---------------------------------------------------------------------------------------------
# Parsing


def _lexicon() -> dict:
    """Phrase (tuple of tokens) -> (kind, value) for every content phrase of the language."""
    lex = {}

    def add(text, kind, value):
        """Record one phrase."""
        lex[tuple(tokenize(text))] = (kind, value)

    for table in (COLOUR_WORDS, HELDOUT_COLOUR_WORDS):
        for c, words in table.items():
            for w in words:
                add(w, "colour", c)
    for table in (SHAPE_WORDS, HELDOUT_SHAPE_WORDS):
        for s, words in table.items():
            for w in words:
                add(w, "shape", s)
    for s, words in SIZE_WORDS.items():
        for w in words:
            add(w, "size", s)
    for m, words in DIRECTION_WORDS.items():
        for w in words:
            add(w, "motion", m)
    for m, forms in MOTION_PHRASES.items():
        for w in forms[0] + forms[1]:
            add(w, "motion", m)
    for m in DIRECTION_WORDS:  # read, never written (captions keep their words): the motion's own name, and
        if "-" in m:           # plain words for it, so that what world.MOTIONS lists parses
            v, h = m.split("-")
            for w in (m, f"{v} {h}", f"to the {'top' if v == 'up' else 'bottom'} {h}"):
                add(w, "motion", m)
    for b, words in BACKGROUND_WORDS.items():
        for w, noun in itertools.product(words, BACKGROUND_NOUNS):
            add(f"{w} {noun}", "background", b)
            for art in ("a", "an", "the"):
                add(f"{art} {w} {noun}", "background", b)
                for prep in BACKGROUND_PREPS:
                    add(f"{prep} {art} {w} {noun}", "background", b)
    for noun in OCCLUDER_NOUNS + [n.split()[1] for n in OCCLUDER_NOUNS]:
        for art in ("a", "the"):
            base = f"behind {art} {noun}"
            add(base, "occluder", True)
            for ending in OCCLUDER_EXITS + REAPPEARS:
                add(f"{base} {ending}", "occluder", True)
    return lex


_LEXICON = _lexicon()
_MAX_PHRASE = max(len(k) for k in _LEXICON)
_SLOT_KIND = {"size": "size", "colour": "colour", "shape": "shape", "mg": "motion", "m3": "motion",
              "og": "occluder", "o3": "occluder"}


def _template_orders() -> set:
    """The orders of attribute kinds that templates produce (optional size/occluder on or off)."""
    orders = set()
    for t in TEMPLATES.values():
        kinds = [_SLOT_KIND[s] for s in re.findall(r"\{(\w+)\}", t) if s in _SLOT_KIND]
        for keep_size, keep_occ in itertools.product((True, False), repeat=2):
            orders.add(tuple(k for k in kinds if (keep_size or k != "size") and (keep_occ or k != "occluder")))
    return orders


_ORDERS = _template_orders()


# Fillers that join object phrases (`JOINERS`): "and", "while" and ";" end an object's phrase more surely than
# a comma, which also separates an apposition's colour ("a square, red, moving right")
_JOIN_STRENGTH = {"and": 2, "while": 2, ";": 2, ",": 1}


def _scan(tokens: list, caption_text: str) -> tuple[list, list]:
    """Content items [(kind, value)] of a caption, by longest phrase match, and for each the joiners
    (`_JOIN_STRENGTH`'s words) just before it, a set; fillers are skipped. The "and" right after "that is
    <colour>" is the "that_is" template's own ("a box that is blue and hopping"), not a joiner."""
    items, joins, i, join = [], [], 0, set()
    own_and = -1  # the token index of the "and" that would be the "that_is" template's own
    while i < len(tokens):
        for n in range(min(_MAX_PHRASE, len(tokens) - i), 0, -1):
            hit = _LEXICON.get(tuple(tokens[i:i + n]))
            if hit is not None:
                if hit[0] == "colour" and tokens[max(i - 2, 0):i] == ["that", "is"]:
                    own_and = i + n
                items.append(hit)
                joins.append(join)
                join = set()
                i += n
                break
        else:
            if tokens[i] in _JOIN_STRENGTH and not (tokens[i] == "and" and i == own_and):
                join.add(tokens[i])
            if tokens[i] not in FILLERS:
                raise ValueError(f"{_unknown(tokens[i])} in caption {caption_text!r}; the world's words are listed "
                                 "by sora_nb.world.vocabulary()")
            i += 1
    return items, joins


def _unknown(token: str) -> str:
    """What the parser says of a token no phrase takes where it stands: unknown, or a world word that is
    one only inside a longer phrase (e.g. "navy" in "navy blue")."""
    phrases = sorted((p for p in _LEXICON if token in p and len(p) > 1), key=len)
    if not phrases:
        return f"unknown word {token!r}"
    shown = ", ".join(repr(" ".join(p)) for p in phrases[:3])
    return f"the word {token!r} is the world's only inside a phrase (e.g. {shown}), not where it stands"


def _group_objects(items: list, caption_text: str, joins: list | None = None) -> list:
    """Split content items into one group per shape, preferring groups in template order, then (``joins``, the
    joiners before each item, `_scan`) groups that open with a motion only where a comma follows it, as in the
    template that puts the motion first ("moving right, a red circle"), then cuts at a joiner. In "a red circle
    moving right and a blue square" both "a red circle | moving right and a blue square" and "a red circle
    moving right | a blue square" are template orders; the punctuation says which is meant."""
    joins = joins or [set()] * len(items)
    shapes = [i for i, (kind, _) in enumerate(items) if kind == "shape"]
    if not shapes:
        raise ValueError(f"caption {caption_text!r} names no shape; shapes are {', '.join(spec.SHAPES)}")
    if len(shapes) > spec.MAX_OBJECTS:
        raise ValueError(f"caption {caption_text!r} names {len(shapes)} objects; at most {spec.MAX_OBJECTS}")
    # Cut between consecutive shapes: cut k lies in (shapes[k], shapes[k+1]].
    ranges = [range(shapes[k] + 1, shapes[k + 1] + 1) for k in range(len(shapes) - 1)]
    best, best_key = None, None
    for cuts in itertools.product(*ranges):
        bounds = (0,) + cuts + (len(items),)
        groups = [items[bounds[k]:bounds[k + 1]] for k in range(len(shapes))]
        kinds = [[k for k, _ in g] for g in groups]
        if any(len(set(k)) != len(k) for k in kinds):
            continue  # an attribute twice in one object
        bounds_in = [b for b in bounds[:-1] if b + 1 < len(items)]
        unpunctuated = sum(items[b][0] == "motion" and "," not in joins[b + 1] for b in bounds_in)
        strength = sum(max((_JOIN_STRENGTH[w] for w in joins[c]), default=0) for c in cuts)
        key = (sum(tuple(k) in _ORDERS for k in kinds), -unpunctuated, strength)
        # on a tie the later cut wins: attributes between two shapes stay with the earlier object ("a box,
        # blue, hopping, a red circle": the box hops; the circle's motion is left open)
        if best_key is None or key >= best_key:
            best, best_key = groups, key
    if best is None:
        raise ValueError(f"caption {caption_text!r} gives some object two colours, motions or sizes")
    return best


def parse(caption_text: str) -> Labels:
    """Labels named by a caption (the inverse of `caption`); attributes it leaves open are None.

    Raises ValueError, naming the problem, for captions outside the world's language.
    """
    if not isinstance(caption_text, str):
        raise TypeError(f"caption must be a str, got {type(caption_text).__name__}")
    items, joins = _scan(tokenize(caption_text), caption_text)
    backgrounds = [v for k, v in items if k == "background"]
    if len(backgrounds) > 1:
        raise ValueError(f"caption {caption_text!r} names more than one background")
    objects = []
    kept = [j for j, (kind, _) in enumerate(items) if kind != "background"]
    for group in _group_objects([items[j] for j in kept], caption_text, [joins[j] for j in kept]):
        attrs = dict(group)
        objects.append(ObjectLabel(
            shape=attrs["shape"], colour=attrs.get("colour"), motion=attrs.get("motion"),
            size=attrs.get("size"), occluded=bool(attrs.get("occluder", False)),
        ))
    return Labels(objects, backgrounds[0] if backgrounds else None, any(o.occluded for o in objects))


def vocabulary() -> list:
    """Every token any caption can contain (lower-case words and punctuation), sorted."""
    words = set(FILLERS)
    for phrase in _LEXICON:
        words.update(phrase)
    for t in TEMPLATES.values():
        words.update(tokenize(re.sub(r"\{\w+\}", " ", t)))
    for js in JOINERS.values():
        for j in js:
            words.update(tokenize(re.sub(r"\{\w+\}", " ", j)))
    for p in PREFIXES:
        words.update(tokenize(p))
    return sorted(words)
