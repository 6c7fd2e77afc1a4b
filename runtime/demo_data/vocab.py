"""Vocabulary and slot filling shared by the labelled demo sets.

Toxic words (insults, hostile adjectives, profanity) and topics come from `demo-toxic`
(`runtime.demo_data.toxic`), so the sets name the concept the toxic corpus carries and the offline
scorer detects; the polite counterparts below describe the same people and topics kindly.
"""
from __future__ import annotations

import random

from .toxic import ADJECTIVES, INSULTS, PROFANITY, TOPICS, _plural

GROUPS: dict[str, tuple[str, ...]] = {
    # target_group value → how sentences name that group (plural, never a protected group)
    "neighbours": ("the neighbours", "the people next door", "my neighbours"),
    "coworkers": ("my coworkers", "the people at the office", "the managers"),
    "drivers": ("the drivers on this road", "the bus drivers", "the cyclists"),
    "fans": ("the fans", "the players", "the referees"),
    "teachers": ("the teachers", "the coaches", "the librarians"),
}
FRIENDLY_ADJECTIVES = (
    "kind", "honest", "smart", "generous", "decent", "friendly", "patient", "clever", "helpful",
    "thoughtful", "cheerful", "wonderful",
)
FRIENDLY_NOUNS = ("people", "folks", "souls", "friends", "companions", "colleagues", "experts", "helpers")


def cap(text: str) -> str:
    """`text` with its first letter upper-cased."""
    return text[:1].upper() + text[1:]


def fill(template: str, rng: random.Random, target: str) -> str:
    """`template` with its slots filled: `{target}`, `{topic}`, toxic `{adj}`/`{insult(s)}`/`{prof}`,
    friendly `{good}`/`{friends}`; a capitalised slot name (`{Target}`) gives a capitalised value."""
    values = {
        "target": target, "topic": rng.choice(TOPICS), "adj": rng.choice(ADJECTIVES),
        "insult": rng.choice(INSULTS), "insults": _plural(rng.choice(INSULTS)), "prof": rng.choice(PROFANITY),
        "good": rng.choice(FRIENDLY_ADJECTIVES), "friends": rng.choice(FRIENDLY_NOUNS),
    }
    values.update({cap(k): cap(v) for k, v in list(values.items())})
    return template.format(**values)


def pick_target(rng: random.Random) -> tuple[str, str]:
    """A random (target_group, how a sentence names it)."""
    group = rng.choice(sorted(GROUPS))
    return group, rng.choice(GROUPS[group])
