"""agent/reachability.py over real loopback sockets: which routed tasks zdd dns names in an SRV answer."""

import logging
import socket

import pytest

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


def test_unreachable_names_the_addresses_that_refuse_with_why(listening):
    up, refused = listening
    assert unreachable([up, refused], timeout=0.5) == {refused: "Connection refused"}
    assert unreachable([], timeout=0.5) == {}


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


def test_addresses_no_answer_named_for_a_while_are_no_longer_probed(listening):
    up, refused = listening
    clock = Clock()
    reachable = Reachability(clock)
    reachable("web", [up, refused])
    reachable.probe()
    clock.now += FORGET_AFTER + 1
    reachable.probe()
    assert reachable._named == {} and reachable._down == {}
    assert reachable("web", [up, refused]) == [up, refused]  # unknown again until probed


def test_the_srv_answer_names_only_the_tasks_reachability_keeps():
    table = RouteTable("ab12cd34", {"web": [["10.216.0.11:18301", "10.216.0.12:18301"], ["10.216.0.13:18302"]]})
    kept = table.lookup_srv("web.srv.ab12cd34.zdd.internal.", lambda app, addresses: addresses[1:])
    assert kept == [(node_name("10.216.0.12", "ab12cd34"), 18301)]
    assert len(table.lookup_srv("web.srv.ab12cd34.zdd.internal.")) == 2  # by default, every one


def test_a_task_the_apps_next_answer_no_longer_names_is_no_longer_probed(listening):
    up, refused = listening
    reachable = Reachability(Clock())
    reachable("web", [up, refused])
    reachable.probe()
    reachable("web", [up])  # the app switched to another set: the refused one is none of zdd dns's concern
    assert reachable._named.keys() == {up} and reachable._down == {}
    reachable("api", [refused])  # another app's answer leaves web's alone
    assert reachable._named.keys() == {up, refused}
