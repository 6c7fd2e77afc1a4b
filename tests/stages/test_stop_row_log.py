"""The evaluate stage's generation work file (`runtime.evaluate.row_log.RowLog`) as a kill or a damaged disk leaves
it: only verified whole chunks survive a resume, and the file is cut back to them."""
from __future__ import annotations

import json
from pathlib import Path

from runtime.evaluate.row_log import RowLog

HEADER = {"batch_size": 2, "device": "cpu"}


def plan(chunks: int = 3, per_chunk: int = 2) -> list[list[dict]]:
    return [[{"set": "s", "prompt_index": c * per_chunk + i} for i in range(per_chunk)] for c in range(chunks)]


def written(path: Path, chunks: list[list[dict]], header=HEADER) -> RowLog:
    """A log with every planned chunk written, as an uninterrupted run leaves it."""
    log = RowLog(path, chunks, ("continuation",), header)
    assert log.resume() == (0, None)
    for chunk in chunks:
        log.append([r | {"continuation": f"c{r['prompt_index']}"} for r in chunk])
    return log


def test_whole_chunks_resume_and_a_torn_last_line_is_cut_off(tmp_path):
    path = tmp_path / "g.jsonl"
    written(path, plan())
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines)[:-5])   # the last row cut mid-write: its chunk is not whole
    chunks, why = RowLog(path, plan(), ("continuation",), HEADER).resume()
    assert (chunks, why) == (2, "a torn last line")
    assert path.read_bytes() == b"".join(lines[:4])


def test_a_partial_chunk_is_dropped_to_the_chunk_boundary(tmp_path):
    path = tmp_path / "g.jsonl"
    written(path, plan())
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:5]))   # chunk 3's first row only
    assert RowLog(path, plan(), ("continuation",), HEADER).resume() == (2, "1 rows of an unfinished chunk")
    assert path.read_bytes() == b"".join(lines[:4])


def test_a_row_that_is_not_the_prompt_it_claims_stops_the_kept_prefix(tmp_path):
    path = tmp_path / "g.jsonl"
    written(path, plan())
    lines = path.read_bytes().splitlines(keepends=True)
    row = json.loads(lines[3])
    lines[3] = (json.dumps(row | {"prompt_index": 7}) + "\n").encode()
    path.write_bytes(b"".join(lines))
    chunks, why = RowLog(path, plan(), ("continuation",), HEADER).resume()
    assert chunks == 1 and why.startswith("line 4 is not the row it claims to be")
    assert path.read_bytes() == b"".join(lines[:2])


def test_garbage_and_a_missing_continuation_are_not_rows(tmp_path):
    path = tmp_path / "g.jsonl"
    written(path, plan())
    lines = path.read_bytes().splitlines(keepends=True)
    for bad, why in ((b"\x00\x00\x00\n", "line 3 is not JSON"),
                     (json.dumps({"set": "s", "prompt_index": 2}).encode() + b"\n", "line 3 is not the row")):
        path.write_bytes(b"".join(lines[:2] + [bad] + lines[3:]))
        chunks, got = RowLog(path, plan(), ("continuation",), HEADER).resume()
        assert chunks == 1 and got.startswith(why)


def test_rows_made_under_another_header_are_discarded_not_mixed(tmp_path):
    path = tmp_path / "g.jsonl"
    written(path, plan())
    chunks, why = RowLog(path, plan(), ("continuation",), HEADER | {"batch_size": 3}).resume()
    assert chunks == 0 and "were discarded" in why
    assert path.read_bytes() == b""
    assert json.loads(path.with_name("g.jsonl.header.json").read_text()) == HEADER | {"batch_size": 3}
