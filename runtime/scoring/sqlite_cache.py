"""An sqlite cache file that is never trusted blindly: a damaged one is moved aside and started afresh.

A cache only saves work, so losing it must cost time, never a run. A file damaged by a disk fault, a
copy cut short or a stray write used to end every score job in a raw `sqlite3.DatabaseError`. Here:
- damage is detected three ways: sqlite's own errors (`SQLITE_CORRUPT`, `SQLITE_NOTADB`) on any
  statement, `PRAGMA quick_check` when the file is opened, and a CRC-32 stored with every row and checked
  on every read (sqlite has no checksums: a byte flipped inside a stored score would otherwise be served
  as a score);
- a damaged file (and its `-wal` / `-shm` companions) is renamed `<name>.corrupt-<UTC timestamp>` beside
  it, with a warning on stderr, and a new empty file takes its place; the caller's statement is retried
  on it, so the job goes on and rescores what was lost;
- several processes share a file: one that finds damage renames the file, under a lock file beside it,
  only if it is still the one it opened (same inode), so a process that comes late never throws away the
  new file another one started.
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from compiler.errors import StageError

T = TypeVar("T")

CORRUPT_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
"""Primary sqlite result codes that mean a damaged file (not a busy lock, not a full disk)."""
COMPANIONS = ("-wal", "-shm")


class DamagedCache(Exception):
    """A cache file failed a check sqlite itself does not make (quick_check, a row's checksum)."""


def row_check(*fields: Any) -> int:
    """CRC-32 of a row's fields (floats by their exact repr): stored with the row, checked on read."""
    return zlib.crc32("\x1f".join(repr(f) for f in fields).encode("utf-8"))


def is_damage(exc: BaseException) -> bool:
    if isinstance(exc, DamagedCache):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.DatabaseError) and code is not None and code & 0xFF in CORRUPT_CODES


def move_aside(path: Path, reason: str) -> Path:
    """Rename a damaged cache file and its companions to `<name>.corrupt-<UTC timestamp>[-wal|-shm]`."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}-{os.getpid()}")
    for suffix in ("", *COMPANIONS):
        try:
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
        except FileNotFoundError:
            pass
    print(f"warning: the cache {path} is damaged ({reason}); moved it aside to {aside.name} and started a new "
          f"one: what it held is computed again (delete the .corrupt file once you no longer need it)",
          file=sys.stderr, flush=True)
    return aside


@dataclass(frozen=True)
class Layout:
    """The tables a cache file holds: `version` is the layout this code writes (`PRAGMA user_version`; 0 is
    the first one, which set none), `upgrade(db)` creates its tables in a new file or migrates an older
    layout's rows into them, and `name` says which cache an error is about."""

    name: str
    version: int
    upgrade: Callable[[sqlite3.Connection], None]


class SqliteCacheFile:
    """One connection to a cache file, rebuilt when the file turns out to be damaged.

    A new connection brings the file to its `layout` (a newer layout stops the run: this code cannot read
    it) inside `BEGIN IMMEDIATE`, so processes opening the same file at once migrate it once. Reads go
    through `read`, writes through `write` (one `BEGIN IMMEDIATE` transaction): both retry once on a new
    file if they meet damage.
    """

    def __init__(self, path: Path, layout: Layout, busy_timeout_s: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._layout = layout
        self._busy_timeout_s = busy_timeout_s
        self._db: sqlite3.Connection | None = None
        self._inode = 0
        self._open()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; `write` opens its own BEGIN IMMEDIATE.
        db = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: atomic and safe against a killed process
            problems = [row[0] for row in db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise DamagedCache("; ".join(problems[:3]))
            self._transaction(db, self._setup)
        except BaseException:
            db.close()
            raise
        return db

    def _setup(self, db: sqlite3.Connection) -> None:
        """Bring the file to `layout.version` (inside the opener's write transaction)."""
        found, layout = db.execute("PRAGMA user_version").fetchone()[0], self._layout
        if found == layout.version:
            return
        if found > layout.version:
            raise StageError(f"the {layout.name} {self.path} was written by a newer mixsteer (layout {found}; this "
                             f"one reads {layout.version}): update mixsteer")
        layout.upgrade(db)
        db.execute(f"PRAGMA user_version = {layout.version}")

    def _open(self, opened: int | None = None) -> None:
        """Connect; a damaged file is moved aside first if it is still the one found (`opened`: the inode
        this object had open; else the one there before connecting)."""
        seen = _inode(self.path) if opened is None else opened
        try:
            self._db = self._connect()
        except (sqlite3.DatabaseError, DamagedCache) as exc:
            if not is_damage(exc):
                raise
            self._move_aside_if_unchanged(seen, exc)
            self._db = self._connect()
        self._inode = _inode(self.path)

    def _move_aside_if_unchanged(self, seen: int | None, exc: BaseException) -> None:
        """Another process that met the same damage may have moved the file aside and started a new one
        already: that new file is left alone. The check and the rename happen under a lock file beside the
        cache, so two processes cannot both rename."""
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if seen is not None and _inode(self.path) == seen:
                move_aside(self.path, _reason(exc))
        finally:
            os.close(fd)  # releases the lock

    def _recover(self, exc: BaseException) -> None:
        """Move the damaged file aside (unless another process already did) and open a new one."""
        if self._db is not None:
            self._db.close()
            self._db = None
        self._move_aside_if_unchanged(self._inode, exc)
        self._open(opened=_inode(self.path))

    def _guarded(self, op: Callable[[], T]) -> T:
        try:
            return op()
        except (sqlite3.DatabaseError, DamagedCache) as exc:
            if not is_damage(exc):
                raise
            self._recover(exc)
            return op()

    def read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """`op(db)` for a read; `op` raises `DamagedCache` when a row fails its check."""
        return self._guarded(lambda: op(self._connection()))

    def write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """`op(db)` in one write transaction (waits on the busy timeout for other writers)."""
        return self._guarded(lambda: self._transaction(self._connection(), op))

    @staticmethod
    def _transaction(db: sqlite3.Connection, op: Callable[[sqlite3.Connection], T]) -> T:
        db.execute("BEGIN IMMEDIATE")  # take the write lock now: waits on the busy timeout
        try:
            result = op(db)
        except BaseException:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # a damaged file may refuse even this; the connection is replaced anyway
            raise
        db.execute("COMMIT")
        return result

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise ValueError(f"the cache {self.path} is closed")
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
