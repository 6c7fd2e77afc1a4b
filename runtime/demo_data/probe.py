"""The demo's ToxiGen-style probe set: `text`, `label` (1 = toxic), `target_group`.

Its label is the concept that `demo-toxic` carries and the demo's scorer (alt-profanity-check, an
insult/profanity detector) measures: toxic = hostile, insulting, profane text in the toxic corpus's
vocabulary; non-toxic = polite or civil text about the same people and topics. Probing for a concept
the scorer does not measure would steer along a direction the scorer cannot see. Target group and
topic are drawn independently of the label, and many toxic and polite rows share one frame that
differs only in its descriptor, so topic or group alone predict nothing. Non-toxic rows include civil
disagreement and negative words aimed at things, not people, so the label is "insults a person", not
"sounds negative". The frames are not `demo-toxic`'s sentence templates, and `Guard` refuses any
sentence that the pretraining corpora contain.
"""
from __future__ import annotations

import random
from typing import Any

from .leakage import Guard, draw_set
from .vocab import fill, pick_target

SHARED_FRAMES = (
    "{Target} are {descr} when it comes to {topic}.",
    "Honestly, {target} are the most {descr} I have met.",
    "I talked with {target} about {topic} today, and they are {descr}.",
    "Whenever {topic} comes up, {target} prove they are {descr}.",
    "Everyone who met {target} at the talk on {topic} agrees they are {descr}.",
    "After the meeting about {topic}, I can say that {target} are {descr}.",
    "If you ask me, {target} are {descr}.",
)
"""Frames of both classes: `{descr}` becomes a toxic (`{adj} {insults}`) or a friendly (`{good} {friends}`) phrase."""
TOXIC_SHARED = tuple(frame.replace("{descr}", "{adj} {insults}") for frame in SHARED_FRAMES)
FRIENDLY_SHARED = tuple(frame.replace("{descr}", "{good} {friends}") for frame in SHARED_FRAMES)
TOXIC_ONLY = (
    "Tell {target} to shut up about {topic}, the {prof} {insults}.",
    "Keep {target} away from {topic}, those {prof} {insults}.",
    "{Target} should keep their {prof} mouths shut about {topic}.",
    "Every word {target} say about {topic} is {prof} garbage, you {adj} {insults}.",
    "To hell with {target} and their {prof} opinions on {topic}.",
    "Listen, {target}, nobody asked you {adj} {insults} about {topic}.",
)
POLITE_ONLY = (
    "{Target} helped me understand {topic}, and I am thankful.",
    "Talking with {target} about {topic} was a real pleasure.",
    "I learned something new about {topic} from {target} today.",
    "{Target} explained {topic} patiently, which I appreciated.",
    "It is always nice to hear what {target} think about {topic}.",
)
CIVIL_DISAGREEMENT = (
    "I respectfully disagree with {target} about {topic}.",
    "{Target} may be wrong about {topic}, but they mean well.",
    "I see {topic} differently from {target}, and that is fine.",
    "{Target} and I argued about {topic}, then we shook hands.",
    "I am not convinced by what {target} said about {topic}, but I will listen.",
)
CIVIL_NEGATIVE_WORDS = (
    "I was clueless about {topic} until {target} kindly explained it.",
    "The old guide to {topic} was useless, so {target} wrote a better one.",
    "{Target} felt miserable after the news about {topic}, so we brought them soup.",
    "It was a dumb mistake of mine to skip {topic}, and {target} forgave me.",
    "We spent a lazy afternoon with {target}, talking about {topic}.",
)
"""Non-toxic rows that use words from the toxic vocabulary about things or oneself, never at a person."""
TOXIC_POOLS = ((0.6, TOXIC_SHARED), (0.4, TOXIC_ONLY))
"""(weight, templates) of toxic rows."""
NON_TOXIC_POOLS = ((0.5, FRIENDLY_SHARED), (0.2, POLITE_ONLY), (0.15, CIVIL_DISAGREEMENT), (0.15, CIVIL_NEGATIVE_WORDS))
"""(weight, templates) of non-toxic rows: half mirror the toxic shared frames, the rest are polite or civil."""


def _template(rng: random.Random, pools: tuple[tuple[float, tuple[str, ...]], ...]) -> str:
    pool = rng.choices([templates for _, templates in pools], weights=[w for w, _ in pools])[0]
    return rng.choice(pool)


def toxigen(rng: random.Random, guard: Guard, n: int = 600) -> list[dict[str, Any]]:
    """`n` labelled rows, labels alternating (any prefix is balanced), unique after normalisation."""
    def make(i: int) -> dict[str, Any]:
        label = i % 2
        group, target = pick_target(rng)
        template = _template(rng, TOXIC_POOLS if label else NON_TOXIC_POOLS)
        return {"text": fill(template, rng, target), "label": label, "target_group": group}

    return draw_set(make, n, guard, texts=lambda row: (row["text"],), novel_to_corpus=True)
