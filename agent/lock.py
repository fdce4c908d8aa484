"""One agent per state dir and per snippet dir: flocks the kernel releases when the process dies, however
it dies. Two agents on one snippet dir (two state dirs) would overwrite each other's snippets and route
each other's apps."""

import fcntl
import os
from pathlib import Path

from .errors import ConfigError, TemporaryError


class StateLock:
    def __init__(self, state_dir: Path):
        self.path = state_dir / "agent.lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        # 0600: a member of group zdd who could open it could also flock it, and keep the agent from starting.
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except PermissionError:
            # Left by an earlier install whose zdd user had another uid (a purge and reinstall).
            os.unlink(self.path)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
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


class SnippetDirLock(StateLock):
    def __init__(self, snippet_dir: Path, state_dir: Path):
        super().__init__(snippet_dir)
        self.path = snippet_dir / ".zdd-agent.lock"
        self.state_dir = state_dir

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            super().acquire()
        except TemporaryError:
            raise ConfigError(
                f"caddy.snippet_dir {self.path.parent} is used by another zdd agent (another state dir than "
                f"{self.state_dir}); give each agent its own snippet dir"
            ) from None
