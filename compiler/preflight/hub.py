"""Hugging Face Hub sources: reachable from here, gated behind a token, pinned to a revision?

Datasets are streamed (`load_dataset(..., streaming=True)`), which never reads a local cache: without
the Hub they cannot be read at all, and the fix is a local mirror (`path:` instead of `name:`, same
config, split and fields). Classifier models load from the local Hugging Face cache when they are in it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..schema.scoring import ClassifierScorer
from .findings import Finding

TOKEN_ENV = "HF_TOKEN"
"""The environment variable `huggingface_hub` and `datasets` read the access token from."""

KNOWN_GATED = frozenset({"toxigen/toxigen-data", "skg/toxigen-data"})
"""Datasets known to need an accepted licence and a token, for when the Hub cannot be asked."""


@dataclass(frozen=True)
class HubAnswer:
    """What the Hub says about one repository (at one revision)."""

    reachable: bool = True
    exists: bool = True
    revision_exists: bool = True
    gated: bool = False
    error: str = ""


class Hub(Protocol):
    """The Hub as preflight asks it (a fake in tests)."""

    def info(self, repo: str, repo_type: str, revision: str | None) -> HubAnswer: ...

    def cached(self, repo: str, revision: str | None) -> bool: ...


@dataclass(frozen=True)
class HubAccess:
    """How this machine reaches the Hub."""

    offline: bool          # HF_HUB_OFFLINE is set: nothing is asked
    has_token: bool        # HF_TOKEN is set, or `hf auth login` stored a token
    hub: Hub | None = None


class HfHub:
    """The real Hub, through `huggingface_hub` (short timeouts: a missing network is an answer)."""

    TIMEOUT_S = 10.0

    def __init__(self) -> None:
        from huggingface_hub import HfApi

        self.api = HfApi()
        self.down: HubAnswer | None = None  # the first network failure answers every later question

    def info(self, repo: str, repo_type: str, revision: str | None) -> HubAnswer:
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

        if self.down is not None:
            return self.down
        fetch = self.api.dataset_info if repo_type == "dataset" else self.api.model_info
        try:
            info = fetch(repo, revision=revision, timeout=self.TIMEOUT_S)
        except RevisionNotFoundError:
            return HubAnswer(revision_exists=False)
        except GatedRepoError:
            return HubAnswer(gated=True)
        except RepositoryNotFoundError:
            return HubAnswer(exists=False)
        except Exception as exc:  # network errors come in many types (httpx, OSError, offline mode)
            self.down = HubAnswer(reachable=False, error=f"{type(exc).__name__}: {exc}")
            return self.down
        return HubAnswer(gated=bool(getattr(info, "gated", False)))

    def cached(self, repo: str, revision: str | None) -> bool:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo, "config.json", revision=revision), str)


def dataset_findings(path: tuple[Any, ...], source: Any, access: HubAccess) -> list[Finding]:
    """One `kind: hf` source with a Hub `name`."""
    name, where = source.name, f"Hub dataset {source.name!r}"
    out = []
    if not source.revision:
        out.append(Finding("warning", (*path, "name"), (
            f"{where} has no `revision`: the Hub may serve other data under this id next year; pin a commit "
            f"(`git ls-remote https://huggingface.co/datasets/{name} refs/heads/main`)")))
    answer = _ask(access, name, "dataset", source.revision)
    if not answer.reachable:
        out.append(Finding("problem", (*path, "name"), (
            f"{where} cannot be reached ({answer.error}). Mirror it where there is network: `hf download {name} "
            f"--repo-type dataset{_rev(source.revision)} --local-dir data/hub/{name}`, copy the folder here and "
            f"write `path: data/hub/{name}` instead of `name: {name}` (config, split and fields unchanged)")))
    elif not answer.exists:
        out.append(Finding("problem", (*path, "name"), f"{where} does not exist on the Hub (or is private: set "
                           f"{TOKEN_ENV})"))
    elif not answer.revision_exists:
        out.append(Finding("problem", (*path, "revision"), f"{where} has no revision {source.revision!r}"))
    if (answer.gated or (not answer.reachable and name in KNOWN_GATED)) and not access.has_token:
        out.append(Finding("problem", (*path, "name"), (
            f"{where} is gated: accept its terms at https://huggingface.co/datasets/{name} while logged in, then "
            f"set {TOKEN_ENV} to an access token of that account (or run `hf auth login`)")))
    return out


def model_findings(path: tuple[Any, ...], scorer: ClassifierScorer, access: HubAccess) -> list[Finding]:
    """A classifier scorer with a Hub `model`: loadable from the cache, or from the Hub."""
    if access.hub is not None and access.hub.cached(scorer.model, scorer.revision):
        return []
    answer = _ask(access, scorer.model, "model", scorer.revision)
    if not answer.reachable:
        return [Finding("problem", (*path, "model"), (
            f"Hub model {scorer.model!r} is not in the local Hugging Face cache and the Hub cannot be reached "
            f"({answer.error}): `hf download {scorer.model}{_rev(scorer.revision)} --local-dir models/"
            f"{scorer.model}` where there is network, then write `path: models/{scorer.model}` instead of `model:`"))]
    if not answer.exists:
        return [Finding("problem", (*path, "model"), f"Hub model {scorer.model!r} does not exist (or is private: "
                        f"set {TOKEN_ENV})")]
    if not answer.revision_exists:
        return [Finding("problem", (*path, "revision"), f"Hub model {scorer.model!r} has no revision "
                        f"{scorer.revision!r}")]
    return []


def _ask(access: HubAccess, repo: str, repo_type: str, revision: str | None) -> HubAnswer:
    if access.offline or access.hub is None:
        return HubAnswer(reachable=False, error="HF_HUB_OFFLINE is set")
    return access.hub.info(repo, repo_type, revision)


def _rev(revision: str | None) -> str:
    return f" --revision {revision}" if revision else ""
