"""Chaos: a spec with every stage kind, run under Snakemake while a seeded schedule kills it the ways the world
does — SIGTERM or SIGKILL to the whole process group (Ctrl-C, a stopping Snakemake, a lost node), SIGTERM or
SIGKILL to one running stage (a preempted or OOM-killed job), at random moments, so also mid-step and
mid-save — and rerun until done (`pytest -m slow`; `.ci/run` runs it).

Checked after every attempt: no process of the project outlives it, and no published stage folder is ever
replaced (published once). At the end: the same stage instances as an uninterrupted run of the same spec,
each with equal outputs (timings and resume notes aside).
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = "specs/chaos.yaml"
SEED = int(os.environ.get("MIXSTEER_CHAOS_SEED", "20261207"))
KILLS = int(os.environ.get("MIXSTEER_CHAOS_KILLS", "6"))
ACTIONS = ("term-group", "kill-group", "term-stage", "kill-stage")
GRACE_S = 60
"""How long a stopped attempt may take to save and exit before its survivors count as orphans."""

VOLATILE_FILES = {"stage.json"}
VOLATILE_KEY = re.compile(r"(time|seconds|_s$|per_s|throughput|elapsed|peak_|resumed|restarted|memory|date|wall"
                          r"|cached_texts|scored_texts)")
"""stage.json (timing, host, the attempt's own log) and timing-like metrics differ between any two runs; so does
the score cache's hit/miss split: a stopped score's rerun answers from the shared cache what it scored before."""


def make_project(root: Path) -> Path:
    root.mkdir(parents=True)
    shutil.copy(ROOT / "Snakefile", root)
    shutil.copytree(ROOT / "profiles", root / "profiles")   # profiles/default: how a rerun treats a kill
    shutil.copytree(ROOT / "specs", root / "specs")
    shutil.copy(ROOT / "tests/e2e/chaos/chaos.yaml", root / SPEC)
    shutil.copytree(ROOT / "tests/data/scorer_check", root / "tests/data/scorer_check")
    shutil.copytree(ROOT / "data/demo", root / "data/demo")
    return root


def uninterrupted_run(root: Path) -> Path:
    """The reference: the spec run once without faults (`MIXSTEER_CHAOS_REFERENCE`: a project an earlier run of
    this test left, to try other seeds without paying for it again)."""
    reuse = os.environ.get("MIXSTEER_CHAOS_REFERENCE")
    if reuse:
        return Path(reuse)
    make_project(root)
    started = time.monotonic()
    run = snakemake(root)
    out, _ = run.communicate(timeout=1800)
    assert run.returncode == 0, out[-4000:]
    (root / "uninterrupted-seconds").write_text(f"{time.monotonic() - started:.1f}\n")
    return root


def snakemake(root: Path, *extra: str) -> subprocess.Popen:
    """Snakemake in a session of its own, as a terminal would start it (its jobs in its process group)."""
    return subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", *extra,
                             "--config", f"spec={SPEC}"], cwd=root, start_new_session=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_project(root: Path) -> None:
    """Leave nothing behind whatever the test's outcome (its Snakemakes run in sessions of their own)."""
    for pid in project_processes(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def project_processes(root: Path) -> list[int]:
    """Every live process whose working directory is the project (Snakemake, its jobs, their workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if os.readlink(entry / "cwd") == str(root) and (entry / "stat").read_text().split()[2] != "Z":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def stage_processes(root: Path) -> list[int]:
    """The project's running stage processes (`python -m runtime …`, the launcher and its workers)."""
    out = []
    for pid in project_processes(root):
        try:
            cmd = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part in (b"runtime", b"runtime.launch") for part in cmd) or any(b"runtime/" in p for p in cmd):
            out.append(pid)
    return out


def published(root: Path) -> dict[str, tuple[int, int]]:
    """Each published stage folder's stage.json: (inode, mtime) — a republished folder changes both."""
    out = {}
    for f in (root / "results").glob("*/*/stage.json"):
        st = f.stat()
        out[str(f.parent.relative_to(root))] = (st.st_ino, st.st_mtime_ns)
    return out


def stop(proc: subprocess.Popen, root: Path, action: str, rng: random.Random) -> str:
    """Deliver one fault; returns what was hit."""
    if action.endswith("group"):
        os.killpg(proc.pid, signal.SIGTERM if action == "term-group" else signal.SIGKILL)
        return "the process group"
    stages = stage_processes(root)
    if not stages:
        return "nothing (no stage running)"
    pid = rng.choice(sorted(stages))
    try:
        cmd = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()[-90:]
        os.kill(pid, signal.SIGTERM if action == "term-stage" else signal.SIGKILL)
    except (OSError, ProcessLookupError):
        return "a stage that had just ended"
    return f"pid {pid} ({cmd})"


def wait_for_no_survivors(root: Path, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = project_processes(root)
        if not alive:
            return []
        time.sleep(0.5)
    return project_processes(root)


def comparable(path: Path, root: Path):
    """A file's content as compared: tensors by value, parsed JSON without volatile keys, else bytes (OLMo's
    `.npy` token files are raw memmaps: bytes); the project's own path, which records of data paths hold,
    reads the same in both projects."""
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file
        return {k: v.tolist() for k, v in sorted(load_file(str(path)).items())}
    if path.suffix in (".pt", ".bin"):
        import torch
        return repr(torch.load(path, map_location="cpu", weights_only=False))
    data = path.read_bytes().replace(str(root).encode(), b"<project>")
    if path.suffix == ".json":
        return _drop_volatile(json.loads(data))
    if path.suffix == ".jsonl":
        return [_drop_volatile(json.loads(line)) for line in data.split(b"\n") if line.strip()]
    return data


def _drop_volatile(value):
    if isinstance(value, dict):
        return {k: _drop_volatile(v) for k, v in value.items() if not VOLATILE_KEY.search(str(k))}
    if isinstance(value, list):
        return [_drop_volatile(v) for v in value]
    return value


def differences(ref: Path, other: Path) -> list[str]:
    out = []
    ref_stages, other_stages = set(published(ref)), set(published(other))
    if ref_stages != other_stages:
        out.append(f"stage folders differ: only uninterrupted {sorted(ref_stages - other_stages)}, "
                   f"only chaos {sorted(other_stages - ref_stages)}")
    for folder in sorted(ref_stages & other_stages):
        if folder.startswith("results/report/"):
            continue  # plots and pages: rendered from the compared files
        files = {p.relative_to(ref / folder) for p in (ref / folder).rglob("*") if p.is_file()}
        others = {p.relative_to(other / folder) for p in (other / folder).rglob("*") if p.is_file()}
        if files != others:
            out.append(f"{folder}: files differ {sorted(map(str, files ^ others))}")
        for rel in sorted(files & others):
            if rel.name in VOLATILE_FILES or rel.suffix in (".log", ".png", ".html"):
                continue
            if comparable(ref / folder / rel, ref) != comparable(other / folder / rel, other):
                out.append(f"{folder}/{rel} differs")
    return out


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_every_stage_killed_at_random_ends_as_an_uninterrupted_run(tmp_path):
    try:
        _chaos(tmp_path)
    finally:
        for root in (tmp_path / "uninterrupted", tmp_path / "chaos"):
            kill_project(root)


def _chaos(tmp_path: Path) -> None:
    ref = uninterrupted_run(tmp_path / "uninterrupted")
    full_s = float((ref / "uninterrupted-seconds").read_text())
    share_s = full_s / KILLS                          # attempts of this mean length together cover a whole run

    chaos = make_project(tmp_path / "chaos")
    rng = random.Random(SEED)
    log, seen = [], {}
    for attempt in range(KILLS):
        proc = snakemake(chaos)
        delay, action = rng.uniform(0.2, 1.8) * share_s, rng.choice(ACTIONS)
        try:
            proc.wait(timeout=delay)
            hit = "nothing: the run ended first"
        except subprocess.TimeoutExpired:
            hit = stop(proc, chaos, action, rng)
        # A stopped group ends within the grace; after one stopped or killed stage Snakemake goes on (a stage
        # stopped alone resumes in place, a killed one fails its job while the others finish).
        wait_s = GRACE_S * 3 if action.endswith("group") else GRACE_S * 3 + 3 * full_s
        try:
            out, _ = proc.communicate(timeout=wait_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            pytest.fail(f"attempt {attempt}: Snakemake did not exit after {action}:\n{out[-3000:]}")
        log.append(f"attempt {attempt}: {action} after {delay:.1f} s hit {hit}; exit {proc.returncode}")
        survivors = wait_for_no_survivors(chaos, GRACE_S)
        assert not survivors, "\n".join(log) + f"\nprocesses outlived attempt {attempt}: " + " | ".join(
            (Path("/proc") / str(p) / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200] for p in survivors)
        now = published(chaos)
        replaced = [f for f, stamp in seen.items() if now.get(f) != stamp]
        assert not replaced, "\n".join(log) + f"\npublished twice or removed: {replaced}"
        seen = now
        if proc.returncode == 0:
            break
        if action == "kill-group":          # a killed Snakemake leaves its lock, as for any user
            subprocess.run([sys.executable, "-m", "snakemake", "--unlock", "--config", f"spec={SPEC}"],
                           cwd=chaos, capture_output=True, check=True)
    final = snakemake(chaos)
    out, _ = final.communicate(timeout=1800)
    assert final.returncode == 0, "\n".join(log) + "\n" + out[-4000:]
    assert not [f for f, stamp in seen.items() if published(chaos).get(f) != stamp], "published twice"
    problems = differences(ref, chaos)
    assert not problems, "\n".join(log) + "\n" + "\n".join(problems)
    print("\n".join(log))
