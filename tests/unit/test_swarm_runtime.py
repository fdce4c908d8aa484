"""The pure parts of agent/swarm_runtime.py: reading Swarm's task JSON, when a colour serves, when a gate
gives up, when a task was moved or has ended, the pinned image, the task log stream."""

import struct

import pytest

from zdd.config import AppConfig
from zdd.reference import parse_reference
from zdd.swarm_runtime import (
    Task,
    app_and_colour,
    demultiplex,
    given_up,
    has_ended,
    moved,
    newest_per_slot,
    other,
    pinned,
    same_image,
    serving,
    swarm_port,
    task_of,
)

IMAGE = "10.216.0.1:5000/acme/web:v2@sha256:" + "ab" * 32
NODES = {
    "n1": {"Description": {"Hostname": "node1"}, "Status": {"Addr": "10.216.0.11", "State": "ready"}},
    "n2": {"Description": {"Hostname": "node2"}, "Status": {"Addr": "10.216.0.12", "State": "ready"}},
    "n3": {"Description": {"Hostname": "node3"}, "Status": {"Addr": "10.216.0.13", "State": "down"}},
}


def task(slot: int, node: str, state: str, error: str = "", image: str = IMAGE) -> Task:
    address = {"node1": "10.216.0.11", "node2": "10.216.0.12", "node3": "10.216.0.13"}.get(node, "")
    return Task(f"t{slot}{node}{state}", slot, node, address, state, error, image)


def test_task_of_reads_the_engine_json_and_a_task_without_a_node():
    entry = {
        "ID": "t1",
        "Slot": 2,
        "NodeID": "n2",
        "Status": {"State": "rejected", "Err": "No such image: acme/web:v9"},
        "Spec": {"ContainerSpec": {"Image": IMAGE}},
    }
    assert task_of(entry, NODES) == Task(
        "t1", 2, "node2", "10.216.0.12", "rejected", "No such image: acme/web:v9", IMAGE
    )
    pending = task_of({"ID": "t2", "Status": {"State": "pending"}}, NODES)
    assert (pending.node, pending.node_address, pending.slot, pending.image) == ("", "", 0, "")


@pytest.mark.parametrize(
    ("tasks", "replicas", "expected"),
    [
        ([task(1, "node1", "running"), task(2, "node2", "running")], 2, [1, 2]),
        ([task(1, "node1", "running"), task(2, "node2", "starting")], 2, None),  # not yet
        ([task(1, "node1", "running"), task(2, "node1", "running")], 2, None),  # two on one node: one port
        ([task(1, "node1", "running"), task(2, "node2", "running", image="acme/web:v1")], 2, None),  # old image
        ([task(1, "", "running")], 1, None),  # no node address yet
        ([task(1, "node1", "running"), task(2, "node2", "running"), task(3, "node3", "running")], 2, [1, 2]),
    ],
)
def test_serving_once_every_task_runs_the_image_one_per_node(tasks, replicas, expected):
    ready = serving(tasks, IMAGE, replicas)
    assert (None if ready is None else [t.slot for t in ready]) == expected


@pytest.mark.parametrize(
    ("failed", "expected"),
    [
        ([], None),
        ([task(1, "node2", "rejected", "No such image: 10.216.0.1:5000/acme/web:v2")], "rejected"),
        ([task(1, "node2", "rejected", "No such image", image="acme/web:v1")], None),  # the last version's
        # a port the last version's task still holds: Swarm starts it again, the gate waits
        ([task(1, "node3", "failed", "starting container failed: port is already allocated")] * 3, None),
        ([task(1, "node1", "failed", "task: non-zero exit (1)")] * 2, None),  # two crashes: maybe a hiccup
        ([task(1, "node1", "failed", "task: non-zero exit (1)")] * 3, "failed"),  # a crash loop
        (
            [
                task(1, "node1", "failed", "task: non-zero exit (1)"),
                task(2, "node2", "failed", "task: non-zero exit (1)"),
            ]
            * 1,
            None,  # one crash each in two slots
        ),
    ],
)
def test_a_gate_gives_up_on_a_rejected_task_or_a_crash_loop(failed, expected):
    found = given_up(failed, IMAGE)
    assert (found.state if found else None) == expected


def test_names_ports_and_images():
    app = AppConfig(name="web", image="acme/web", port=8080, swarm_ports=(18401, 18402))
    assert (swarm_port(app, "blue"), swarm_port(app, "green")) == (18401, 18402)
    assert (other("blue"), other("green")) == ("green", "blue")
    ref = parse_reference("v2", "10.216.0.1:5000/acme/web")
    assert pinned(ref, "sha256:" + "ab" * 32) == IMAGE
    assert same_image(IMAGE, IMAGE.split("@")[0]) and same_image(IMAGE, IMAGE)
    assert not same_image("10.216.0.1:5000/acme/web:v1@sha256:" + "ab" * 32, IMAGE.split("@")[0])


def test_demultiplex_joins_stdout_and_stderr_frames():
    frames = b"".join(struct.pack(">BxxxI", stream, len(text)) + text for stream, text in ((1, b"a\n"), (2, b"bc\n")))
    assert demultiplex(frames) == b"a\nbc\n"
    assert demultiplex(frames[:-1]) == b"a\nbc"  # a frame cut short: what arrived


@pytest.mark.parametrize(
    ("desired", "state", "expected"),
    [
        ("running", "running", False),  # serving
        ("shutdown", "running", True),  # its node failed: Swarm cannot stop it, and runs the slot elsewhere
        ("shutdown", "shutdown", True),  # its node was drained
        ("shutdown", "failed", False),  # the app exited: a crash, not a move
        ("shutdown", "complete", False),  # the app ended by itself
        ("shutdown", "rejected", False),  # it never started (a node that cannot pull)
        ("running", "failed", False),
    ],
)
def test_a_task_was_moved_when_swarm_stopped_wanting_it_without_the_app_exiting(desired, state, expected):
    assert moved({"DesiredState": desired, "Status": {"State": state}}) is expected


@pytest.mark.parametrize(
    ("state", "node", "expected"),
    [
        ("running", "n1", False),
        ("shutdown", "n1", True),
        ("failed", "n1", True),
        ("running", "n3", True),  # on a node Swarm lost: it stops the task when it comes back
        ("running", "gone", False),  # a node Swarm does not list: no word that it is down
    ],
)
def test_a_task_has_ended_when_stopped_or_on_a_node_swarm_lost(state, node, expected):
    assert has_ended({"NodeID": node, "Status": {"State": state}}, NODES) is expected


def test_app_and_colour_of_a_service_name():
    assert app_and_colour("zdd-web-green") == ("web", "green")
    assert app_and_colour("zdd-my-api-blue") == ("my-api", "blue")


def test_a_slot_s_current_task_is_the_one_swarm_created_last():
    def at(task_id: str, slot: int, created: float) -> Task:
        return Task(task_id, slot, "node1", "10.216.0.11", "running", "", "r/web:v1", created=created)

    tasks = [at("a", 1, 5.0), at("b", 1, 9.0), at("c", 2, 7.0), at("d", 3, 8.0), at("e", 2, 1.0)]
    assert [t.id for t in newest_per_slot(tasks, replicas=2)] == ["b", "c"]  # slot 3: scaled down to 2
    assert newest_per_slot([], replicas=2) == []


def test_a_followed_task_log_ends_once_the_task_no_longer_runs():
    """Swarm never ends a followed log stream; zdd logs -f must go on to the next version."""
    import threading

    from zdd.swarm_runtime import _until

    never = threading.Event()

    def stream():
        yield b"booting v1\n"
        yield b"GET /\n"
        never.wait()  # Swarm's stream: open after the task stopped

    asked = []
    running = lambda: asked.append(1) or len(asked) < 3  # noqa: E731
    assert list(_until(stream(), running, every=0.01)) == [b"booting v1\n", b"GET /\n"]
    assert len(asked) == 3
    never.set()
