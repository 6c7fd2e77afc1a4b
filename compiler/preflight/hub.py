"""Hugging Face Hub sources: reachable from here, gated behind a token, pinned to a revision?

Datasets are streamed (`load_dataset(..., streaming=True)`), which never reads a local cache: without
the Hub they cannot be read at all, and the fix is a local mirror (`path:` instead of `name:`, same
config, split and fields). Classifier models load from the local Hugging Face cache when they are in it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import MixsteerError
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

    def config(self, repo: str, revision: str | None) -> dict[str, Any] | None:
        """The model's `config.json` at `revision` (from the local cache, else the Hub), or None."""
        ...


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

    def config(self, repo: str, revision: str | None) -> dict[str, Any] | None:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        path = try_to_load_from_cache(repo, "config.json", revision=revision)
        if not isinstance(path, str) and self.down is None:
            try:
                path = hf_hub_download(repo, "config.json", revision=revision, etag_timeout=self.TIMEOUT_S)
            except Exception:  # unreachable, gated, missing: `info` reports those
                return None
        try:
            return json.loads(Path(path).read_text()) if isinstance(path, str) else None
        except (OSError, ValueError):
            return None

    def resolve(self, repo: str, repo_type: str, revision: str | None) -> str:
        """The commit a branch or tag (or the default branch) points to now; a clear error otherwise."""
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

        fetch = self.api.dataset_info if repo_type == "dataset" else self.api.model_info
        where = f"{repo_type} {repo} at {revision or 'its default branch'}"
        try:
            return str(fetch(repo, revision=revision, timeout=self.TIMEOUT_S).sha)
        except RevisionNotFoundError:
            raise MixsteerError(f"{where}: the Hub has no such revision") from None
        except GatedRepoError:
            raise MixsteerError(f"{where} is gated: accept its terms on the Hub and set {TOKEN_ENV}") from None
        except RepositoryNotFoundError:
            raise MixsteerError(f"{where}: no such repository on the Hub (or private: set {TOKEN_ENV})") from None
        except Exception as exc:  # network errors come in many types
            raise MixsteerError(f"{where}: the Hub cannot be reached ({type(exc).__name__}: {exc})") from None


def dataset_findings(path: tuple[Any, ...], source: Any, access: HubAccess) -> list[Finding]:
    """One `kind: hf` source with a Hub `name`."""
    name, where = source.name, f"Hub dataset {source.name!r}"
    out = []   # a floating `revision` is reported by the lock check (compiler.lock)
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
    """A classifier scorer with a Hub `model`: loadable from the cache or the Hub at its commit, and its
    `toxic_labels` among the checkpoint's `id2label` (read from the cached or downloaded config.json)."""
    where = f"Hub model {scorer.model!r} at {scorer.revision or 'its default branch'}"
    if access.hub is None or not access.hub.cached(scorer.model, scorer.revision):
        answer = _ask(access, scorer.model, "model", scorer.revision)
        if not answer.reachable:
            return [Finding("problem", (*path, "model"), (
                f"{where} is not in the local Hugging Face cache and the Hub cannot be reached ({answer.error}): "
                f"`hf download {scorer.model}{_rev(scorer.revision)}` where there is network (and copy the cache), "
                f"or save it to a folder and write `path:` instead of `model:`. Not checked: that the commit "
                f"exists and that `toxic_labels` match its id2label")),
                    Finding("info", (*path, "toxic_labels"), f"{where}: toxic_labels not checked (offline)")]
        if not answer.exists:
            return [Finding("problem", (*path, "model"), f"{where} does not exist (or is private: set {TOKEN_ENV})")]
        if not answer.revision_exists:
            return [Finding("problem", (*path, "revision"), f"{where}: the Hub has no such revision")]
    config = access.hub.config(scorer.model, scorer.revision) if access.hub is not None else None
    labels = [str(v) for v in ((config or {}).get("id2label") or {}).values()]
    if not labels:
        return [Finding("info", (*path, "toxic_labels"), f"{where}: its config.json has no id2label (or could not "
                        f"be read): toxic_labels not checked")]
    unknown = [label for label in scorer.toxic_labels if label not in labels]
    if unknown:
        return [Finding("problem", (*path, "toxic_labels"), (
            f"{where}: toxic_labels {unknown} are not among the checkpoint's id2label {labels}"))]
    return [Finding("info", (*path, "toxic_labels"), f"{where}: commit found, toxic_labels {scorer.toxic_labels} "
                    f"among id2label {labels}")]


def _ask(access: HubAccess, repo: str, repo_type: str, revision: str | None) -> HubAnswer:
    if access.offline or access.hub is None:
        return HubAnswer(reachable=False, error="HF_HUB_OFFLINE is set")
    return access.hub.info(repo, repo_type, revision)


def _rev(revision: str | None) -> str:
    return f" --revision {revision}" if revision else ""
