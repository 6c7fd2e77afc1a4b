"""End a `mixsteer` process explicitly, without the interpreter's teardown.

`mixsteer check` opens local sources through `datasets`' streaming readers, which scan Parquet on Arrow's
C++ thread pools. At exit the process still holds those pools' std::threads (seen with gdb after a
`check`: Arrow's CPU pool, two workers, and its IO pool, beside jemalloc's and OpenBLAS's C threads), and
they are torn down by C++ static destructors after `Py_FinalizeEx`. "terminate called without an active
exception" is std::terminate from that teardown: a std::thread destroyed while joinable, or an Arrow worker
ended by CPython (`pthread_exit`) inside a noexcept C++ frame when it touches a Python object after
finalization began (apache/arrow#34314, #39862, #45017; huggingface/datasets#7566: a streamed Parquet read
abandoned mid-file). It hit 1 run in 8 under load, after "ok" was printed, as exit 134. Nothing of ours is
left to do at that point, so the process ends the way a finished command should: Python's own threads are
joined and its exit handlers run (temp folders, logging), the streams are flushed, and `os._exit` skips the
teardown those pools race with.
"""
from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_process(code: int) -> NoReturn:
    """Join Python's own threads, run exit handlers, flush stdout/stderr, then end with `code`."""
    threading._shutdown()  # what interpreter shutdown does first: join non-daemon threads, stop executors
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`mixsteer plan | head`) or a closed stream
            pass
    os._exit(code)
