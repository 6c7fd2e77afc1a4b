"""A fake Hugging Face Hub over HTTP, for the online features (`mixsteer lock`, `mixsteer check`).

It answers the few endpoints `huggingface_hub` calls — repository info at a revision and file downloads —
so tests run the real client (`HF_ENDPOINT` pointed here), not a stand-in object. Branches can be moved
between calls to play an upstream commit landing.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


def commit_of(text: str) -> str:
    """A deterministic 40-hex commit id for a label."""
    return hashlib.sha1(text.encode()).hexdigest()


@dataclass
class Repo:
    branches: dict[str, str] = field(default_factory=dict)              # branch or tag → commit
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)    # commit → path → bytes
    gated: bool = False

    def commit(self, revision: str | None) -> str | None:
        revision = revision or "main"
        if revision in self.files:
            return revision
        return self.branches.get(revision)


@dataclass
class FakeHub:
    repos: dict[tuple[str, str], Repo] = field(default_factory=dict)    # (type, id) → repo
    requests: list[str] = field(default_factory=list)

    def add(self, repo_type: str, repo: str, branch: str = "main", files: dict[str, bytes] | None = None,
            label: str | None = None) -> str:
        """Put a new commit on `branch` (created if needed) and return it."""
        r = self.repos.setdefault((repo_type, repo), Repo())
        commit = commit_of(label or f"{repo_type}:{repo}:{branch}:{len(r.files)}")
        r.files[commit] = dict(files or {})
        r.branches[branch] = commit
        return commit

    def serve(self) -> "Server":
        return Server(self)


class Server:
    """The fake Hub on 127.0.0.1 in a background thread; `url` is the value for HF_ENDPOINT."""

    def __init__(self, hub: FakeHub):
        handler = type("Handler", (_Handler,), {"hub": hub})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        self.hub.requests.append(f"{self.command} {path}")
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:1] == ["api"] and len(parts) >= 4 and parts[1] in ("models", "datasets"):
            repo_type = "model" if parts[1] == "models" else "dataset"
            repo = "/".join(parts[2:4])
            revision = "/".join(parts[5:]) if len(parts) > 5 and parts[4] == "revision" else None
            return self._info(repo_type, repo, revision, body)
        if "resolve" in parts:
            i = parts.index("resolve")
            prefix = parts[:i]
            repo_type = "dataset" if prefix[:1] == ["datasets"] else "model"
            repo = "/".join(prefix[1:] if repo_type == "dataset" else prefix)
            return self._file(repo_type, repo, parts[i + 1], "/".join(parts[i + 2:]), body)
        self._error(404, "RepoNotFound", body)

    def _info(self, repo_type: str, repo: str, revision: str | None, body: bool) -> None:
        r = self.hub.repos.get((repo_type, repo))
        if r is None:
            return self._error(404, "RepoNotFound", body)
        if r.gated:
            return self._error(403, "GatedRepo", body)
        commit = r.commit(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", body)
        siblings = [{"rfilename": name} for name in r.files[commit]]
        self._send(200, json.dumps({"id": repo, "sha": commit, "private": False, "siblings": siblings}).encode(),
                   body, {"Content-Type": "application/json"})

    def _file(self, repo_type: str, repo: str, revision: str, name: str, body: bool) -> None:
        r = self.hub.repos.get((repo_type, repo))
        commit = r.commit(revision) if r else None
        if commit is None:
            return self._error(404, "RepoNotFound" if r is None else "RevisionNotFound", body)
        data = r.files[commit].get(name)
        if data is None:
            return self._error(404, "EntryNotFound", body)
        etag = hashlib.sha1(data).hexdigest()
        self._send(200, data, body, {"X-Repo-Commit": commit, "ETag": f'"{etag}"',
                                     "Content-Type": "application/octet-stream"})

    def _error(self, status: int, code: str, body: bool) -> None:
        self._send(status, json.dumps({"error": code}).encode(), body,
                   {"X-Error-Code": code, "X-Error-Message": code, "Content-Type": "application/json"})

    def _send(self, status: int, data: bytes, body: bool, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)
