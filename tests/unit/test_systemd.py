"""sd_notify against a real unix datagram socket; journald's native protocol and priority prefixes."""

import logging
import socket
import struct

import pytest

from tests.support.notify import NotifySocket
from zdd.logcontext import deploy_context
from zdd.systemd import NOTICE, JournalHandler, JournalPrefixFormatter, Notifier, journal_payload


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    sock = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock.path))
    yield sock
    sock.close()


def test_ready_status_stopping_reach_the_socket(notify_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    notifier = Notifier()
    assert notifier.watchdog_interval == 2.0  # half of WATCHDOG_USEC
    notifier.ready("idle; web v1 since 10:02")
    notifier.status("web: v1 -> v2: health 1/3")
    notifier.status("web: v1 -> v2: health 1/3")  # unchanged: not sent again
    notifier.watchdog()
    notifier.stopping("stopping after the deploy of web in progress", extend_usec=120_000_000)
    notify_socket.wait_for("EXTEND_TIMEOUT_USEC=")
    assert notify_socket.lines() == [
        "STATUS=idle; web v1 since 10:02",
        "READY=1",
        "STATUS=web: v1 -> v2: health 1/3",
        "WATCHDOG=1",
        "STOPPING=1",
        "STATUS=stopping after the deploy of web in progress",
        "EXTEND_TIMEOUT_USEC=120000000",
    ]


def test_watchdog_is_off_without_watchdog_usec_or_for_another_pid(notify_socket, monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert Notifier().watchdog_interval is None
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert Notifier().watchdog_interval is None


def test_without_notify_socket_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    notifier.ready("idle")  # must not raise
    assert not notifier.enabled


def parse_payload(data: bytes) -> dict[str, str]:
    fields, rest = {}, data
    while rest:
        line, sep, after = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            rest = after
        else:  # binary form: KEY\n<u64 length><value>\n
            (length,) = struct.unpack("<Q", after[:8])
            fields[line.decode()] = after[8 : 8 + length].decode()
            rest = after[8 + length + 1 :]
    return fields


def test_journal_payload_round_trips_multiline_values():
    fields = {"MESSAGE": "line one\nline two", "PRIORITY": "3"}
    assert parse_payload(journal_payload(fields)) == fields


def test_journal_handler_sends_priority_and_deploy_fields(tmp_path):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(tmp_path / "journal.sock"))
    server.settimeout(2)
    logger = logging.getLogger("zdd.test-journal")
    handler = JournalHandler(str(tmp_path / "journal.sock"))
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        with deploy_context("web", "v42", "20261127-100000-ab12"):
            logger.error("web: v41 -> v42: deploy failed: health check failed")
        logger.log(NOTICE, "zdd agent ready")
        first, second = parse_payload(server.recv(65536)), parse_payload(server.recv(65536))
    finally:
        logger.removeHandler(handler)
        server.close()
    assert first["PRIORITY"] == "3" and first["MESSAGE"].startswith("web: v41 -> v42")
    assert (first["ZDD_APP"], first["ZDD_TAG"], first["ZDD_DEPLOY_ID"]) == ("web", "v42", "20261127-100000-ab12")
    assert first["SYSLOG_IDENTIFIER"] == "zdd"
    assert second["PRIORITY"] == "5" and "ZDD_APP" not in second


@pytest.mark.parametrize(
    "level, prefix",
    [(logging.DEBUG, "<7>"), (logging.INFO, "<6>"), (NOTICE, "<5>"), (logging.WARNING, "<4>"), (logging.ERROR, "<3>")],
)
def test_stderr_lines_carry_their_priority(level, prefix):
    record = logging.LogRecord("zdd", level, __file__, 1, "web: step\nmore", None, None)
    assert JournalPrefixFormatter("%(message)s").format(record) == f"{prefix}web: step | more"
