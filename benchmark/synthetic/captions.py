"""Free-text captions of a scene, complete or web-alt-text noisy."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .scene import Scene
from .vocabulary import Vocabulary

NAMED_STUFF_FRACTION = 0.1


@dataclass(frozen=True)
class CaptionStyle:
    """Probabilities that shape one caption."""

    colour: float
    wrong_colour: float
    stuff_all: float
    stuff_largest: float
    stuff_each: float
    distractor: float
    prefix: float
    suffix: float
    filler: float


COMPLETE = CaptionStyle(
    colour=0.25,
    wrong_colour=0.0,
    stuff_all=0.8,
    stuff_largest=0.12,
    stuff_each=0.0,
    distractor=0.0,
    prefix=0.08,
    suffix=0.08,
    filler=0.1,
)
NOISY = CaptionStyle(
    colour=0.5,
    wrong_colour=0.25,
    stuff_all=0.0,
    stuff_largest=0.0,
    stuff_each=0.5,
    distractor=0.3,
    prefix=0.4,
    suffix=0.4,
    filler=0.3,
)


def _pick(rng: np.random.Generator, options: tuple[str, ...], first: float = 0.0) -> str:
    """A random option; the first one with extra probability ``first``."""
    if rng.random() < first:
        return options[0]
    return options[int(rng.integers(len(options)))]


def _with_article(rng: np.random.Generator, vocab: Vocabulary, phrase: str) -> str:
    roll = rng.random()
    if roll < 0.1:
        return phrase
    article = _pick(rng, vocab.captions.articles, first=0.7)
    if article == "a" and phrase[0] in "aeiou":
        article = "an"
    return f"{article} {phrase}"


def _join(rng: np.random.Generator, vocab: Vocabulary, phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    conjunction = _pick(rng, vocab.captions.conjunctions, first=0.7)
    return f"{', '.join(phrases[:-1])} {conjunction} {phrases[-1]}"


def _thing_phrase(
    rng: np.random.Generator, vocab: Vocabulary, class_id: int, colour: int | None, style: CaptionStyle
) -> str:
    name = _pick(rng, vocab.entry(class_id).synonyms, first=0.8)
    if colour is None or rng.random() >= style.colour:
        return _with_article(rng, vocab, name)
    if rng.random() < style.wrong_colour:
        colour = int(rng.integers(len(vocab.colours)))
    word = _pick(rng, vocab.colours[colour].words, first=0.6)
    return _with_article(rng, vocab, f"{word} {name}")


def _stuff_phrase(rng: np.random.Generator, vocab: Vocabulary, class_id: int) -> str:
    name = _pick(rng, vocab.entry(class_id).synonyms, first=0.5)
    return f"the {name}" if rng.random() < 0.3 else name


def _named_stuff(rng: np.random.Generator, scene: Scene, style: CaptionStyle) -> list[int]:
    total = scene.label.size
    large = [s for s in sorted(scene.stuff, key=lambda s: -s.pixels) if s.pixels >= NAMED_STUFF_FRACTION * total]
    roll = rng.random()
    if roll < style.stuff_all:
        return [s.class_id for s in large]
    if roll < style.stuff_all + style.stuff_largest:
        return [s.class_id for s in large[:1]]
    return [s.class_id for s in large if rng.random() < style.stuff_each]


def _named_things(rng: np.random.Generator, scene: Scene, complete: bool) -> list[tuple[int, int | None]]:
    things = [(t.class_id, t.colour) for t in scene.things]
    if rng.random() < 0.5:
        things = [things[i] for i in rng.permutation(len(things))]
    if not complete:
        keep = int(rng.integers(len(things)))
        things = [things[i] for i in sorted(rng.choice(len(things), size=keep, replace=False))]
    return things


def _add_distractor(
    rng: np.random.Generator, vocab: Vocabulary, scene: Scene, things: list[tuple[int, int | None]], stuff: list[int]
) -> None:
    present = {int(c) for c in np.unique(scene.label)}
    absent = [c for c in range(len(vocab.classes)) if c not in present]
    if not absent:
        return
    class_id = absent[int(rng.integers(len(absent)))]
    if vocab.is_thing(class_id):
        things.insert(int(rng.integers(len(things) + 1)), (class_id, int(rng.integers(len(vocab.colours)))))
    else:
        stuff.append(class_id)


def _decorate(rng: np.random.Generator, vocab: Vocabulary, text: str, style: CaptionStyle) -> str:
    words = vocab.captions
    if rng.random() < style.filler:
        tokens = text.split(" ")
        tokens.insert(int(rng.integers(len(tokens) + 1)), _pick(rng, words.noise_words))
        text = " ".join(tokens)
    if rng.random() < style.prefix:
        text = f"{_pick(rng, words.noise_prefixes).replace('{n}', str(rng.integers(1000, 10000)))} {text}"
    if rng.random() < style.suffix:
        text = f"{text} {_pick(rng, words.noise_suffixes)}"
    text = " ".join(text.split())
    if rng.random() < 0.3:
        text = text[:1].upper() + text[1:]
    if rng.random() < 0.4:
        text += "."
    return text


def make_caption(rng: np.random.Generator, vocab: Vocabulary, scene: Scene, complete: bool) -> str:
    """A caption of ``scene``. Complete: every thing is named (stuff covering at least
    NAMED_STUFF_FRACTION of the image usually too). Otherwise at least one thing is left out,
    and colours may be wrong, an absent class may be named and filler is likelier."""
    style = COMPLETE if complete else NOISY
    things = _named_things(rng, scene, complete)
    stuff = _named_stuff(rng, scene, style)
    if rng.random() < style.distractor:
        _add_distractor(rng, vocab, scene, things, stuff)
    thing_text = _join(rng, vocab, [_thing_phrase(rng, vocab, c, col, style) for c, col in things]) if things else ""
    stuff_text = _join(rng, vocab, [_stuff_phrase(rng, vocab, c) for c in stuff]) if stuff else ""
    templates = vocab.captions
    if thing_text and stuff_text:
        text = _pick(rng, templates.with_stuff).format(things=thing_text, stuff=stuff_text)
    elif thing_text:
        text = _pick(rng, templates.things_only).format(things=thing_text)
    elif stuff_text:
        text = _pick(rng, templates.stuff_only).format(stuff=stuff_text)
    else:
        text = " ".join(_pick(rng, templates.noise_words) for _ in range(int(rng.integers(1, 4))))
    return _decorate(rng, vocab, text, style)


def names_in_caption(caption: str, vocab: Vocabulary) -> set[str]:
    """Canonical names of the classes a caption mentions by any synonym."""
    text = caption.lower()
    found = set()
    for entry in vocab.stuff + vocab.things:
        if any(re.search(rf"(?<![\w-]){re.escape(s)}(?![\w-])", text) for s in entry.synonyms):
            found.add(entry.name)
    return found
