"""Talking to systemd: sd_notify (READY, STATUS, WATCHDOG, RELOADING, STOPPING) and journald-aware logging."""

import logging
import os
import socket
import struct
import sys

import sdnotify

from . import logcontext

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, 25: 5, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
NOTICE = 25  # deploy milestones: between info and warning, as syslog's "notice"
logging.addLevelName(NOTICE, "NOTICE")


class Notifier:
    """sd_notify through the sdnotify package; silent (and cheap) when NOTIFY_SOCKET is unset."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        # debug=False: a notify that fails (systemd gone during shutdown) must never break a deploy.
        self._notifier = sdnotify.SystemdNotifier(debug=False) if self.enabled else None
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_interval = int(usec) / 2e6 if watched else None  # ping at half the timeout
        self.last_status = ""

    def send(self, message: str) -> None:
        if self._notifier:
            self._notifier.notify(message)

    def ready(self, status: str) -> None:
        self.status(status)
        self.send("READY=1")

    def status(self, text: str) -> None:
        if text != self.last_status:
            self.last_status = text
            self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        if self.watchdog_interval:
            self.send("WATCHDOG=1")

    def reloading(self) -> None:
        self.send("RELOADING=1")

    def stopping(self, status: str, extend_usec: int = 0) -> None:
        self.last_status = status
        extend = f"\nEXTEND_TIMEOUT_USEC={extend_usec}" if extend_usec else ""
        self.send(f"STOPPING=1\nSTATUS={status}{extend}")


def under_journal() -> bool:
    """stderr is connected to journald (JOURNAL_STREAM names its device:inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


JOURNAL_SOCKET = "/run/systemd/journal/socket"


def journal_payload(fields: dict[str, str]) -> bytes:
    """journald's native protocol: KEY=value lines; a value with a newline goes length-prefixed."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", errors="replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """Sends each record to journald with its priority and the deploy's ZDD_* fields."""

    def __init__(self, socket_path: str = JOURNAL_SOCKET, identifier: str = "zdd"):
        super().__init__()
        self.socket_path, self.identifier = socket_path, identifier
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {
                "MESSAGE": self.format(record),
                "PRIORITY": str(_PRIORITY.get(record.levelno, 6)),
                "SYSLOG_IDENTIFIER": self.identifier,
                "CODE_FUNC": record.funcName,
                "ZDD_LOGGER": record.name,
                **logcontext.fields(),
            }
            self.sock.sendto(journal_payload(fields), self.socket_path)
        except OSError:
            self.handleError(record)


class JournalPrefixFormatter(logging.Formatter):
    """`<N>message`: journald reads the priority from the prefix (SyslogLevelPrefix=yes)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", " | ")
        return f"<{_PRIORITY.get(record.levelno, 6)}>{text}"


def setup_logging(verbose: bool = False) -> None:
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    if under_journal() and os.path.exists(JOURNAL_SOCKET):
        handler = JournalHandler()
    elif under_journal():
        handler.setFormatter(JournalPrefixFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger("zdd")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
