"""The synthetic world's vocabulary, read from ``vocabulary.yaml``."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import yaml


@dataclass(frozen=True)
class ClassEntry:
    name: str
    synonyms: tuple[str, ...]
    drawer: str
    pattern: str | None = None  # things: the surface pattern of the kind (patterns.py)
    colour: str | None = None  # things: the colour most things of the kind have


@dataclass(frozen=True)
class Colour:
    name: str
    words: tuple[str, ...]
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class CaptionWords:
    with_stuff: tuple[str, ...]
    things_only: tuple[str, ...]
    stuff_only: tuple[str, ...]
    conjunctions: tuple[str, ...]
    articles: tuple[str, ...]
    noise_prefixes: tuple[str, ...]
    noise_suffixes: tuple[str, ...]
    noise_words: tuple[str, ...]


@dataclass(frozen=True)
class Vocabulary:
    stuff: tuple[ClassEntry, ...]
    things: tuple[ClassEntry, ...]
    colours: tuple[Colour, ...]
    captions: CaptionWords

    @property
    def classes(self) -> list[str]:
        """Canonical names in label-id order: stuff, then things."""
        return [c.name for c in self.stuff + self.things]

    @property
    def classes_bg(self) -> list[str]:
        """Canonical names of the background split: background, then things."""
        return ["background"] + [c.name for c in self.things]

    def entry(self, class_id: int) -> ClassEntry:
        return (self.stuff + self.things)[class_id]

    def is_thing(self, class_id: int) -> bool:
        return class_id >= len(self.stuff)


def _entries(raw: list[dict], drawer_key: str) -> tuple[ClassEntry, ...]:
    entries = []
    for item in raw:
        synonyms = tuple(item["synonyms"])
        if synonyms[0] != item["name"]:
            raise ValueError(f"vocabulary.yaml: first synonym of {item['name']!r} must be its name")
        entries.append(ClassEntry(item["name"], synonyms, item[drawer_key], item.get("pattern"), item.get("colour")))
    return tuple(entries)


def parse_vocabulary(raw: dict) -> Vocabulary:
    captions = raw["captions"]
    vocab = Vocabulary(
        stuff=_entries(raw["stuff"], "texture"),
        things=_entries(raw["things"], "shape"),
        colours=tuple(Colour(c["name"], tuple(c["words"]), tuple(c["rgb"])) for c in raw["colours"]),
        captions=CaptionWords(**{key: tuple(value) for key, value in captions.items()}),
    )
    colour_names = [c.name for c in vocab.colours]
    for thing in vocab.things:
        if not thing.pattern or thing.colour not in colour_names:
            raise ValueError(f"vocabulary.yaml: thing {thing.name!r} needs a `pattern` and a `colour` among "
                             f"{colour_names}, got {thing.pattern!r} and {thing.colour!r}")
    return vocab


@functools.cache
def load_vocabulary() -> Vocabulary:
    text = resources.files(__package__).joinpath("vocabulary.yaml").read_text(encoding="utf-8")
    return parse_vocabulary(yaml.safe_load(text))
