"""A real sd_notify socket (unix datagram) that records what the agent tells "systemd"."""

import socket
import threading
import time
from pathlib import Path


class NotifySocket:
    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode(errors="replace")))

    def lines(self) -> list[str]:
        return [line for _, message in list(self.messages) for line in message.splitlines()]

    def statuses(self) -> list[str]:
        """Every STATUS= the agent sent, in order, without the prefix."""
        return [line[len("STATUS=") :] for line in self.lines() if line.startswith("STATUS=")]

    def wait_for(self, wanted: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(line.startswith(wanted) for line in self.lines()):
                return
            time.sleep(0.05)
        raise AssertionError(f"no {wanted!r} from the agent within {timeout}s; got {self.lines()[-10:]}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
