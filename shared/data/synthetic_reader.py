"""Reads a caption back into the synthetic benchmark's meaning (colour, shape, action).

The benchmark's captions come from a known grammar (``shared.data.synthetic``), so a caption's
meaning can be read back from its words: the colour word, the shape phrase and the verb phrase.
That gives captioning a second score beside CIDEr, *meaning accuracy*: is what the caption says
the clip's meaning? (CIDEr rewards the template's words: a caption that gets only the colour right
already earns much of the ceiling.)

Rules of ``read_meaning``:

- Normalisation: lower case; every character other than a letter or digit is a space (so spacing,
  punctuation and hyphens do not matter: "three-sided", "three sided" and "Three-Sided." read
  alike); a few spelling variants are mapped to the grammar's ("color" -> "colour", "disk" ->
  "disc", "traveling" -> "travelling", "-izes"/"-izing" -> "-ises"/"-ising").
- Matching: the normalised words are scanned left to right; at each position the longest phrase
  of the grammar starting there is taken ("plus sign" before "plus", "flashes on and off" before
  "flashes", "turns another colour" (recolour) and "turns around" (spin) by their second word), and
  its words are consumed, so no word counts for two phrases. Any surface form of any paraphrase
  level, in its third-person or -ing form, counts, whatever the template around it.
- Bare directions: a direction word outside any phrase ("left", "leftward", "up", "upward", ...)
  reads as that motion ("a red circle to the left"), beside any verb phrase. Words inside a verb
  phrase are consumed by it ("jumps up and down" is bounce, not up or down).
- Ambiguity: an attribute named with two different values ("a red and blue circle", "moves left
  and falls", "falls up") reads as None (not credited); the same value named twice is that value
  ("rises up"). An
  attribute not named at all reads as None. So an exact meaning needs all three named, once each
  (or consistently).
"""
from __future__ import annotations

import re
from dataclasses import astuple
from functools import lru_cache
from typing import NamedTuple

from shared.data.synthetic import ACTION_WORDS, COLOUR_WORDS, SHAPE_WORDS, Meaning, canonical_caption


class Reading(NamedTuple):
    colour: str | None
    shape: str | None
    action: str | None

    def meaning(self) -> Meaning | None:
        """The full meaning, or None where an attribute was not read."""
        return Meaning(*self) if None not in self else None


ATTRIBUTES = Reading._fields

_SPELLING = {"color": "colour", "colours": "colour", "colors": "colour", "disk": "disc",
             "traveling": "travelling", "traveled": "travelled"}
_NON_WORD = re.compile(r"[^a-z0-9]+")
_IZE = re.compile(r"(?<=[a-z]{3})iz(es|ing|ed|e)\b")


def normalise(text: str) -> list[str]:
    """The caption's words: lower case, punctuation and hyphens as spaces, spelling variants mapped."""
    text = _IZE.sub(r"is\1", _NON_WORD.sub(" ", text.lower()))
    return [_SPELLING.get(w, w) for w in text.split()]


def _lexicon() -> dict[str, list[tuple[tuple[str, ...], int, str]]]:
    """First word -> [(phrase words, attribute position, value)], longest phrase first."""
    entries: set[tuple[tuple[str, ...], int, str]] = set()
    for value, words in COLOUR_WORDS.items():
        entries.update((tuple(normalise(w)), 0, value) for w in words)
    for value, words in SHAPE_WORDS.items():
        entries.update((tuple(normalise(w)), 1, value) for w in words)
    for value, pairs in ACTION_WORDS.items():
        entries.update((tuple(normalise(w)), 2, value) for pair in pairs for w in pair)
    seen: dict[tuple[str, ...], tuple[int, str]] = {}
    for words, attr, value in entries:
        if seen.setdefault(words, (attr, value)) != (attr, value):
            raise ValueError(f"the grammar's phrase {' '.join(words)!r} names two meanings")
    out: dict[str, list] = {}
    for words, attr, value in entries:
        out.setdefault(words[0], []).append((words, attr, value))
    for options in out.values():
        options.sort(key=lambda e: -len(e[0]))
    return out


_LEXICON = _lexicon()
# motion words that, alone, still say which way
_DIRECTIONS = {"left": "left", "leftward": "left", "leftwards": "left", "right": "right", "rightward": "right",
               "rightwards": "right", "up": "up", "upward": "up", "upwards": "up", "down": "down",
               "downward": "down", "downwards": "down"}


@lru_cache(maxsize=65536)  # model outputs repeat: a caption is read once
def read_meaning(text: str) -> Reading:
    """(colour, shape, action) a caption names, each None where it names none or two (module doc)."""
    words = normalise(text)
    found: list[set[str]] = [set(), set(), set()]
    i = 0
    while i < len(words):
        for phrase, attr, value in _LEXICON.get(words[i], ()):
            if tuple(words[i:i + len(phrase)]) == phrase:
                found[attr].add(value)
                i += len(phrase)
                break
        else:
            if words[i] in _DIRECTIONS:
                found[2].add(_DIRECTIONS[words[i]])
            i += 1
    return Reading(*(next(iter(v)) if len(v) == 1 else None for v in found))


class SyntheticCaptionReader:
    """The hook through which arm- and data-agnostic evaluation scores meaning accuracy: a source
    whose captions can be read (``ClipSource.caption_reader``) hands evaluation one of these."""

    attributes = ATTRIBUTES

    @staticmethod
    def read(text: str) -> tuple[str | None, ...]:
        return tuple(read_meaning(text))

    @staticmethod
    def truth(label: int) -> tuple[str, ...]:
        """A clip's meaning from its label."""
        return astuple(Meaning.from_label(int(label)))

    @staticmethod
    def caption(meaning: tuple[str, ...]) -> str:
        """The canonical (paraphrase level 0) phrasing of a meaning: for template reference points."""
        return canonical_caption(Meaning(*meaning))


READER = SyntheticCaptionReader()
