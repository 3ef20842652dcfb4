"""A generated, seeded story world with per-token ground truth, for interpretability.

A story is a short sequence of word-level sentences in which characters move between
places and pick up / drop objects, interleaved with distractor sentences that change
nothing, followed by questions about the *final* state of the world and their answers::

    mary went to the kitchen . john journeyed to the garden . john picked up the apple .
    mary thought about the garden . john moved to the office . john dropped the apple .
    where is mary ? kitchen . where is the apple ? office . <eos>

All text is lowercase; punctuation is a separate whitespace-delimited token; the story
ends with the word ``<eos>`` (which :class:`~pulse.data.tokenizers.WordTokenizer` maps to
its end-of-sequence id). ``story.tokens == story.text.split()``.

World rules
-----------
* A character's location is unknown (``None``) until its first move.
* A character can pick up an object that is not held by anyone and that is either
  not yet placed (never seen) or lying at the character's location. A held object's
  location is its holder's location (it travels with the holder).
* A character can drop only an object it holds; the object stays where it was dropped.
* Distractor sentences (``mary thought about the garden .``, ``mary looked at the apple .``,
  ``mary smiled .``, ``mary waved to john .``) change nothing; "thought about" always names
  a place where the character is *not*, so "the last place mentioned next to the name"
  is a wrong heuristic.

Ground truth and timing
-----------------------
An event takes effect at its *trigger* token, the token that completes it (the place in
a move, the object in a pick-up or drop). ``story.locations[i]`` is the world state after
reading tokens ``0..i`` inclusive: a dict ``entity -> place or None`` for every character
and object in the story's cast. ``story.holders[i]`` maps each object to its holder (or
``None``). Questions are asked only about entities whose location is known, and are
answered with the location at the end of the story (the last state), so a model must
remember each entity's latest location (and, for objects, who holds them and where the
holder went since).

Per-token annotations: ``entities[i]`` (name of the character/place/object the token names,
else ``None``), ``roles[i]`` (one of :data:`ROLES`), ``sentence_ids[i]`` (index of the
sentence or question the token belongs to; ``-1`` for ``<eos>``). ``answer_positions`` lists
the answer-token indices, aligned with ``questions`` (which record the entity asked about).
``story.token_table()`` returns all of it as a list of plain dicts.

Reproducibility: :func:`generate_dataset` derives story ``i``'s RNG from ``(seed, i)`` only,
so ``generate_dataset(10, cfg, s)[:5] == generate_dataset(5, cfg, s)``.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = [
    "CHARACTER_NAMES",
    "PLACE_NAMES",
    "OBJECT_NAMES",
    "ROLES",
    "StoryWorldConfig",
    "Event",
    "Question",
    "Story",
    "generate_story",
    "generate_dataset",
    "story_world_vocabulary",
    "max_story_length",
]

CHARACTER_NAMES: tuple[str, ...] = (
    "mary", "john", "sandra", "daniel", "fred", "bill", "julie", "emma", "lucas", "nora",
    "oliver", "zoe",
)
PLACE_NAMES: tuple[str, ...] = (
    "kitchen", "garden", "office", "hallway", "bedroom", "bathroom", "cellar", "attic",
    "garage", "library", "park", "school",
)
OBJECT_NAMES: tuple[str, ...] = (
    "apple", "football", "milk", "book", "key", "ball", "cup", "hat", "lamp", "pen",
)
ROLES: tuple[str, ...] = (
    "character", "place", "object", "verb", "function", "punct", "question", "separator",
    "answer", "eos",
)

EOS_WORD = "<eos>"

# Templates: lists of (word or slot, role). Slots: "{c}" actor, "{c2}" other character,
# "{p}" place, "{o}" object. The trigger is the slot that completes the event.
_MOVE_VERBS = ("went", "moved", "journeyed", "travelled")
_PICKUP = ((("picked", "verb"), ("up", "function")), (("grabbed", "verb"),), (("took", "verb"),))
_DROP = ((("dropped", "verb"),), (("put", "verb"), ("down", "function")), (("discarded", "verb"),))
_FUNCTION_WORDS = ("to", "the", "up", "down", "about", "at")
_DISTRACTOR_VERBS = ("thought", "looked", "smiled", "waved")
_QUESTION_WORDS = ("where", "is")
_PUNCT = (".", "?")
# The longest templates, in tokens: "c picked up the o ." = 6, "c went to the p ." = 6,
# "where is the o ? p ." = 7.
_MAX_SENTENCE_TOKENS = 6
_MAX_QUESTION_TOKENS = 7

_PROB_FIELDS = ("p_move", "p_pickup", "p_drop", "p_distractor")


@dataclass
class StoryWorldConfig:
    """Parameters of the story world.

    num_characters / num_places / num_objects: size of each name pool (the first N names
        of :data:`CHARACTER_NAMES` / :data:`PLACE_NAMES` / :data:`OBJECT_NAMES`); the
        vocabulary covers the whole pools.
    characters_per_story / objects_per_story: cast size of one story, drawn at random from
        the pools (``None`` = the whole pool). ``objects_per_story`` may be 0.
    min_sentences / max_sentences: number of story sentences (uniform, inclusive).
    questions_per_story: questions at the end (distinct entities while enough are known).
    p_move / p_pickup / p_drop / p_distractor: relative weights of sentence kinds (an
        infeasible kind, e.g. a drop when nobody holds anything, falls back to a move).
        The first sentence is always a move.
    p_object_question: probability that a question asks about an object (when possible).
    seed: default seed for :func:`generate_dataset`.
    """

    num_characters: int = 4
    num_places: int = 5
    num_objects: int = 3
    characters_per_story: int | None = None
    objects_per_story: int | None = None
    min_sentences: int = 6
    max_sentences: int = 12
    questions_per_story: int = 2
    p_move: float = 0.5
    p_pickup: float = 0.2
    p_drop: float = 0.15
    p_distractor: float = 0.15
    p_object_question: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        def _int(name: str, lo: int, hi: int | None = None) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"StoryWorldConfig.{name} must be an int, got {v!r}")
            if v < lo or (hi is not None and v > hi):
                rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
                raise ValueError(f"StoryWorldConfig.{name} must be in {rng}, got {v}")

        _int("num_characters", 1, len(CHARACTER_NAMES))
        _int("num_places", 2, len(PLACE_NAMES))
        _int("num_objects", 0, len(OBJECT_NAMES))
        if self.characters_per_story is not None:
            _int("characters_per_story", 1, self.num_characters)
        if self.objects_per_story is not None:
            _int("objects_per_story", 0, self.num_objects)
        _int("min_sentences", 1)
        _int("max_sentences", 1)
        if self.min_sentences > self.max_sentences:
            raise ValueError(
                f"StoryWorldConfig.min_sentences ({self.min_sentences}) must be <= "
                f"max_sentences ({self.max_sentences})"
            )
        _int("questions_per_story", 1)
        _int("seed", 0)
        for name in (*_PROB_FIELDS, "p_object_question"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"StoryWorldConfig.{name} must be a number in [0, 1], got {v!r}")
        if self.p_move <= 0.0:
            raise ValueError("StoryWorldConfig.p_move must be > 0 (moves are the fallback kind)")

    @property
    def cast_characters(self) -> int:
        return self.num_characters if self.characters_per_story is None else self.characters_per_story

    @property
    def cast_objects(self) -> int:
        return self.num_objects if self.objects_per_story is None else self.objects_per_story

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StoryWorldConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown StoryWorldConfig field(s): {unknown}; known: {sorted(known)}")
        return cls(**d)


@dataclass(frozen=True)
class Event:
    """One story sentence. ``kind`` in {'move','pickup','drop','distractor'}; ``target`` is
    the place (move), object (pickup/drop), or the mentioned entity (distractor; may be
    ``None``). ``span`` = [start, end) token indices; ``trigger_pos`` = token where the
    state change takes effect (``None`` for distractors)."""

    kind: str
    actor: str
    target: str | None
    span: tuple[int, int]
    trigger_pos: int | None


@dataclass(frozen=True)
class Question:
    """``where is <entity> ? <answer> .`` -- ``kind`` is 'character' or 'object'; ``span``
    covers the whole question including the answer and the final '.'."""

    entity: str
    kind: str
    answer: str
    answer_pos: int
    span: tuple[int, int]


@dataclass
class Story:
    """A story with per-token ground truth (all lists have ``len(tokens)`` entries)."""

    text: str
    tokens: list[str]
    entities: list[str | None]
    roles: list[str]
    sentence_ids: list[int]
    locations: list[dict[str, str | None]]
    holders: list[dict[str, str | None]]
    events: list[Event]
    questions: list[Question]
    characters: list[str]
    objects: list[str]
    places: list[str]

    @property
    def answer_positions(self) -> list[int]:
        """Indices of answer tokens, aligned with :attr:`questions`."""
        return [q.answer_pos for q in self.questions]

    @property
    def num_story_tokens(self) -> int:
        """Number of tokens before the first question."""
        return self.questions[0].span[0] if self.questions else len(self.tokens) - 1

    def __len__(self) -> int:
        return len(self.tokens)

    def token_table(self) -> list[dict[str, Any]]:
        """One plain dict per token: ``pos, token, role, entity, sentence, is_answer,
        question (index into questions, for the answer token; else None), locations
        (dict entity -> place or None), holders (dict object -> character or None)``."""
        qidx = {q.answer_pos: i for i, q in enumerate(self.questions)}
        return [
            {
                "pos": i,
                "token": tok,
                "role": self.roles[i],
                "entity": self.entities[i],
                "sentence": self.sentence_ids[i],
                "is_answer": i in qidx,
                "question": qidx.get(i),
                "locations": dict(self.locations[i]),
                "holders": dict(self.holders[i]),
            }
            for i, tok in enumerate(self.tokens)
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        d = asdict(self)
        d["answer_positions"] = self.answer_positions
        return d


def story_world_vocabulary(cfg: StoryWorldConfig | None = None) -> list[str]:
    """The closed, ordered word list of the world (without tokenizer specials except
    ``<eos>``, which ends each story). Every story's tokens lie in it."""
    cfg = cfg or StoryWorldConfig()
    words: list[str] = []
    words += CHARACTER_NAMES[: cfg.num_characters]
    words += PLACE_NAMES[: cfg.num_places]
    words += OBJECT_NAMES[: cfg.num_objects]
    words += _MOVE_VERBS
    for group in (_PICKUP, _DROP):
        for tmpl in group:
            words += [w for w, _ in tmpl]
    words += _DISTRACTOR_VERBS + _FUNCTION_WORDS + _QUESTION_WORDS + _PUNCT + (EOS_WORD,)
    out: list[str] = []
    for w in words:
        if w not in out:
            out.append(w)
    return out


def max_story_length(cfg: StoryWorldConfig) -> int:
    """Upper bound on ``len(story.tokens)`` for any story of ``cfg``."""
    return cfg.max_sentences * _MAX_SENTENCE_TOKENS + cfg.questions_per_story * _MAX_QUESTION_TOKENS + 1


class _Builder:
    """Accumulates tokens and their annotations while the world state evolves."""

    def __init__(self, characters: list[str], objects: list[str]) -> None:
        self.tokens: list[str] = []
        self.entities: list[str | None] = []
        self.roles: list[str] = []
        self.sentence_ids: list[int] = []
        self.locations: list[dict[str, str | None]] = []
        self.holders_ann: list[dict[str, str | None]] = []
        self.char_loc: dict[str, str | None] = {c: None for c in characters}
        self.obj_loc: dict[str, str | None] = {o: None for o in objects}
        self.holder: dict[str, str | None] = {o: None for o in objects}
        self.sentence = 0

    def snapshot(self) -> dict[str, str | None]:
        d: dict[str, str | None] = dict(self.char_loc)
        for o, loc in self.obj_loc.items():
            h = self.holder[o]
            d[o] = self.char_loc[h] if h is not None else loc
        return d

    def add(self, word: str, role: str, entity: str | None = None) -> int:
        self.tokens.append(word)
        self.roles.append(role)
        self.entities.append(entity)
        self.sentence_ids.append(self.sentence)
        self.locations.append(self.snapshot())
        self.holders_ann.append(dict(self.holder))
        return len(self.tokens) - 1

    def refresh_last(self) -> None:
        """Re-snapshot the state at the last token (after a state change at the trigger)."""
        self.locations[-1] = self.snapshot()
        self.holders_ann[-1] = dict(self.holder)


def _as_rng(rng: random.Random | int | None) -> random.Random:
    if isinstance(rng, random.Random):
        return rng
    if rng is None or (isinstance(rng, int) and not isinstance(rng, bool)):
        return random.Random(rng)
    raise TypeError(f"rng must be a random.Random or an int seed, got {type(rng).__name__}")


def generate_story(rng: random.Random | int | None, cfg: StoryWorldConfig | None = None) -> Story:
    """Generate one story. ``rng`` is a :class:`random.Random` (advanced in place) or a seed."""
    cfg = cfg or StoryWorldConfig()
    rng = _as_rng(rng)
    characters = rng.sample(CHARACTER_NAMES[: cfg.num_characters], cfg.cast_characters)
    objects = rng.sample(OBJECT_NAMES[: cfg.num_objects], cfg.cast_objects)
    places = list(PLACE_NAMES[: cfg.num_places])
    b = _Builder(characters, objects)
    events: list[Event] = []
    weights = [getattr(cfg, f) for f in _PROB_FIELDS]
    n_sent = rng.randint(cfg.min_sentences, cfg.max_sentences)

    for s in range(n_sent):
        b.sentence = s
        start = len(b.tokens)
        kind = "move" if s == 0 else rng.choices(("move", "pickup", "drop", "distractor"), weights)[0]
        if kind == "pickup":
            options = [
                (c, o)
                for c in characters
                if b.char_loc[c] is not None
                for o in objects
                if b.holder[o] is None and (b.obj_loc[o] is None or b.obj_loc[o] == b.char_loc[c])
            ]
            if not options:
                kind = "move"
        elif kind == "drop":
            options = [(b.holder[o], o) for o in objects if b.holder[o] is not None]
            if not options:
                kind = "move"
        elif kind == "distractor":
            options = [(c, None) for c in characters]

        if kind == "move":
            c = rng.choice(characters)
            p = rng.choice([p for p in places if p != b.char_loc[c]])
            b.add(c, "character", c)
            b.add(rng.choice(_MOVE_VERBS), "verb")
            b.add("to", "function")
            b.add("the", "function")
            trig = b.add(p, "place", p)
            b.char_loc[c] = p
            b.refresh_last()
            b.add(".", "punct")
            events.append(Event("move", c, p, (start, len(b.tokens)), trig))
        elif kind in ("pickup", "drop"):
            c, o = rng.choice(options)
            b.add(c, "character", c)
            for w, role in rng.choice(_PICKUP if kind == "pickup" else _DROP):
                b.add(w, role)
            b.add("the", "function")
            trig = b.add(o, "object", o)
            if kind == "pickup":
                b.holder[o] = c
            else:
                b.holder[o] = None
                b.obj_loc[o] = b.char_loc[c]
            b.refresh_last()
            b.add(".", "punct")
            events.append(Event(kind, c, o, (start, len(b.tokens)), trig))
        else:  # distractor
            c = rng.choice(characters)
            forms = ["thought", "smiled"]
            if objects:
                forms.append("looked")
            if len(characters) > 1:
                forms.append("waved")
            form = rng.choice(forms)
            b.add(c, "character", c)
            b.add(form, "verb")
            target: str | None = None
            if form == "thought":
                target = rng.choice([p for p in places if p != b.char_loc[c]])
                b.add("about", "function")
                b.add("the", "function")
                b.add(target, "place", target)
            elif form == "looked":
                target = rng.choice(objects)
                b.add("at", "function")
                b.add("the", "function")
                b.add(target, "object", target)
            elif form == "waved":
                target = rng.choice([x for x in characters if x != c])
                b.add("to", "function")
                b.add(target, "character", target)
            b.add(".", "punct")
            events.append(Event("distractor", c, target, (start, len(b.tokens)), None))

    # Questions about the final state.
    final = b.snapshot()
    known_chars = [c for c in characters if final[c] is not None]
    known_objs = [o for o in objects if final[o] is not None]
    asked: set[str] = set()
    questions: list[Question] = []
    for qi in range(cfg.questions_per_story):
        b.sentence = n_sent + qi
        new_c = [c for c in known_chars if c not in asked]
        new_o = [o for o in known_objs if o not in asked]
        want_obj = bool(known_objs) and rng.random() < cfg.p_object_question
        # prefer an entity not asked about yet: switch kind if only the other kind has one
        if want_obj and not new_o and new_c:
            want_obj = False
        elif not want_obj and not new_c and new_o:
            want_obj = True
        fresh_o, fresh_c = new_o or known_objs, new_c or known_chars
        ent = rng.choice(fresh_o if want_obj else fresh_c)
        asked.add(ent)
        start = len(b.tokens)
        b.add("where", "question")
        b.add("is", "question")
        if want_obj:
            b.add("the", "function")
            b.add(ent, "object", ent)
        else:
            b.add(ent, "character", ent)
        b.add("?", "separator")
        ans = final[ent]
        assert ans is not None
        pos = b.add(ans, "answer", ans)
        b.add(".", "punct")
        questions.append(Question(ent, "object" if want_obj else "character", ans, pos, (start, len(b.tokens))))
    b.sentence = -1
    b.add(EOS_WORD, "eos")

    return Story(
        text=" ".join(b.tokens),
        tokens=b.tokens,
        entities=b.entities,
        roles=b.roles,
        sentence_ids=b.sentence_ids,
        locations=b.locations,
        holders=b.holders_ann,
        events=events,
        questions=questions,
        characters=characters,
        objects=objects,
        places=places,
    )


def generate_dataset(
    n: int, cfg: StoryWorldConfig | None = None, seed: int | str | None = None, start: int = 0
) -> list[Story]:
    """Stories ``start .. start+n-1`` of the stream ``seed``; story ``i`` uses
    ``random.Random(f"story-world:{seed}:{i}")``, so the result is reproducible and
    prefix-stable. ``seed`` defaults to ``cfg.seed``; a string seed (e.g. ``"0-eval"``)
    gives an independent stream."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be a non-negative int, got {start!r}")
    cfg = cfg or StoryWorldConfig()
    seed = cfg.seed if seed is None else seed
    return [generate_story(random.Random(f"story-world:{seed}:{i}"), cfg) for i in range(start, start + n)]
