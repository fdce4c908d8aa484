"""state.toml round-trips, is replaced atomically, and keeps a bounded history."""

import os
import shutil
import stat
from pathlib import Path

import pytest

from zdd.errors import PermanentError
from zdd.lock import StateLock
from zdd.state import HISTORY_LIMIT, STATE_FORMAT, HistoryEntry, Running, State, StateStore

RUNNING = Running(
    tag="v1",
    reference="r/web:v1",
    image_id="sha256:1",
    container_id="c1",
    container_name="zdd-web-1",
    address="10.0.0.1:8080",
    since=12.5,
)


def test_round_trip(tmp_path):
    store = StateStore(tmp_path)
    state = State()
    state.app("web").current = RUNNING
    state.app("web").phase, state.app("web").phase_data = "draining", {"container": "c2"}
    state.record(HistoryEntry(deploy_id="d1", app="web", tag="v1", reference="r/web:v1", requested_at=1.0))
    store.save(state)
    loaded = store.load()
    assert loaded.app("web").current == RUNNING
    assert loaded.app("web").phase_data == {"container": "c2"}
    assert loaded.history[0].deploy_id == "d1"


def test_missing_file_is_empty_state(tmp_path):
    assert StateStore(tmp_path).load() == State()


def test_save_replaces_atomically_and_leaves_no_temp_file(tmp_path):
    store = StateStore(tmp_path)
    store.save(State())
    inode = os.stat(store.path).st_ino
    store.save(State())
    assert os.stat(store.path).st_ino != inode  # a new file renamed over the old, never rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.toml"]
    assert oct(os.stat(store.path).st_mode & 0o777) == "0o640"


def test_history_is_bounded_and_replaced_by_id():
    state = State()
    for i in range(HISTORY_LIMIT + 10):
        state.record(HistoryEntry(deploy_id=f"d{i}", app="web", tag=f"v{i}", reference="", requested_at=i))
    state.record(
        HistoryEntry(
            deploy_id=f"d{HISTORY_LIMIT + 9}", app="web", tag="x", reference="", requested_at=0, result="succeeded"
        )
    )
    assert len(state.history) == HISTORY_LIMIT
    assert state.history[-1].result == "succeeded" and state.history[0].deploy_id == "d10"


def test_the_agent_lock_is_the_agents_alone(tmp_path):
    # A member of group zdd who could open the lock could flock it and keep the agent from starting.
    (tmp_path / "agent.lock").write_text("")
    os.chmod(tmp_path / "agent.lock", 0o660)
    lock = StateLock(tmp_path)
    lock.acquire()
    try:
        assert stat.S_IMODE(os.stat(tmp_path / "agent.lock").st_mode) == 0o600
    finally:
        lock.release()


PREVIOUS_RELEASE = Path(__file__).parent / "data" / "state-0.1.0-598ffaa.toml"  # written by that release's code


def test_a_state_file_an_earlier_release_wrote_is_read_and_rewritten_in_the_current_format(tmp_path):
    shutil.copy(PREVIOUS_RELEASE, tmp_path / "state.toml")
    store = StateStore(tmp_path)
    state = store.load()
    web = state.app("web")
    assert (state.instance, web.current.tag, web.current.address, web.previous_tag) == (
        "ab12cd34",
        "v41",
        "172.20.0.5:8080",
        "v40",
    )
    (entry,) = state.history
    assert (entry.deploy_id, entry.result, entry.from_tag, entry.requested_by) == (
        "20261128-100000-aaaa",
        "succeeded",
        "v40",
        1000,
    )
    assert state.queue_offsets == {"queue": 4}
    store.save(state)
    # No app runs replicas: still format 1, which the earlier release reads (tests/unit/test_replicas.py: 2).
    assert (tmp_path / "state.toml").read_text().startswith("format = 1\n")
    assert store.load() == state


def test_a_state_file_a_newer_zdd_wrote_is_refused_not_misread(tmp_path):
    (tmp_path / "state.toml").write_text(f'format = {STATE_FORMAT + 1}\ninstance = "ab12cd34"\n')
    with pytest.raises(
        PermanentError,
        match=f"written by a newer zdd \\(format {STATE_FORMAT + 1}; zdd .* reads up to {STATE_FORMAT}\\)",
    ):
        StateStore(tmp_path).load()


@pytest.mark.parametrize("written", ['"x"', "1.0", "true", "-1"])
def test_a_format_that_is_not_one_is_a_damaged_file(tmp_path, written):
    (tmp_path / "state.toml").write_text(f'format = {written}\ninstance = "ab12cd34"\n')
    with pytest.raises(PermanentError, match="is not in zdd's format"):
        StateStore(tmp_path).load()
