"""One agent per state dir: an flock the kernel releases when the process dies, however it dies."""

import fcntl
import os
from pathlib import Path

from .errors import TemporaryError


class StateLock:
    def __init__(self, state_dir: Path):
        self.path = state_dir / "agent.lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise TemporaryError(f"another zdd agent (pid {holder}) holds {self.path}; refusing to start") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
