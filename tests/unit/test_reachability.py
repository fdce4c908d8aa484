"""agent/reachability.py over real loopback sockets: which routed tasks zdd dns names in an SRV answer."""

import errno
import logging
import socket

import pytest

from zdd import reachability
from zdd.reachability import FORGET_AFTER, Reachability, unreachable
from zdd.routes import RouteTable, node_name


@pytest.fixture
def listening():
    """An address that accepts connections, and one where nothing listens (refused)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: the port is ours and refuses
    yield f"127.0.0.1:{server.getsockname()[1]}", f"127.0.0.1:{closed.getsockname()[1]}"
    server.close()
    closed.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_unreachable_names_the_addresses_that_refuse_or_do_not_answer_with_why(listening):
    up, refused = listening
    assert unreachable([up, refused], timeout=0.5) == {refused: (errno.ECONNREFUSED, "Connection refused")}
    assert unreachable([], timeout=0.5) == {}
    # A listener whose accept queue is full drops the next SYN: that connection never opens.
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    queued = [socket.create_connection(full.getsockname(), timeout=1)]
    try:
        silent = f"127.0.0.1:{full.getsockname()[1]}"
        assert unreachable([up, silent], timeout=0.3) == {silent: (0, "no answer within 300ms")}
    finally:
        for sock in queued:
            sock.close()
        full.close()


def test_a_task_that_refuses_is_left_out_until_it_accepts_again(listening, caplog):
    up, refused = listening
    clock = Clock()
    reachable = Reachability(clock)
    assert reachable("web", [up, refused]) == [up, refused]  # not probed yet: named
    with caplog.at_level(logging.INFO, logger="zdd.dns"):
        reachable.probe()
        assert reachable("web", [up, refused]) == [up]
        reachable.probe()  # told once, not at every probe
    assert [r.getMessage() for r in caplog.records] == [
        f"dns: web: the task at {refused} did not accept a connection (Connection refused); "
        "named only if no task of web does"
    ]
    # Never an answer with no task: one that fails some requests beats one that fails them all.
    assert reachable("web", [refused]) == [refused]


def _listener(port: int = 0) -> socket.socket:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(4)
    return server


def test_a_task_that_accepts_again_is_named_again(listening, caplog):
    up, _ = listening
    server = _listener()
    port = server.getsockname()[1]
    back = f"127.0.0.1:{port}"
    reachable = Reachability(Clock())
    reachable("web", [up, back])
    server.close()  # its node restarting, say
    reachable.probe()
    assert reachable("web", [up, back]) == [up]
    server = _listener(port)
    try:
        with caplog.at_level(logging.INFO, logger="zdd.dns"):
            reachable.probe()
        assert reachable("web", [up, back]) == [up, back]
        assert f"dns: web: the task at {back} accepts connections again; back in the answer" in caplog.messages
    finally:
        server.close()


@pytest.fixture
def probed(monkeypatch):
    """What each probe tried, and what it found: refused for the addresses in `refusing`."""
    record = {"rounds": [], "refusing": set(), "blocked": set()}

    def fake(addresses, timeout):
        record["rounds"].append(sorted(addresses))
        found = {a: (errno.ECONNREFUSED, "Connection refused") for a in addresses if a in record["refusing"]}
        found |= {a: (errno.EPERM, "Operation not permitted") for a in addresses if a in record["blocked"]}
        return found

    monkeypatch.setattr(reachability, "unreachable", fake)
    return record


def test_a_quiet_app_is_no_longer_probed_but_a_dead_task_stays_out_when_it_is_asked_again(probed):
    clock = Clock()
    reachable = Reachability(clock)
    probed["refusing"] = {"10.0.0.2:80"}
    reachable("web", ["10.0.0.1:80", "10.0.0.2:80"])
    reachable.probe()
    clock.now += FORGET_AFTER + 1  # no request, so no lookup, for a while
    reachable.probe()
    assert probed["rounds"] == [["10.0.0.1:80", "10.0.0.2:80"], []]
    assert reachable("web", ["10.0.0.1:80", "10.0.0.2:80"]) == ["10.0.0.1:80"]  # still known dead
    probed["refusing"] = set()
    reachable.probe()
    assert reachable("web", ["10.0.0.1:80", "10.0.0.2:80"]) == ["10.0.0.1:80", "10.0.0.2:80"]


def test_only_the_tasks_of_each_apps_last_answer_are_probed(probed):
    reachable = Reachability(Clock())
    reachable("web", ["10.0.0.1:80", "10.0.0.2:80"])
    reachable("web", ["10.0.0.3:80"])  # the app switched to another set
    reachable("api", ["10.0.0.9:81"])
    reachable.probe()
    assert probed["rounds"] == [["10.0.0.3:80", "10.0.0.9:81"]]


def test_a_task_this_hosts_rules_forbid_probing_is_named_and_told_once(probed, caplog):
    reachable = Reachability(Clock())
    probed["blocked"] = {"203.0.113.5:80"}
    with caplog.at_level(logging.INFO, logger="zdd.dns"):
        reachable("web", ["10.0.0.1:80", "203.0.113.5:80"])
        reachable.probe()
        reachable.probe()
    assert reachable("web", ["10.0.0.1:80", "203.0.113.5:80"]) == ["10.0.0.1:80", "203.0.113.5:80"]
    assert caplog.messages == [
        "dns: web: cannot probe the task at 203.0.113.5:80 (Operation not permitted): zdd-dns.service's "
        "IPAddressAllow does not include it; named as routed"
    ]


def test_the_srv_answer_names_only_the_tasks_reachability_keeps():
    table = RouteTable("ab12cd34", {"web": [["10.216.0.11:18301", "10.216.0.12:18301"], ["10.216.0.13:18302"]]})
    kept = table.lookup_srv("web.srv.ab12cd34.zdd.internal.", lambda app, addresses: addresses[1:])
    assert kept == [(node_name("10.216.0.12", "ab12cd34"), 18301)]
    assert len(table.lookup_srv("web.srv.ab12cd34.zdd.internal.")) == 2  # by default, every one
