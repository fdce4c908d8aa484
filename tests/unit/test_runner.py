"""One request through the swap: how each way a deploy can end is recorded, and what is left to converge."""

from dataclasses import replace

import pytest

from tests.support.fakes import FakeClock, FakeJournal, FakeProber, FakeRouter, FakeRuntime
from zdd.config import AppConfig
from zdd.errors import TemporaryError
from zdd.ledger import Ledger, Result
from zdd.runner import DeployRunner
from zdd.state import Running, State
from zdd.swap import Swap

APP = AppConfig(name="web", image="r/web", port=8080, health_successes=1, probation=0.0, drain_timeout=1.0)
V1 = Running("v1", "r/web:v1", "sha256:1", "c1", "zdd-web-1", "10.0.0.1:8080", since=1.0)


class JournalOnState(FakeJournal):
    """Writes the phase where the runner and the converger read it, as the real StateJournal does."""

    def __init__(self, log, state):
        super().__init__(log)
        self.state = state

    def enter(self, app, phase, **data):
        super().enter(app, phase, **data)
        self.state.app(app).phase, self.state.app(app).phase_data = phase, dict(data)


@pytest.fixture
def world():
    log: list[str] = []
    state = State(instance="ab12cd34")
    state.app("web").current = V1
    runtime = FakeRuntime(log, registry={"r/web:v2": "sha256:2"})
    router = FakeRouter(log)
    clock = FakeClock()
    swap = Swap(runtime, router, FakeProber(log), clock, JournalOnState(log, state))
    ledger = Ledger(state, clock=clock.time)
    runner = DeployRunner(state, ledger, swap, lambda: None, clock=clock.time)
    return {"state": state, "runtime": runtime, "router": router, "ledger": ledger, "runner": runner}


def run_v2(world):
    entry = world["ledger"].record("web", "v2", "r/web:v2", 1.0, -1)
    return entry, world["runner"].run(APP, world["ledger"].next_request("web"))


def test_success_records_the_image_and_the_previous_version(world):
    entry, ran = run_v2(world)
    app_state = world["state"].app("web")
    assert (entry.result, entry.image_id, entry.from_tag) == (Result.SUCCEEDED, "sha256:2", "v1")
    assert (app_state.current.tag, app_state.previous_tag, app_state.phase) == ("v2", "v1", "")
    assert ran.failure == "" and not ran.converge_first


def test_an_outage_before_the_switch_queues_it_again_once_and_converges_first(world):
    world["runtime"].pull_error = TemporaryError("pull r/web:v2: registry unavailable")
    entry, ran = run_v2(world)
    assert entry.result == Result.QUEUED and entry.attempts == 1 and ran.converge_first
    assert world["state"].app("web").phase == "" and world["state"].app("web").current == V1


def test_an_outage_after_the_switch_leaves_the_phase_to_the_converger(world):
    world["router"].in_flight_by_address["10.0.0.1:8080"] = [1]

    def caddy_gone(address):
        raise TemporaryError("Caddy admin API unreachable")

    world["router"].in_flight = caddy_gone  # the drain cannot read: it waits out drain_timeout, then stops
    world["runtime"].stop = lambda container_id, timeout: (_ for _ in ()).throw(TemporaryError("dockerd gone"))
    entry, ran = run_v2(world)
    assert entry.result == Result.RUNNING and ran.converge_first  # settled by the converger, not here
    assert world["state"].app("web").phase == "stopping"


def test_a_bug_fails_the_deploy_records_it_and_asks_to_converge(world):
    world["runtime"].image_id = lambda ref: 1 / 0
    entry, ran = run_v2(world)
    assert entry.result == Result.FAILED and "internal error: ZeroDivisionError" in entry.reason
    assert ran.converge_first and ran.failure == "web: v1 -> v2: internal error"


def test_a_bug_after_the_switch_keeps_the_journal_for_the_converger(world):
    # The state must keep saying v2 is live (phase stopping): clearing it would make the converger keep
    # v1 as current and remove the live v2.
    def stop_breaks(container_id, timeout):
        raise RuntimeError("an unexpected error in stop")

    world["runtime"].stop = stop_breaks
    entry, ran = run_v2(world)
    assert ran.converge_first and entry.result == Result.RUNNING
    assert world["state"].app("web").phase == "stopping"


def test_a_stop_during_the_release_queues_it_again_without_using_its_retry(world):
    world["runtime"].release_exits = [None] * 100
    world["runner"].swap.stopping = lambda: True
    releasing = replace(APP, release_command=("migrate",))
    entry = world["ledger"].record("web", "v2", "r/web:v2", 1.0, -1)
    ran = world["runner"].run(releasing, world["ledger"].next_request("web"))
    assert entry.result == Result.QUEUED and entry.attempts == 0 and ran.converge_first
    assert "zdd is stopping; the release command runs on" in entry.reason


def test_a_deploy_in_probation_stays_running_until_its_watch_ends_it(world):
    from zdd.probation import Watch

    world["runner"].swap.clock.now = 1000.0
    on_probation = replace(APP, probation=30.0)
    entry = world["ledger"].record("web", "v2", "r/web:v2", 1.0, -1)
    ran = world["runner"].run(on_probation, world["ledger"].next_request("web"))
    app_state = world["state"].app("web")
    # Live, and the agent goes on: the entry is running, the journal says probation, v1 is still "current"
    # (what a restart would go back to).
    assert ran.probation and ran.probation.old == V1 and not ran.failure
    assert entry.result == Result.RUNNING and app_state.phase == "probation" and app_state.current == V1
    watch = Watch(on_probation, entry.deploy_id, ran.probation.running, V1, deadline=0.0, started=0.0)
    assert world["runner"].end_probation(watch, None) == type(ran)()
    assert entry.result == Result.SUCCEEDED and app_state.current.tag == "v2" and app_state.previous_tag == "v1"
    assert app_state.phase == ""


def test_a_failed_probation_fails_the_deploy_and_keeps_the_old_version_current(world):
    from zdd.errors import PermanentError
    from zdd.probation import Watch

    on_probation = replace(APP, probation=30.0)
    entry = world["ledger"].record("web", "v2", "r/web:v2", 1.0, -1)
    ran = world["runner"].run(on_probation, world["ledger"].next_request("web"))
    watch = Watch(on_probation, entry.deploy_id, ran.probation.running, V1, deadline=0.0, started=0.0)
    ended = world["runner"].end_probation(watch, PermanentError("web: v1 -> v2: failed 3.0s into its probation"))
    assert entry.result == Result.FAILED and "3.0s into its probation" in entry.reason
    assert ended.failure.startswith("web: v1 -> v2: ") and world["state"].app("web").current == V1
    assert world["state"].app("web").phase == ""
