"""Intake: the queue file and the request drop into the ledger, in the order they were written."""

import os

import pytest

from zdd.intake import Intake
from zdd.ledger import Ledger
from zdd.queue import QueueFile, RequestDrop
from zdd.state import State


@pytest.fixture
def intake(tmp_path):
    queue = QueueFile(tmp_path / "queue")
    queue.ensure_exists()
    drop = RequestDrop(tmp_path / "requests")
    drop.ensure_exists()
    state = State(instance="ab12cd34")
    events: list[str] = []

    def save() -> None:
        events.append(f"save ({len(list(drop.directory.glob('*.req')))} drop files left)")

    return Intake(queue, drop, Ledger(state), state, save, lambda: {"web": "r/web", "api": "r/api"}), events


def written(path, at: float) -> None:
    os.utime(path, (at, at))


def test_newest_wins_across_the_queue_and_the_drop(intake):
    take, events = intake
    # alice's `zdd deploy web v41` (t=100), then bob's `echo 'web v42' > queue` (t=200): v42 is newest.
    written(RequestDrop.submit(take.drop.directory, "web v41"), 100)
    take.queue.path.write_text("web v42\n")
    written(take.queue.path, 200)
    assert take.take() == 2
    assert take.ledger.next_request("web").tag == "v42"
    assert [(e.tag, e.result, e.requested_by) for e in take.state.history] == [
        ("v41", "superseded", os.getuid()),  # the drop knows who asked
        ("v42", "queued", -1),  # the queue file does not
    ]


def test_invalid_lines_are_refused_one_log_line_each_and_the_rest_is_queued(intake, caplog):
    take, events = intake
    take.queue.path.write_text("web v1\nevil.example.com/x:v1\n\n   \napi a1\nweb v1; rm -rf /\n")
    assert take.take() == 2
    assert caplog.text.count("queue: rejected entry") == 2
    assert [(e.app, e.tag) for e in take.state.history] == [("web", "v1"), ("api", "a1")]


def test_requests_are_saved_before_the_drop_files_go(intake):
    take, events = intake
    RequestDrop.submit(take.drop.directory, "web v3")
    take.take()
    assert events == ["save (1 drop files left)"]  # a crash before the save reads the request again
    assert list(take.drop.directory.glob("*.req")) == []
    assert take.take() == 0 and events == ["save (1 drop files left)"]  # nothing new: no write
