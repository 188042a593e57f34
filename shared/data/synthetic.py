"""A procedural video benchmark with a paraphrase knob: the embedded default's data.

Each clip shows one coloured shape doing one action on a noisy background. Its *meaning* is the
triple (colour, shape, action): 3 x 4 x 12 = 144 classes, the classification labels. Captions
describe that meaning in words drawn from a small grammar whose surface variability is set by
``paraphrase`` (0 = the single canonical phrasing; 4 = synonyms, colour words, several sentence
templates). Scenes and captions use separate random streams, so the knob changes the words and
never the videos or labels. Everything is a pure function of (seed, split, index): nothing is
stored, frames are rendered at any requested times.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

GENERATOR_VERSION = "synthetic-v1"  # bump when rendering or captions change (invalidates caches)

COLOURS = {"red": (220, 50, 40), "green": (40, 190, 60), "blue": (50, 90, 230)}
SHAPES = ("circle", "square", "triangle", "cross")
ACTIONS = (
    "left", "right", "up", "down", "grow", "shrink",
    "spin", "appear", "disappear", "blink", "bounce", "recolour",
)

# Surface forms, canonical first. Verb phrases come as (third person, -ing form).
COLOUR_WORDS = {
    "red": ["red", "crimson", "scarlet"],
    "green": ["green", "emerald", "lime"],
    "blue": ["blue", "azure", "navy"],
}
SHAPE_WORDS = {
    "circle": ["circle", "disc", "ball", "round shape", "dot"],
    "square": ["square", "box", "block", "tile", "cube"],
    "triangle": ["triangle", "wedge", "pyramid", "three-sided shape", "arrowhead"],
    "cross": ["cross", "plus sign", "plus", "cross shape", "pair of crossed bars"],
}
ACTION_WORDS = {
    "left": [("moves left", "moving left"), ("slides to the left", "sliding to the left"),
             ("drifts leftward", "drifting leftward"), ("travels left", "travelling left"),
             ("heads to the left", "heading to the left")],
    "right": [("moves right", "moving right"), ("slides to the right", "sliding to the right"),
              ("drifts rightward", "drifting rightward"), ("travels right", "travelling right"),
              ("heads to the right", "heading to the right")],
    "up": [("moves up", "moving up"), ("rises", "rising"), ("floats upward", "floating upward"),
           ("climbs", "climbing"), ("goes up", "going up")],
    "down": [("moves down", "moving down"), ("falls", "falling"), ("sinks", "sinking"),
             ("drops", "dropping"), ("goes down", "going down")],
    "grow": [("grows", "growing"), ("gets bigger", "getting bigger"), ("expands", "expanding"),
             ("swells", "swelling"), ("becomes larger", "becoming larger")],
    "shrink": [("shrinks", "shrinking"), ("gets smaller", "getting smaller"), ("contracts", "contracting"),
               ("dwindles", "dwindling"), ("becomes smaller", "becoming smaller")],
    "spin": [("spins", "spinning"), ("rotates", "rotating"), ("turns around", "turning around"),
             ("twirls", "twirling"), ("revolves", "revolving")],
    "appear": [("appears", "appearing"), ("fades in", "fading in"), ("shows up", "showing up"),
               ("emerges", "emerging"), ("materialises", "materialising")],
    "disappear": [("disappears", "disappearing"), ("fades out", "fading out"), ("vanishes", "vanishing"),
                  ("fades away", "fading away"), ("dissolves", "dissolving")],
    "blink": [("blinks", "blinking"), ("flashes", "flashing"), ("flickers", "flickering"),
              ("flashes on and off", "flashing on and off"), ("twinkles", "twinkling")],
    "bounce": [("bounces", "bouncing"), ("hops", "hopping"), ("jumps up and down", "jumping up and down"),
               ("bobs", "bobbing"), ("leaps", "leaping")],
    "recolour": [("changes colour", "changing colour"), ("switches colour", "switching colour"),
                 ("turns another colour", "turning another colour"), ("changes its colour", "changing its colour"),
                 ("takes a new colour", "taking a new colour")],
}
# Sentence templates over {c} colour, {s} shape, {v} verb (third person), {g} verb (-ing).
TEMPLATES = [
    "a {c} {s} {v}",
    "the {c} {s} {v}",
    "a {c} {s} is {g}",
    "there is a {c} {s} that {v}",
    "we see a {c} {s} {g}",
    "a {s} , {c} in colour , {v}",
    "in this clip a {c} {s} {v}",
    "{g} , a {c} {s}",
]
# How many options of each kind each paraphrase level admits.
LEVELS = {
    0: dict(colour=1, shape=1, action=1, template=1),
    1: dict(colour=1, shape=2, action=2, template=2),
    2: dict(colour=1, shape=3, action=3, template=4),
    3: dict(colour=2, shape=4, action=4, template=6),
    4: dict(colour=3, shape=5, action=5, template=8),
}



@dataclass(frozen=True)
class Meaning:
    colour: str
    shape: str
    action: str

    @property
    def label(self) -> int:
        c = list(COLOURS).index(self.colour)
        return (c * len(SHAPES) + SHAPES.index(self.shape)) * len(ACTIONS) + ACTIONS.index(self.action)

    @staticmethod
    def from_label(label: int) -> "Meaning":
        rest, a = divmod(label, len(ACTIONS))
        c, s = divmod(rest, len(SHAPES))
        return Meaning(list(COLOURS)[c], SHAPES[s], ACTIONS[a])


NUM_CLASSES = len(COLOURS) * len(SHAPES) * len(ACTIONS)


def canonical_caption(m: Meaning) -> str:
    """The level-0 phrasing; also the class's label text for classification."""
    return describe(m, np.random.default_rng(0), level=0)


def class_texts() -> list[str]:
    return [canonical_caption(Meaning.from_label(i)) for i in range(NUM_CLASSES)]


def forms(k: int, level: int) -> list[tuple[int, int, int, int]]:
    """Up to ``k`` sentence forms at a paraphrase level, the same for every label: (colour word,
    shape word, verb phrase, template) positions, the canonical (0, 0, 0, 0) first, the others drawn
    once by a fixed stream. Every word list of a kind has the same length, so a position names a
    synonym for any meaning, and no label gets an easier or more fluent wording than another."""
    lim = LEVELS[level]
    sizes = (lim["colour"], lim["shape"], lim["action"], lim["template"])
    out = [(0, 0, 0, 0)]
    rng = np.random.default_rng(0x5EED)
    for _ in range(50 * k):
        if len(out) >= min(k, int(np.prod(sizes))):
            break
        form = tuple(int(rng.integers(n)) for n in sizes)
        if form not in out:
            out.append(form)
    return out


def phrase(m: Meaning, form: tuple[int, int, int, int]) -> str:
    c, s, a, t = form
    v, g = ACTION_WORDS[m.action][a]
    text = TEMPLATES[t].format(c=COLOUR_WORDS[m.colour][c], s=SHAPE_WORDS[m.shape][s], v=v, g=g)
    return re.sub(r"\ba ([aeiou])", r"an \1", text)


def phrasings(label: int, k: int, level: int) -> list[str]:
    """Up to ``k`` phrasings of a class at a paraphrase level, one per form of ``forms`` (the
    canonical text first): every label is worded in the same K sentence shapes."""
    m = Meaning.from_label(label)
    return [phrase(m, f) for f in forms(k, level)]


def describe(m: Meaning, rng: np.random.Generator, level: int) -> str:
    lim = LEVELS[level]
    colour, shape, action = rng.integers(lim["colour"]), rng.integers(lim["shape"]), rng.integers(lim["action"])
    return phrase(m, (int(colour), int(shape), int(action), int(rng.integers(lim["template"]))))


@dataclass(frozen=True)
class Scene:
    """Everything needed to render a clip at any time t in [0, 1]."""

    meaning: Meaning
    background: tuple[int, int, int]
    x0: float
    y0: float
    size: float
    travel: float  # distance for moves, growth factor for size changes
    spin_dir: float
    blink_period: float
    bounce_freq: float
    new_colour: str
    noise: float
    noise_seed: int


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def sample_scene(rng: np.random.Generator, meaning: Meaning) -> Scene:
    others = [c for c in COLOURS if c != meaning.colour]
    return Scene(
        meaning=meaning,
        background=tuple(int(v) for v in rng.integers(10, 70, size=3)),
        x0=float(rng.uniform(0.35, 0.65)),
        y0=float(rng.uniform(0.35, 0.65)),
        size=float(rng.uniform(0.13, 0.2)),
        travel=float(rng.uniform(0.3, 0.45)),
        spin_dir=float(rng.choice([-1.0, 1.0])),
        blink_period=float(rng.uniform(0.2, 0.35)),
        bounce_freq=float(rng.uniform(1.5, 2.5)),
        new_colour=str(rng.choice(others)),
        noise=float(rng.uniform(4, 12)),
        noise_seed=int(rng.integers(2**31)),
    )


def _state(sc: Scene, t: float) -> tuple[float, float, float, float, float, str]:
    """(cx, cy, half-size, angle, alpha, colour) of the shape at time t in [0, 1]."""
    a = sc.meaning.action
    cx, cy, s, ang, alpha, col = sc.x0, sc.y0, sc.size, 0.0, 1.0, sc.meaning.colour
    d = sc.travel * (t - 0.5)
    if a == "left":
        cx = sc.x0 - d
    elif a == "right":
        cx = sc.x0 + d
    elif a == "up":
        cy = sc.y0 - d
    elif a == "down":
        cy = sc.y0 + d
    elif a == "grow":
        s = sc.size * (0.45 + 1.1 * t)
    elif a == "shrink":
        s = sc.size * (1.55 - 1.1 * t)
    elif a == "spin":
        ang = sc.spin_dir * np.pi * 1.5 * t
    elif a == "appear":
        alpha = min(1.0, 1.5 * t)
    elif a == "disappear":
        alpha = max(0.0, 1.0 - 1.5 * t)
    elif a == "blink":
        alpha = 1.0 if int(t / (sc.blink_period / 2)) % 2 == 0 else 0.0
    elif a == "bounce":
        cy = sc.y0 + 0.12 - 0.3 * abs(np.sin(np.pi * sc.bounce_freq * t))
    elif a == "recolour":
        col = sc.meaning.colour if t < 0.5 else sc.new_colour
    return cx, cy, s, ang, alpha, col


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray, s: float) -> np.ndarray:
    """Coverage of the shape in shape-local coordinates (u, v), half-size s."""
    if shape == "circle":
        # a notch keeps rotation visible for circles too
        return (u**2 + v**2 <= s**2) & ~((u > 0.55 * s) & (np.abs(v) < 0.18 * s))
    if shape == "square":
        return (np.abs(u) <= 0.85 * s) & (np.abs(v) <= 0.85 * s)
    if shape == "triangle":
        return (v <= 0.8 * s) & (v >= -s + 2 * np.abs(u) * 1.0) & (np.abs(u) <= s)
    if shape == "cross":
        w = 0.33 * s
        return ((np.abs(u) <= w) & (np.abs(v) <= s)) | ((np.abs(v) <= w) & (np.abs(u) <= s))
    raise ValueError(shape)


def render(sc: Scene, times: np.ndarray, size: int) -> np.ndarray:
    """Frames at the given times in [0, 1] as uint8 [T, size, size, 3]."""
    grid = (np.arange(size) + 0.5) / size
    xx, yy = np.meshgrid(grid, grid)
    noise_rng = np.random.default_rng(sc.noise_seed)
    frames = np.empty((len(times), size, size, 3), dtype=np.uint8)
    bg = np.array(sc.background, dtype=np.float32)
    for i, t in enumerate(times):
        cx, cy, s, ang, alpha, col = _state(sc, float(t))
        dx, dy = xx - cx, yy - cy
        c, si = np.cos(ang), np.sin(ang)
        mask = _shape_mask(sc.meaning.shape, c * dx + si * dy, -si * dx + c * dy, s).astype(np.float32) * alpha
        img = bg + mask[..., None] * (np.array(COLOURS[col], np.float32) - bg)
        img += noise_rng.normal(0, sc.noise, size=img.shape).astype(np.float32)
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


@dataclass(frozen=True)
class SyntheticClip:
    split: str
    index: int
    scene: Scene
    captions: tuple[str, ...]


def scene_label(seed: int, split: str, index: int) -> int:
    """The class of clip ``index`` without building its scene (the scene stream's first draw)."""
    return int(_rng(GENERATOR_VERSION, seed, split, index, "scene").integers(NUM_CLASSES))


@lru_cache(maxsize=16384)  # a training run revisits its clips every epoch; bounded, so 200k clips stay cheap
def make_clip(seed: int, split: str, index: int, paraphrase: int, n_captions: int) -> SyntheticClip:
    scene_rng = _rng(GENERATOR_VERSION, seed, split, index, "scene")
    meaning = Meaning.from_label(int(scene_rng.integers(NUM_CLASSES)))
    scene = sample_scene(scene_rng, meaning)
    cap_rng = _rng(GENERATOR_VERSION, seed, split, index, "captions")
    captions = tuple(describe(meaning, cap_rng, paraphrase) for _ in range(n_captions))
    return SyntheticClip(split, index, scene, captions)


# ---------------------------------------------------------------------------------------------
# Long streams of consecutive events (for selective decoding)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamEvent:
    start: float  # seconds
    duration: float
    scene: Scene
    caption: str


@dataclass(frozen=True)
class SyntheticStream:
    index: int
    events: tuple[StreamEvent, ...]

    @property
    def duration(self) -> float:
        last = self.events[-1]
        return last.start + last.duration

    def render(self, times_s: np.ndarray, size: int) -> np.ndarray:
        frames = np.empty((len(times_s), size, size, 3), dtype=np.uint8)
        starts = np.array([e.start for e in self.events])
        for i, ts in enumerate(times_s):
            k = max(0, int(np.searchsorted(starts, ts, side="right")) - 1)
            ev = self.events[k]
            t = float(np.clip((ts - ev.start) / ev.duration, 0, 1))
            frames[i] = render(ev.scene, np.array([t]), size)[0]
        return frames


def make_stream(seed: int, index: int, n_events: int, paraphrase: int) -> SyntheticStream:
    rng = _rng(GENERATOR_VERSION, seed, "stream", index)
    events, t = [], 0.0
    for k in range(n_events):
        meaning = Meaning.from_label(int(rng.integers(NUM_CLASSES)))
        duration = float(rng.uniform(2.0, 6.0))
        caption = describe(meaning, _rng(GENERATOR_VERSION, seed, "stream", index, k, "caption"), paraphrase)
        events.append(StreamEvent(t, duration, sample_scene(rng, meaning), caption))
        t += duration
    return SyntheticStream(index, tuple(events))
