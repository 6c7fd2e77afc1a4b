"""End a `mixsteer` process explicitly, without the interpreter's teardown.

`mixsteer check` opens local sources through `datasets`' streaming readers, which scan Parquet on
Arrow's C++ thread pools (pyarrow: a CPU pool and an IO pool, std::threads that outlive every Python
object). A peek stops after a few records, so a scan is abandoned mid-file; its reader holds a Python
file object, and the last reference may be dropped by an Arrow worker. When that happens after
`Py_FinalizeEx` has begun, CPython ends the worker with `pthread_exit` inside a C++ destructor and
libstdc++ aborts the process: "terminate called without an active exception", exit 134, after the
command has printed "ok" (1 run in 8 under load). Nothing of ours is left to do at that point, so the
process ends the way a finished job should: exit handlers run (temp folders, logging), the streams are
flushed, and `os._exit` skips the teardown those pools race with.
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
