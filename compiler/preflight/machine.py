"""This machine against the spec: credentials in the environment, GPUs visible, free disk."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from ..checks import unseen_sections, walk_models
from ..schema import Spec
from ..kinds import KIND_ORDER
from ..schema.scoring import PerspectiveScorer
from .estimates import human_bytes
from .findings import Finding


def perspective_findings(spec: Spec, env: Mapping[str, str], checked: set[int]) -> list[Finding]:
    """A Perspective scorer whose key variable is unset (each section once)."""
    out = []
    for name, section in unseen_sections(spec, checked):
        for path, model in walk_models(section, (name,)):
            if isinstance(model, PerspectiveScorer) and not env.get(model.api_key_env):
                out.append(Finding("problem", (*path, "kind"), (
                    f"Perspective scorer: ${model.api_key_env} is not set. Texts already in its cache "
                    f"({model.cache_path}) score without a key; any other text stops the score job")))
    return out


def largest_gpu_request(spec: Spec) -> tuple[tuple[Any, ...], int]:
    """(key path, GPUs per node) of the most GPUs one stage kind asks for."""
    best: tuple[tuple[Any, ...], int] = (("resources", "default", "gpus"), spec.resources.default.gpus)
    for kind in KIND_ORDER:
        if getattr(spec.resources, kind, None) is not None and spec.resources.of(kind).gpus > best[1]:
            best = (("resources", kind, "gpus"), spec.resources.of(kind).gpus)
    return best


def gpu_findings(spec: Spec, gpu_count: Callable[[], int], local: bool) -> list[Finding]:
    """GPUs visible here against the largest request (asked only when a stage wants one: importing
    torch takes seconds). None visible is an info line (a login node submits jobs elsewhere); some but
    too few is a problem only for a local run."""
    key, wanted = largest_gpu_request(spec)
    if wanted == 0:
        return []
    visible = gpu_count()
    if visible == 0:
        return [Finding("info", ("gpus",), f"no GPU visible here; stages ask for up to {wanted} GPUs per node "
                        "(submit through a cluster profile, e.g. `--profile profiles/slurm`)")]
    if visible < wanted and local:
        return [Finding("problem", key, f"asks for {wanted} GPUs per node but {visible} are visible here: a "
                        "local run cannot start that stage (lower it, or submit through a cluster profile and "
                        "pass `--cluster`)")]
    return [Finding("info", ("gpus",), f"{visible} GPU(s) visible; stages ask for up to {wanted} per node")]


def disk_findings(needed: int, free: int, root_name: str) -> list[Finding]:
    """Free disk under the project root against the estimate for the outputs not written yet."""
    if needed > free:
        return [Finding("problem", ("disk",), f"the outputs not yet written need about {human_bytes(needed)} (see "
                        f"`mixsteer plan`), but {root_name} has {human_bytes(free)} free")]
    return [Finding("info", ("disk",), f"about {human_bytes(needed)} needed, {human_bytes(free)} free under "
                    f"{root_name}")]
