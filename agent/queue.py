"""The queue file: `echo v42 > /var/lib/zdd/queue`.

Claiming: zdd atomically exchanges the queue with a fresh empty file (renameat2 RENAME_EXCHANGE), so
`queue` always exists with its permissions, and every byte a writer finished writing lands either in
the claimed file or in the new queue, never nowhere. A writer that opened the queue just before the
exchange writes into the claimed file; zdd keeps reading a claimed file for CLAIM_GRACE seconds.
Claimed files are named .claim-* in the state dir, so a restart finds what a crash left unread; how far
each was read is saved with the requests it held (see offsets()), so a restart reads nothing twice.
"""

import ctypes
import errno
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger("zdd.queue")

CLAIM_PREFIX = ".claim-"
CLAIM_GRACE = 5.0  # seconds a claimed file is kept for writers that opened the queue before the claim
MAX_CLAIM_BYTES = 64 * 1024  # more than any honest batch of tags; the rest of a huge write is dropped
QUEUE_MODE = 0o660  # root and group zdd write; nobody else

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths. False where the kernel or filesystem cannot (caller falls back)."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def create_queue_file(path: Path, mode: int = QUEUE_MODE) -> Path:
    """Create an empty file with exactly `mode` (not the umask's), group copied from its directory."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        parent_gid = os.stat(path.parent).st_gid
        try:
            os.fchown(fd, -1, parent_gid)
        except PermissionError:
            pass  # not a member of the directory's group: keep ours
    finally:
        os.close(fd)
    return path


@dataclass
class Claim:
    """One claimed file: read up to `offset`; removed once quiet for CLAIM_GRACE."""

    path: Path
    offset: int = 0
    claimed_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Entry:
    """One line a writer finished, as claimed from the queue."""

    line: str
    claimed_at: float  # epoch seconds
    uid: int = -1  # who asked, as the kernel knows it (the owner of a dropped request); -1: the queue file


class QueueFile:
    def __init__(self, path: Path):
        self.path = path
        self.claims: dict[Path, Claim] = {}

    def offsets(self) -> dict[str, int]:
        """How far each open claim was read; saved with the entries so a restart reads nothing twice."""
        return {path.name: claim.offset for path, claim in self.claims.items()}

    def restore(self, offsets: dict[str, int]) -> None:
        for name, offset in offsets.items():
            path = self.path.with_name(name)
            if path.exists():
                self.claims[path] = Claim(path, offset)

    def ensure_exists(self) -> None:
        try:
            create_queue_file(self.path)
        except FileExistsError:
            pass

    def _claim_name(self) -> Path:
        return self.path.with_name(f"{CLAIM_PREFIX}{time.time_ns()}-{os.getpid()}")

    def claim(self) -> list[Entry]:
        """Take what writers left in the queue and in earlier claims; return complete entries."""
        self._claim_queue()
        for path in sorted(self.path.parent.glob(CLAIM_PREFIX + "*")):
            self.claims.setdefault(path, Claim(path))  # left by a crash, or by our exchange just now
        entries: list[Entry] = []
        for claim in list(self.claims.values()):
            entries.extend(self._read_new(claim))
        self._forget_quiet_claims()
        return entries

    def _claim_queue(self) -> None:
        try:
            if self.path.stat().st_size == 0:
                return
        except FileNotFoundError:
            self.ensure_exists()
            return
        spare = create_queue_file(self._claim_name())
        if exchange(spare, self.path):
            return  # `spare` now holds what was queued; `queue` is the fresh empty file
        os.unlink(spare)
        # Fallback without RENAME_EXCHANGE: for a moment there is no queue file.
        os.rename(self.path, self._claim_name())
        self.ensure_exists()

    def _read_new(self, claim: Claim) -> list[Entry]:
        try:
            with open(claim.path, "rb") as f:
                f.seek(claim.offset)
                data = f.read(MAX_CLAIM_BYTES + 1)
        except FileNotFoundError:
            self.claims.pop(claim.path, None)
            return []
        if not data:
            return []
        if len(data) > MAX_CLAIM_BYTES:
            log.error("queue: a write of more than %d bytes was refused whole (%s)", MAX_CLAIM_BYTES, claim.path.name)
            claim.offset = os.path.getsize(claim.path)
            return []
        # Everything read counts, a last line without newline too (`echo -n v2 > queue`): claims follow a
        # writer's close event, and `echo` writes its line in one write() call.
        claim.offset += len(data)
        claim.claimed_at = time.monotonic()
        now = time.time()
        return [Entry(line.decode("utf-8", errors="replace"), now) for line in data.splitlines()]

    def _forget_quiet_claims(self) -> None:
        now = time.monotonic()
        for path, claim in list(self.claims.items()):
            if now - claim.claimed_at >= CLAIM_GRACE:
                try:
                    if os.path.getsize(path) > claim.offset:
                        continue  # a late writer: read it first
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                del self.claims[path]

    @property
    def has_open_claims(self) -> bool:
        return bool(self.claims)


REQUEST_SUFFIX = ".req"
MAX_REQUEST_BYTES = 4096


class RequestDrop:
    """`zdd deploy` drops one file per request in <state_dir>/requests (mode 1770: group zdd may create,
    nobody may touch another's file). The file's owner is the requester's uid, as the kernel recorded
    it, which a line in the shared queue file cannot tell."""

    def __init__(self, directory: Path):
        self.directory = directory

    def ensure_exists(self) -> None:
        try:
            self.directory.mkdir(mode=0o1770)
        except FileExistsError:
            return
        os.chmod(self.directory, 0o1770)  # mkdir's mode passes through the umask
        try:
            os.chown(self.directory, -1, os.stat(self.directory.parent).st_gid)
        except PermissionError:
            pass

    def take(self) -> list[tuple[Path, Entry]]:
        taken = []
        for path in sorted(self.directory.glob("*" + REQUEST_SUFFIX)):
            try:
                with open(path, "rb") as f:
                    owner = os.fstat(f.fileno()).st_uid
                    data = f.read(MAX_REQUEST_BYTES + 1)
            except FileNotFoundError:
                continue
            if len(data) > MAX_REQUEST_BYTES:
                log.error("queue: request %s of more than %d bytes refused", path.name, MAX_REQUEST_BYTES)
                data = b""
            now = time.time()
            lines = data.decode("utf-8", errors="replace").splitlines() or [""]
            taken.extend((path, Entry(line, now, owner)) for line in lines)
        return taken

    @staticmethod
    def done(paths: list[Path]) -> None:
        """Called once the requests are saved in state: a crash before this reads them again, not never."""
        for path in set(paths):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    @staticmethod
    def submit(directory: Path, line: str) -> Path:
        """The CLI side: write the request whole under a temporary name, then rename it into view."""
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        try:
            os.write(fd, (line + "\n").encode())
            os.fchmod(fd, 0o640)
        finally:
            os.close(fd)
        final = directory / f"{time.time_ns()}-{os.getpid()}{REQUEST_SUFFIX}"
        os.rename(tmp, final)
        return final


class _Wake(FileSystemEventHandler):
    def __init__(self, queue: Path, wake: threading.Event):
        self.queue, self.wake = str(queue), wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        # A finished write is a close (`echo x > queue`); an atomic writer gives a create or a move.
        if event.event_type not in ("closed", "created", "moved"):
            return
        paths = (str(event.src_path), str(getattr(event, "dest_path", "") or ""))
        if any(
            p == self.queue or os.path.basename(p).startswith(CLAIM_PREFIX) or p.endswith(REQUEST_SUFFIX) for p in paths
        ):
            self.wake.set()


class QueueWatcher:
    """inotify (via watchdog) on the state dir; sets `wake` whenever the queue may hold something."""

    def __init__(self, queue: Path, wake: threading.Event, requests: Path | None = None):
        self.observer = Observer()
        self.observer.schedule(_Wake(queue, wake), str(queue.parent), recursive=False)
        if requests:
            self.observer.schedule(_Wake(queue, wake), str(requests), recursive=False)

    def start(self) -> None:
        self.observer.start()

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=5)
