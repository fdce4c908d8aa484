"""The queue file: `echo v42 > /var/lib/zdd/queue`.

Claiming: zdd atomically exchanges the queue with a fresh empty file (renameat2 RENAME_EXCHANGE), so
`queue` always exists with its permissions, and every byte a writer finished writing lands either in
the claimed file or in the new queue, never nowhere. A writer that opened the queue just before the
exchange writes into the claimed file; zdd keeps reading a claimed file for CLAIM_GRACE seconds.
Claimed files are named .claim-* in the state dir, so a restart finds what a crash left unread; how far
each was read is saved with the requests it held (see offsets()), so a restart reads nothing twice.

Only whole lines are taken: a writer may emit `web v4` and `2\n` in two writes. A last line without a
newline (`echo -n v2 > queue`) counts once nobody has written to the claim for LINE_QUIET seconds. A line
longer than MAX_LINE_BYTES (no tag is) is skipped through its newline with one log line; the lines of
other writers around it are kept.
"""

import ctypes
import errno
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger("zdd.queue")

CLAIM_PREFIX = ".claim-"
CLAIM_GRACE = 5.0  # seconds a claimed file is kept for writers that opened the queue before the claim
READ_CHUNK = 64 * 1024
MAX_LINE_BYTES = 4096  # a reference is at most a few hundred bytes; longer lines are refused unread
LINE_QUIET = 1.0  # seconds without a write before a last line without newline counts as finished
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
    """One claimed file: taken up to `offset`; removed once quiet for CLAIM_GRACE."""

    path: Path
    offset: int = 0
    claimed_at: float = field(default_factory=time.monotonic)  # last time a line was taken from it
    size: int = -1  # the size last seen, and when it last changed: how long the writers have been quiet
    changed_at: float = field(default_factory=time.monotonic)
    skipping: bool = False  # inside an oversize line: dropped through its newline


@dataclass(frozen=True)
class Entry:
    """One line a writer finished, as claimed from the queue."""

    line: str
    claimed_at: float  # epoch seconds
    uid: int = -1  # who asked, as the kernel knows it (the owner of a dropped request); -1: the queue file
    # When it was written, as far as the file says (its mtime): newest wins across the queue and the drop.
    written_at: float = 0.0


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
            f = open(claim.path, "rb")
        except FileNotFoundError:
            self.claims.pop(claim.path, None)
            return []
        taken: list[bytes] = []
        with f:
            now = time.monotonic()
            st = os.fstat(f.fileno())
            size, written_at = st.st_size, st.st_mtime
            if size != claim.size:
                claim.size, claim.changed_at = size, now
            f.seek(claim.offset)
            pending = b""  # bytes after the last newline read so far
            while chunk := f.read(READ_CHUNK):
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    claim.offset += len(line) + 1
                    if claim.skipping:
                        claim.skipping = False  # the newline that ends an oversize line
                    elif len(line) > MAX_LINE_BYTES:
                        self._refuse_oversize(claim)
                    else:
                        taken.append(line)
                if len(pending) > MAX_LINE_BYTES:  # still no newline: drop what is read, keep skipping
                    if not claim.skipping:
                        self._refuse_oversize(claim)
                        claim.skipping = True
                    claim.offset += len(pending)
                    pending = b""
            if pending and now - claim.changed_at >= LINE_QUIET:
                claim.offset += len(pending)
                if not claim.skipping:
                    taken.append(pending)  # `echo -n v2 > queue`: finished, since nobody writes any more
                claim.skipping = False
        if taken:
            claim.claimed_at = now
        wall = time.time()
        return [Entry(line.decode("utf-8", errors="replace"), wall, written_at=written_at) for line in taken]

    @staticmethod
    def _refuse_oversize(claim: Claim) -> None:
        log.error(
            "queue: a line of more than %d bytes was refused unread (%s, byte %d); the lines around it count",
            MAX_LINE_BYTES,
            claim.path.name,
            claim.offset,
        )

    def _forget_quiet_claims(self) -> None:
        now = time.monotonic()
        for path, claim in list(self.claims.items()):
            if now - max(claim.claimed_at, claim.changed_at) >= CLAIM_GRACE:
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
    """`zdd deploy` drops one file per request in <state_dir>/requests. The file's owner is the requester's
    uid, as the kernel recorded it, which a line in the shared queue file cannot tell.

    The deployer (a member of group zdd), root and the agent (user zdd) are three users. The directory is
    zdd:zdd 3770: group zdd may create files; setgid gives every file the group zdd, so the agent may read
    it (mode 0640); sticky keeps members from removing each other's files, while the agent, the directory's
    owner, may. A member may also drop a FIFO, a directory or a symlink to a secret: each file is opened
    without following links and without blocking, only regular files are read, and anything else is set
    aside (renamed *.req.rejected) with one log line, never blocking the other requests or the queue.
    """

    MODE = 0o3770

    def __init__(self, directory: Path):
        self.directory = directory
        self._stuck: set[str] = set()  # refused files that could not be set aside: logged once

    def ensure_exists(self) -> None:
        try:
            self.directory.mkdir(mode=0o770)
        except FileExistsError:
            pass
        st = os.stat(self.directory)
        try:
            if st.st_gid != os.stat(self.directory.parent).st_gid:
                os.chown(self.directory, -1, os.stat(self.directory.parent).st_gid)
            if stat.S_IMODE(st.st_mode) != self.MODE:
                os.chmod(self.directory, self.MODE)  # also fixes a directory an older zdd made 1770
        except PermissionError as err:
            log.warning("queue: cannot set %s to mode %o: %s", self.directory, self.MODE, err.strerror)

    def take(self) -> list[tuple[Path, Entry]]:
        taken = []
        for path in sorted(self.directory.glob("*" + REQUEST_SUFFIX)):
            if path.name in self._stuck:
                continue
            try:
                data, owner, written_at = self._read(path)
            except FileNotFoundError:
                continue
            except _NotARequest as err:
                self._set_aside(path, str(err))
                continue
            now = time.time()
            lines = data.decode("utf-8", errors="replace").splitlines() or [""]
            taken.extend((path, Entry(line, now, owner, written_at)) for line in lines)
        return taken

    @staticmethod
    def _read(path: Path) -> tuple[bytes, int, float]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise _NotARequest("a symbolic link") from None
            owner = os.lstat(path)
            raise _NotARequest(
                f"cannot be opened by zdd ({err.strerror}; uid {owner.st_uid}, gid {owner.st_gid}, "
                f"mode {stat.S_IMODE(owner.st_mode):o})"
            ) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _NotARequest(f"not a regular file ({_kind(st.st_mode)}) of uid {st.st_uid}")
            if st.st_size > MAX_REQUEST_BYTES:
                raise _NotARequest(f"{st.st_size} bytes from uid {st.st_uid}, more than {MAX_REQUEST_BYTES}")
            # The writer sets the mtime it likes (touch -d): never later than now, so nobody jumps the queue.
            return os.read(fd, MAX_REQUEST_BYTES + 1)[:MAX_REQUEST_BYTES], st.st_uid, min(st.st_mtime, time.time())
        finally:
            os.close(fd)

    def _set_aside(self, path: Path, why: str) -> None:
        aside = path.with_name(f"{path.name}.rejected")
        try:
            os.rename(path, aside)
        except OSError as err:
            self._stuck.add(path.name)
            log.error("queue: request %s refused: %s; cannot set it aside (%s)", path.name, why, err.strerror)
            return
        log.error("queue: request %s refused: %s; set aside as %s", path.name, why, aside.name)

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
            os.fchmod(fd, 0o640)  # the agent reads it as a member of the file's group...
            try:
                os.fchown(fd, -1, os.stat(directory).st_gid)  # ...zdd (setgid gives it; this makes sure)
            except PermissionError:
                pass
        finally:
            os.close(fd)
        final = directory / f"{time.time_ns()}-{os.getpid()}{REQUEST_SUFFIX}"
        os.rename(tmp, final)
        return final


class _NotARequest(Exception):
    """A file in the request drop that zdd will not read."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file"


class _Wake(FileSystemEventHandler):
    def __init__(self, queue: Path, wake: Callable[[], None]):
        self.queue, self.wake = str(queue), wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        # A finished write is a close (`echo x > queue`); an atomic writer gives a create or a move.
        if event.event_type not in ("closed", "created", "moved"):
            return
        paths = (str(event.src_path), str(getattr(event, "dest_path", "") or ""))
        if any(
            p == self.queue or os.path.basename(p).startswith(CLAIM_PREFIX) or p.endswith(REQUEST_SUFFIX) for p in paths
        ):
            self.wake()


class QueueWatcher:
    """inotify (via watchdog) on the state dir; calls `wake` whenever the queue may hold something."""

    def __init__(self, queue: Path, wake: Callable[[], None], requests: Path | None = None):
        self.observer = Observer()
        self.observer.schedule(_Wake(queue, wake), str(queue.parent), recursive=False)
        if requests:
            self.observer.schedule(_Wake(queue, wake), str(requests), recursive=False)

    def start(self) -> None:
        self.observer.start()

    def stop(self) -> None:
        if self.observer.is_alive():  # an agent that failed at start-up never started it
            self.observer.stop()
            self.observer.join(timeout=5)
