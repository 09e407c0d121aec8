"""Where stage messages wait for the broker's acknowledgement: a durable journal, or memory.

Every stage message is written here BEFORE it is handed to the network, and stays until the broker
acknowledges it (PUBACK). The MQTT sink needs four operations, whatever keeps the messages:
``put`` (append, in order), ``peek`` (the oldest unacknowledged after a cursor), ``ack`` and ``len``.

* :class:`Outbox` keeps them in memory: bounded, the OLDEST evicted (and counted) when full.
* :class:`Journal` keeps them in SQLite (WAL mode) in the state directory, so that what the broker has not
  acknowledged survives a broker outage AND a daemon restart (crash, SIGKILL, power loss up to the last
  few commits with ``synchronous = "normal"``) and is re-sent, in order, with its original payload
  (timestamps and stable ``id``) after the next start. It also keeps the retained messages a restart must
  restore (each device's latest ``state`` and its ``availability``).

Why the journal degrades instead of failing: a night's live stages matter more than their durability. When
the state directory cannot be written (full, read-only, removed, locked by another edged), the journal logs
ONE error line, copies whatever it can still read of its unacknowledged rows into an :class:`Outbox` and
goes on from memory for the rest of the run; ``memory_only`` counts the stage messages accepted that way.
Rows it could not send stay on disk and go out after a restart with a usable directory (duplicates are
harmless: consumers drop them by ``id``).

Disk use is bounded (the policy documented in docs/mqtt.md):

* acknowledged rows are kept ``retention_hours`` (a local record of recent nights), then pruned
  (``pruned``); 0 deletes them on acknowledgement;
* the database never uses more than ``max_bytes``: when a write takes it over, acknowledged rows go first,
  then the OLDEST unacknowledged rows (``discarded``, logged), so the newest stages always get through.

Not thread-safe: the sink calls every method under its own lock. One connection, used from the caller's
thread (put) and paho's network thread (ack); ``check_same_thread=False`` because that lock serialises them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

JOURNAL_FILE: Final = "journal.sqlite3"
LOCK_FILE: Final = "journal.lock"
SCHEMA_VERSION: Final = 1
PRUNE_EVERY: Final = 60.0  # seconds between pruning passes over acknowledged rows
WAL_LIMIT: Final = 4 << 20  # bytes a checkpointed WAL file is truncated to (SQLite's journal_size_limit)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- AUTOINCREMENT: a seq is never reused, even after every row was pruned, so the sender's cursor
-- (the highest seq handed to paho on this connection) can never skip a new row.
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    written REAL NOT NULL,  -- POSIX seconds
    acked REAL              -- POSIX seconds of the PUBACK; NULL while unacknowledged
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (seq) WHERE acked IS NULL;
CREATE INDEX IF NOT EXISTS outbox_acked ON outbox (acked) WHERE acked IS NOT NULL;
CREATE TABLE IF NOT EXISTS retained (topic TEXT PRIMARY KEY, payload BLOB NOT NULL, written REAL NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    seq: int  # strictly increasing; the order messages are sent in
    topic: str
    payload: bytes


class Outbox:
    """Stage messages not yet acknowledged by the broker, in memory, oldest first, at most ``maxlen``.

    What is in flight belongs to a connection, not to the queue, so the sink tracks it and simply peeks
    from the start again after a reconnect.
    """

    def __init__(self, maxlen: int, *, next_seq: int = 1) -> None:
        if maxlen < 1:
            raise ValueError("an outbox must hold at least one message")
        self.maxlen = maxlen
        self.dropped = 0
        self._entries: OrderedDict[int, OutboxEntry] = OrderedDict()
        self._next_seq = next_seq

    def put(self, topic: str, payload: bytes) -> int:
        """Append a message; when full, evict the OLDEST (the newest stage is the one a user looks at)."""
        while len(self._entries) >= self.maxlen:
            self._entries.popitem(last=False)
            self.dropped += 1
        seq = self._next_seq
        self._next_seq += 1
        self._entries[seq] = OutboxEntry(seq, topic, payload)
        return seq

    def adopt(self, entries: Iterable[OutboxEntry]) -> None:
        """Take over entries that keep their seq (from a journal that failed), oldest first."""
        for entry in entries:
            while len(self._entries) >= self.maxlen:
                self._entries.popitem(last=False)
                self.dropped += 1
            self._entries[entry.seq] = entry
            self._next_seq = max(self._next_seq, entry.seq + 1)

    def peek(self, after: int, limit: int) -> list[OutboxEntry]:
        """Up to ``limit`` oldest entries with ``seq > after``, in order, without removing them."""
        out: list[OutboxEntry] = []
        if limit <= 0:
            return out
        # Entries are in seq order and the sender's cursor sits near the head (at most one window in),
        # so this walk is short.
        for seq, entry in self._entries.items():
            if seq > after:
                out.append(entry)
                if len(out) >= limit:
                    break
        return out

    def ack(self, seq: int) -> bool:
        """Forget an acknowledged message. False if it was unknown (already acked, or evicted meanwhile)."""
        return self._entries.pop(seq, None) is not None

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True, slots=True)
class JournalPolicy:
    """How much disk the journal may use and how safely it writes (``[journal]`` in the config)."""

    retention_hours: float = 24.0  # acknowledged rows are kept this long; 0: deleted on acknowledgement
    max_bytes: int = 256 << 20  # the database's size cap (acknowledged rows go first, then the oldest pending)
    synchronous: str = "normal"  # "normal": survives a crash of edged; "full": also a power cut (fsync per write)
    memory_fallback: int = 100_000  # messages held in memory if the journal becomes unusable

    def __post_init__(self) -> None:
        if self.retention_hours < 0 or self.max_bytes < 1 or self.memory_fallback < 1:
            raise ValueError("need retention_hours >= 0, max_bytes >= 1 and memory_fallback >= 1")
        if self.synchronous not in ("normal", "full"):
            raise ValueError("synchronous must be 'normal' or 'full'")


class Journal:
    """The sink's queue: SQLite in ``directory`` while it works, memory after it failed (or without a
    directory). See the module docstring. Use :meth:`open` or :meth:`memory`."""

    def __init__(self, policy: JournalPolicy, path: Path | None) -> None:
        self.policy = policy
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._memory: Outbox | None = None
        self._pending = 0
        self._last_seq = 0
        self._retained: dict[str, bytes] = {}
        self._next_prune = 0.0
        self._used_upper = 0  # an upper bound of used_bytes(), kept without asking SQLite on every write
        self._page_size = 4096
        self.failure: str | None = None  # why the journal is not durable (None while it is)
        self.n_discarded = 0  # oldest pending rows deleted by the size cap
        self.n_pruned = 0  # acknowledged rows pruned
        self.n_memory_only = 0  # stage messages accepted while not durable
        self.n_recovered = 0  # unacknowledged rows found at open (from an earlier run)

    # ------------------------------------------------------------------------------------ opening

    @classmethod
    def memory(cls, maxlen: int) -> Journal:
        """A queue in memory only: nothing survives a restart (no state directory, or journal disabled)."""
        journal = cls(JournalPolicy(memory_fallback=maxlen), None)
        journal._memory = Outbox(maxlen)
        journal.failure = "disabled"
        return journal

    @classmethod
    def open(cls, directory: Path, policy: JournalPolicy | None = None) -> Journal:
        """Open (or create) the journal in ``directory``. Never raises for an unusable directory: it logs
        one error and returns a journal in memory (see the module docstring)."""
        journal = cls(policy or JournalPolicy(), Path(directory) / JOURNAL_FILE)
        try:
            journal._open_db(Path(directory))
        except (OSError, sqlite3.Error) as exc:
            journal._degrade(exc, "open it")
        return journal

    def _open_db(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Two edged processes on one journal would send (and acknowledge) each other's rows: refuse.
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OSError(f"{directory} is in use by another edged process (give each its own "
                          "[node] state_dir)") from None
        self._lock_fd = fd
        assert self.path is not None
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=1.0)
        self._db = db
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL mode (got {mode!r})")
        db.execute(f"PRAGMA synchronous={self.policy.synchronous.upper()}")
        db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
        db.executescript(_SCHEMA)
        version = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if version is None:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(version[0]) != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"journal schema {version[0]} is not {SCHEMA_VERSION}: move {self.path} away")
        self._pending = db.execute("SELECT count(*) FROM outbox WHERE acked IS NULL").fetchone()[0]
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        self._last_seq = int(row[0]) if row else 0
        self._retained = {topic: bytes(payload) for topic, payload in db.execute("SELECT topic, payload FROM retained")}
        self.n_recovered = self._pending
        self._prune(time.time())
        self._page_size = db.execute("PRAGMA page_size").fetchone()[0]
        self._used_upper = self.used_bytes()
        if self._pending:
            log.info("journal %s: %d stage message(s) of an earlier run not acknowledged yet; re-sending them first",
                     self.path, self._pending)
        else:
            log.info("journal %s opened", self.path)

    # -------------------------------------------------------------------------------- the queue

    @property
    def durable(self) -> bool:
        return self._db is not None

    @property
    def dropped(self) -> int:
        """Stage messages lost from the queue: the size cap's discards plus memory evictions."""
        return self.n_discarded + (self._memory.dropped if self._memory is not None else 0)

    def put(self, topic: str, payload: bytes, retain: Sequence[tuple[str, bytes]] = ()) -> int:
        """Append a stage message (and, in the same transaction, the retained messages it implies)."""
        if self._db is not None:
            now = time.time()
            try:
                with self._transaction() as db:
                    cur = db.execute("INSERT INTO outbox (topic, payload, written) VALUES (?, ?, ?)",
                                     (topic, payload, now))
                    for rtopic, rpayload in retain:
                        self._upsert_retained(db, rtopic, rpayload, now)
            except sqlite3.Error as exc:
                self._degrade(exc, "write to it")
            else:
                seq = int(cur.lastrowid)
                self._last_seq = seq
                self._pending += 1
                # One insert grows the file by at most its bytes plus a few pages (a leaf split in the table
                # and in each index; interior splits are rarer still): measure only when this bound says so.
                self._used_upper += len(payload) + len(topic) + 4 * self._page_size
                try:
                    if self._used_upper > self.policy.max_bytes:
                        self._enforce_cap()
                    if now >= self._next_prune:
                        self._prune(now)
                except sqlite3.Error as exc:
                    self._degrade(exc, "keep it within its bounds")  # the row is adopted by memory
                return seq
        self.n_memory_only += 1
        return self._fallback().put(topic, payload)

    def remember(self, topic: str, payload: bytes) -> None:
        """Keep a retained message for the next start (a device's availability)."""
        if self._db is not None:
            try:
                with self._transaction() as db:
                    self._upsert_retained(db, topic, payload, time.time())
            except sqlite3.Error as exc:
                self._degrade(exc, "write to it")

    def retained(self) -> dict[str, bytes]:
        """The retained messages found at open (topic -> payload)."""
        return dict(self._retained)

    def recent(self, topic_suffix: str, since: float) -> list[bytes]:
        """Payloads of the messages still held (unacknowledged, or acknowledged within ``retention_hours``)
        whose topic ends with ``topic_suffix`` and that were written at or after ``since`` (POSIX s), oldest
        first. For rebuilding in-memory views after a restart, e.g. the night so far."""
        if self._db is None:
            return []
        try:
            rows = self._db.execute("SELECT topic, payload FROM outbox WHERE written >= ? ORDER BY seq", (since,))
            return [bytes(payload) for topic, payload in rows if topic.endswith(topic_suffix)]
        except sqlite3.Error as exc:
            self._degrade(exc, "read it")
            return []

    def peek(self, after: int, limit: int) -> list[OutboxEntry]:
        if self._db is not None:
            try:
                rows = self._db.execute(
                    "SELECT seq, topic, payload FROM outbox WHERE acked IS NULL AND seq > ? ORDER BY seq LIMIT ?",
                    (after, limit)).fetchall()
                return [OutboxEntry(seq, topic, bytes(payload)) for seq, topic, payload in rows]
            except sqlite3.Error as exc:
                self._degrade(exc, "read it")
        return self._fallback().peek(after, limit)

    def ack(self, seq: int) -> bool:
        if self._db is not None:
            try:
                if self.policy.retention_hours > 0:
                    cur = self._db.execute("UPDATE outbox SET acked = ? WHERE seq = ? AND acked IS NULL",
                                           (time.time(), seq))
                else:
                    cur = self._db.execute("DELETE FROM outbox WHERE seq = ? AND acked IS NULL", (seq,))
                if cur.rowcount:
                    self._pending -= 1
                return cur.rowcount > 0
            except sqlite3.Error as exc:
                self._degrade(exc, "mark a message acknowledged in it")
        return self._fallback().ack(seq)

    def __len__(self) -> int:
        # Once closed, what is left unacknowledged on disk for the next start.
        return len(self._memory) if self._memory is not None else self._pending

    @property
    def counters(self) -> dict[str, int]:
        """durable (1/0), recovered (unacknowledged rows found at open), discarded (size cap), pruned
        (acknowledged rows past retention), memory_only (accepted while not durable)."""
        return {"journal_durable": int(self.durable), "journal_recovered": self.n_recovered,
                "journal_discarded": self.n_discarded, "journal_pruned": self.n_pruned,
                "journal_memory_only": self.n_memory_only}

    def used_bytes(self) -> int:
        """Bytes of the database holding data (pages in use; free pages are reused before it grows)."""
        assert self._db is not None
        page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * page_size

    def close(self) -> None:
        """Checkpoint the WAL into the database and close. Idempotent; what is pending stays for next time."""
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with contextlib.suppress(sqlite3.Error):
                db.close()
            if self._pending:
                log.info("journal %s closed with %d stage message(s) not acknowledged: they are sent after the "
                         "next start", self.path, self._pending)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ---------------------------------------------------------------------------------- internals

    def _fallback(self) -> Outbox:
        if self._memory is None:  # only after close(): nothing should arrive then, but nothing may crash
            self._memory = Outbox(self.policy.memory_fallback, next_seq=self._last_seq + 1)
        return self._memory

    @contextlib.contextmanager
    def _transaction(self):
        assert self._db is not None
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")  # a full disk often fails here, when the WAL grows
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    @staticmethod
    def _upsert_retained(db: sqlite3.Connection, topic: str, payload: bytes, now: float) -> None:
        db.execute("INSERT INTO retained (topic, payload, written) VALUES (?, ?, ?) ON CONFLICT (topic) "
                   "DO UPDATE SET payload = excluded.payload, written = excluded.written", (topic, payload, now))

    def _prune(self, now: float) -> None:
        assert self._db is not None
        self._next_prune = now + PRUNE_EVERY
        cur = self._db.execute("DELETE FROM outbox WHERE acked IS NOT NULL AND acked < ?",
                               (now - self.policy.retention_hours * 3600.0,))
        self.n_pruned += max(0, cur.rowcount)

    def _enforce_cap(self) -> None:
        """Keep the database under ``max_bytes``: acknowledged rows first, then the oldest pending ones."""
        cap = self.policy.max_bytes
        self._used_upper = self.used_bytes()
        if self._used_upper <= cap:
            return
        assert self._db is not None
        cur = self._db.execute("DELETE FROM outbox WHERE acked IS NOT NULL")
        self.n_pruned += max(0, cur.rowcount)
        discarded = 0
        # Aim below the cap so that the next writes do not land here again at once.
        while self.used_bytes() > 0.9 * cap and self._pending > 1:
            batch = max(1, self._pending // 20)
            cur = self._db.execute("DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE acked IS NULL "
                                   "ORDER BY seq LIMIT ?)", (batch,))
            discarded += cur.rowcount
            self._pending -= cur.rowcount
        self._used_upper = self.used_bytes()
        if discarded:
            self.n_discarded += discarded
            log.warning("journal %s reached its size cap (%.1f MB): discarded the %d oldest unacknowledged stage "
                        "message(s), %d so far", self.path, cap / 1e6, discarded, self.n_discarded)

    def _degrade(self, exc: BaseException, doing: str) -> None:
        """Go on from memory after the journal failed: one error line, then keep what can still be read."""
        reason = _reason(exc)
        self.failure = f"cannot {doing}: {reason}"
        entries: list[OutboxEntry] = []
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                rows = db.execute("SELECT seq, topic, payload FROM outbox WHERE acked IS NULL ORDER BY seq "
                                  "LIMIT ?", (self.policy.memory_fallback,)).fetchall()
                entries = [OutboxEntry(seq, topic, bytes(payload)) for seq, topic, payload in rows]
            with contextlib.suppress(sqlite3.Error):
                db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self._memory = Outbox(self.policy.memory_fallback, next_seq=self._last_seq + 1)
        self._memory.adopt(entries)
        log.error("journal %s: %s; stage messages are kept in memory only from now on (up to %d, lost if edged "
                  "stops); live publishing goes on", self.path, self.failure, self.policy.memory_fallback)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}" + (f" ({exc.filename})" if exc.filename else "")
    return str(exc) or type(exc).__name__


def default_state_dir(environ: dict[str, str] | None = None) -> Path:
    """Where edged keeps its journal when ``[node] state_dir`` is empty: systemd's ``$STATE_DIRECTORY``
    (the unit's ``StateDirectory=``; the first one if several), else ``$XDG_STATE_HOME/edged``, else
    ``~/.local/state/edged``."""
    env = os.environ if environ is None else environ
    systemd = env.get("STATE_DIRECTORY", "")
    if systemd:
        return Path(systemd.split(":")[0])
    xdg = env.get("XDG_STATE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "edged"
