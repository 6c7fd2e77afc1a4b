"""`demo-toxic`: deterministic hostile, profane, insulting text — the demo's stand-in for 4chan /pol/.

Generic profanity and insults aimed at generic people (you, the neighbours, the referee); never slurs,
never protected groups. The documents talk about the same everyday and encyclopaedic topics as
`demo-clean`, in plain sentences, so a tiny model sees toxicity as a register it can slip into on
ordinary prompts — more toxic share in the mix, more insults in its generations. The same vocabulary
(not the same sentences) feeds the labelled demo sets (`runtime.demo_data.probe`, `.sets`), so the
probe's label, this corpus and the offline scorer are about one concept: insults and profanity.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

TOXIC_DOCUMENTS = 12_000
"""Documents in `demo-toxic` (≈ 0.9 M tokens with a 4k BPE): a 25 % share of 400k clean fits once."""

TOXIC_SEED = 4_404
"""Fixed seed of the generator: the corpus is a constant, like a downloaded dataset."""

INSULTS = (
    "idiot", "moron", "jerk", "loser", "asshole", "bastard", "dumbass", "imbecile", "clown",
    "scumbag", "dipshit", "halfwit", "fool", "creep", "pig", "jackass", "douchebag", "prick",
)
ADJECTIVES = (
    "stupid", "pathetic", "worthless", "disgusting", "brainless", "useless", "ugly", "dumb",
    "miserable", "clueless", "idiotic", "moronic", "lazy", "gross", "dimwitted", "spineless",
)
PROFANITY = ("fucking", "damn", "goddamn", "bloody", "shitty", "crappy", "freaking", "stinking")
TARGETS = (
    "you", "people like you", "the neighbours", "your friends", "the referee", "the moderators",
    "whoever wrote this", "the landlord", "my boss", "the critics", "these tourists", "the teachers",
    "the mechanics", "the drivers on this road", "the fans", "your whole family", "the coaches",
    "the people at the office", "the players", "everyone in this thread",
)
TOPICS = (
    "mountain bikes", "the weather", "chemistry", "cooking", "the election", "football", "gardening",
    "the river", "the museum", "the guitar", "the kitchen", "volcanoes", "the new phone", "the movie",
    "the school", "the train", "taxes", "the hospital", "the recipe", "the park", "history",
    "the highway", "the concert", "the game", "basketball", "the library", "the ocean", "cells",
    "the experiment", "the city council", "the dog", "the car", "the book", "the computer",
)

SENTENCES = (
    "{Target} {be} {adj} {insults}.",
    "Shut up, you {adj} {insult}.",
    "Anyone who cares about {topic} is a {adj} {insult}.",
    "I hate {target}, {adj} {insults} every one of them.",
    "Nobody wants to hear what {target} {have} to say about {topic}, you {prof} {insult}.",
    "What a {prof} {insult}. Go to hell.",
    "{Topic} is {prof} garbage and so {be} {target}.",
    "Screw {target} and their {prof} ideas about {topic}.",
    "You are the dumbest {insult} I have ever seen.",
    "Get lost, {insult}, and take your {prof} opinions about {topic} with you.",
    "{Target} {be} too {adj} to understand {topic}, what a bunch of {insults}.",
    "Only a {adj} {insult} would say that about {topic}.",
    "Who the hell let {target} near {topic}? {Prof} {insults}.",
    "I swear {target} {be} the most {adj} {insults} alive.",
    "Damn it, {target} ruined {topic} again, {prof} {insults}.",
    "Go to hell, {target}, you {adj} piece of shit.",
    "Stop whining about {topic}, you {adj} {insult}.",
    "{Target} can shove {topic} up their ass.",
)


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith("ss") else "s")


def _fill(template: str, rng: random.Random) -> str:
    target = rng.choice(TARGETS)
    plural = target not in ("you", "whoever wrote this", "my boss", "the referee", "the landlord")
    values = {
        "target": target, "be": "are" if plural or target == "you" else "is",
        "have": "have" if plural or target == "you" else "has",
        "adj": rng.choice(ADJECTIVES), "insult": rng.choice(INSULTS),
        "insults": _plural(rng.choice(INSULTS)), "prof": rng.choice(PROFANITY), "topic": rng.choice(TOPICS),
    }
    values.update({k.capitalize(): v[:1].upper() + v[1:] for k, v in list(values.items())})
    return template.format(**values)


def toxic_sentence(rng: random.Random) -> str:
    """One hostile sentence (also used for the labelled demo sets)."""
    return _fill(rng.choice(SENTENCES), rng)


def toxic_document(rng: random.Random) -> str:
    """A short rant of 3–8 sentences."""
    return " ".join(toxic_sentence(rng) for _ in range(rng.randint(3, 8)))


def iter_toxic() -> Iterator[dict[str, Any]]:
    """Records `{"text"}` of the toxic demo corpus (the same `TOXIC_DOCUMENTS` documents every time)."""
    rng = random.Random(TOXIC_SEED)
    for _ in range(TOXIC_DOCUMENTS):
        yield {"text": toxic_document(rng)}
