"""The converger carrying out reconcile's plans over fakes: what a restarted agent does, step by step."""

from dataclasses import replace

import pytest

from tests.support.fakes import FakeClock, FakeJournal, FakeProber, FakeRouter, FakeRuntime
from zdd.config import AppConfig
from zdd.converge import Converger
from zdd.errors import PermanentError, TemporaryError
from zdd.ledger import Ledger, Result
from zdd.reconcile import ROLLING_BACK, Found
from zdd.state import Replica, Running, State
from zdd.swap import Swap

APP = AppConfig(name="web", image="r/web", port=8080, drain_timeout=3.0, stop_timeout=7.0, probation=0.0)
V1 = Running("v1", "r/web:v1", "sha256:1", "c1", "zdd-web-1", "10.0.0.1:8080", since=1.0)
V1_FOUND = Found("c1", "zdd-web-1", True, "10.0.0.1:8080", "v1", "r/web:v1", "sha256:1", "d1", since=1.0)
V2_FOUND = Found("c2", "zdd-web-2", True, "10.0.0.2:8080", "v2", "r/web:v2", "sha256:2", "d2", since=2.0)
V2_PHASE = {
    "deploy": "d2",
    "container": "c2",
    "address": "10.0.0.2:8080",
    "tag": "v2",
    "reference": "r/web:v2",
    "image": "sha256:2",
    "name": "zdd-web-2",
    "old": "c1",
}


@pytest.fixture
def world():
    log: list[str] = []
    state = State(instance="ab12cd34")
    runtime, router, clock = FakeRuntime(log), FakeRouter(log), FakeClock()
    swap = Swap(runtime, router, FakeProber(log), clock, FakeJournal(log))
    saves: list[int] = []
    ledger = Ledger(state, clock=clock.time)
    converger = Converger(runtime, router, swap, state, ledger, lambda: saves.append(1), clock=clock.time)
    return {
        "log": log,
        "state": state,
        "runtime": runtime,
        "router": router,
        "ledger": ledger,
        "c": converger,
        "saves": saves,
    }


def running_deploy(world, phase: str, data: dict) -> None:
    """A deploy of v2 that a crash cut short in `phase`, as state.toml tells it after the restart."""
    entry = world["ledger"].record("web", "v2", "r/web:v2", 1.0, -1)
    entry.deploy_id = "d2"
    world["ledger"].start(entry, "v1")
    app_state = world["state"].app("web")
    app_state.current, app_state.phase, app_state.phase_data = V1, phase, dict(data)


def test_idle_and_right_changes_nothing(world):
    world["state"].app("web").current = V1
    world["runtime"].found = [V1_FOUND]
    world["router"].routes = [[["10.0.0.1:8080"]]]
    assert world["c"].converge([APP]) == []
    assert world["log"] == [] and world["saves"] == []


def test_a_crash_while_draining_is_finished_and_recorded(world):
    running_deploy(world, "draining", V2_PHASE)
    world["runtime"].found = [V1_FOUND, V2_FOUND]
    world["router"].routes = [[["10.0.0.2:8080"], ["10.0.0.1:8080"]]]
    world["c"].converge([APP])
    assert [e for e in world["log"] if not e.startswith("phase")] == [
        "route 10.0.0.2:8080 10.0.0.1:8080",
        "route 10.0.0.2:8080",
        "stop c1 timeout=7",
        "remove c1",
    ]
    app_state = world["state"].app("web")
    assert app_state.current.container_id == "c2" and app_state.previous_tag == "v1" and app_state.phase == ""
    (entry,) = world["state"].history
    assert (entry.result, entry.image_id) == (Result.SUCCEEDED, "sha256:2")


def test_a_crash_while_rolling_back_routes_back_before_removing_the_new(world):
    running_deploy(world, ROLLING_BACK, V2_PHASE)
    world["runtime"].found = [V1_FOUND, V2_FOUND]
    world["router"].routes = [[["10.0.0.2:8080"]]]  # the route back had not happened yet
    failures = world["c"].converge([APP])
    assert world["log"] == ["route 10.0.0.1:8080", "remove c2"]  # the route first: never an unrouted site
    assert world["state"].app("web").current == V1
    (entry,) = world["state"].history
    assert entry.result == Result.FAILED and failures == [f"web: v2: {entry.reason}"]


def test_a_roll_back_with_nothing_to_go_back_to_keeps_the_new(world):
    running_deploy(world, ROLLING_BACK, V2_PHASE)
    world["runtime"].found = [replace(V1_FOUND, running=False), V2_FOUND]
    world["router"].routes = [[["10.0.0.2:8080"]]]
    world["c"].converge([APP])
    assert world["log"] == ["remove c1"]  # the route to c2 stays as it is
    assert world["state"].app("web").current.container_id == "c2"


@pytest.mark.parametrize(
    ("routed", "adopted"),
    [
        (["10.0.0.1:8080"], "c1"),  # routes.toml survived: the container it routes to
        ([], "c2"),  # nothing says: the most recently started running container
    ],
)
def test_lost_state_adopts_the_serving_container_instead_of_a_503(world, routed, adopted):
    world["runtime"].found = [V1_FOUND, V2_FOUND]
    world["router"].routes = [[routed]] if routed else []
    world["c"].converge([APP])
    current = world["state"].app("web").current
    assert current.container_id == adopted and current.tag == ("v1" if adopted == "c1" else "v2")
    assert world["router"].routed("web") == [[current.address]]  # routed, not "no version deployed yet"
    assert world["runtime"].removed == [c for c in ("c1", "c2") if c != adopted]


def test_lost_state_with_nothing_running_stays_undeployed(world):
    world["runtime"].found = [replace(V1_FOUND, running=False)]
    world["c"].converge([APP])
    assert world["state"].app("web").current is None and world["runtime"].removed == ["c1"]


def test_a_finish_caddy_refuses_is_retried_not_taken_for_a_roll_back(world):
    running_deploy(world, "draining", V2_PHASE)
    world["runtime"].found = [V1_FOUND, V2_FOUND]
    world["router"].fail_route = PermanentError("Caddy admin API POST /load: HTTP 400")
    with pytest.raises(TemporaryError, match="finishing deploy d2: Caddy admin API"):
        world["c"].converge([APP])
    assert world["state"].app("web").phase == "draining"  # the journal stays for the next round


def test_a_release_container_goes_once_its_deploy_ended_but_never_while_it_runs(world):
    world["runtime"].releases = {"d0": "r-d0"}  # a superseded deploy's migration, still running
    world["runtime"].release_exits = [None]
    world["c"].converge([APP])
    assert world["runtime"].releases == {"d0": "r-d0"}
    world["c"].converge([APP])  # it has ended now (exit_code answers 0)
    assert world["runtime"].releases == {} and "remove r-d0" in world["log"]


def test_a_crash_in_probation_hands_the_rest_of_it_to_the_watch_and_leaves_the_deploy_running(world):
    watched = []
    world["c"].on_probation = lambda app, deploy, new, old, until: watched.append((deploy, new.tag, old.tag, until))
    until = world["c"].swap.clock.time() + 20.0
    running_deploy(world, "probation", {**V2_PHASE, "until": f"{until:.3f}"})
    world["runtime"].found = [V1_FOUND, V2_FOUND]
    world["c"].converge([replace(APP, probation=30.0)])
    assert watched == [("d2", "v2", "v1", pytest.approx(until))]
    app_state = world["state"].app("web")
    assert app_state.phase == "probation" and app_state.current == V1  # the watch ends it, not the converger
    assert world["router"].routes[-1] == [["10.0.0.2:8080"]] and not any(e.startswith("stop") for e in world["log"])
    assert [e.result for e in world["state"].history] == ["running"]
    world["c"].watching = lambda app: True  # while watched, converging leaves the app alone
    before = list(world["log"])
    world["c"].converge([replace(APP, probation=30.0)])
    assert [e for e in world["log"] if e not in before and not e.startswith("ensure network")] == []


def test_a_swarm_app_follows_a_moved_task_and_only_ever_scales_a_colour_it_does_not_keep(world):
    """Blue serves v1 on two nodes; node .12 failed and Swarm ran slot 2 again on .13; green is a
    leftover colour with two tasks. The moved task is gated and routed; green goes to 0 once, blue never."""
    log = world["log"]
    swarm = FakeRuntime(log)  # its replacement() knows of no move: the slot's new task is what tells it
    blue = [
        Found(
            "t1", "zdd-web-blue.1", True, "10.216.0.11:18301", "v1", "r/web:v1", "sha256:1", "d1", group="zdd-web-blue"
        ),
        Found(
            "t9", "zdd-web-blue.2", True, "10.216.0.13:18301", "v1", "r/web:v1", "sha256:1", "d1", group="zdd-web-blue"
        ),
    ]
    green = [
        Found(
            f"g{n}",
            f"zdd-web-green.{n}",
            True,
            f"10.216.0.1{n}:18302",
            "v0",
            "r/web:v0",
            "sha256:0",
            "d0",
            group="zdd-web-green",
        )
        for n in (1, 2)
    ]
    swarm.found = blue + green
    app = replace(APP, engine="swarm", replicas=2)
    swap = Swap(
        world["runtime"], world["router"], FakeProber(log), FakeClock(), FakeJournal(log), engines={"swarm": swarm}
    )
    converger = Converger(world["runtime"], world["router"], swap, world["state"], world["ledger"], lambda: None)
    live = Running("v1", "r/web:v1", "sha256:1", "t1", "zdd-web-blue.1", "10.216.0.11:18301", since=1.0)
    world["state"].app("web").current = live.with_replicas(
        [Replica("t1", "zdd-web-blue.1", "10.216.0.11:18301"), Replica("t2", "zdd-web-blue.2", "10.216.0.12:18301")]
    )
    assert converger.converge([app]) == []
    assert log[0] == "probe 10.216.0.13:18301/up -> ok"
    assert "route [10.216.0.11:18301 10.216.0.13:18301]" in log
    assert swarm.removed == ["g1"] and world["runtime"].removed == []
    assert [r.container_id for r in world["state"].app("web").current.replicas] == ["t1", "t9"]


def test_a_swarm_that_cannot_answer_holds_up_only_its_own_app(world):
    class NoManager(FakeRuntime):
        def containers(self, app, instance=None):
            raise TemporaryError("the Docker engine at docker_host is not a Swarm manager")

    log = world["log"]
    swap = Swap(
        world["runtime"],
        world["router"],
        FakeProber(log),
        FakeClock(),
        FakeJournal(log),
        engines={"swarm": NoManager(log)},
    )
    converger = Converger(world["runtime"], world["router"], swap, world["state"], world["ledger"], lambda: None)
    world["state"].app("web").current = V1
    world["runtime"].found = [V1_FOUND]
    on_swarm = replace(APP, name="api", engine="swarm")
    assert converger.converge([on_swarm, APP]) == []
    assert converger.waiting == {"api": "the Docker engine at docker_host is not a Swarm manager"}
    assert "route 10.0.0.1:8080" in log  # the local app after it was converged all the same

    def down(app, instance=None):
        raise TemporaryError("Docker engine unavailable")

    world["runtime"].containers = down
    with pytest.raises(TemporaryError):  # the local engine's own trouble still holds up every app
        converger.converge([APP])


def test_a_task_swarm_ran_again_that_fails_its_gate_stays_unrouted_and_is_not_gated_again(world):
    log = world["log"]
    swarm = FakeRuntime(log)
    swarm.found = [
        Found(
            "t1", "zdd-web-blue.1", True, "10.216.0.11:18301", "v1", "r/web:v1", "sha256:1", "d1", group="zdd-web-blue"
        ),
        Found(
            "t9", "zdd-web-blue.2", True, "10.216.0.13:18301", "v1", "r/web:v1", "sha256:1", "d1", group="zdd-web-blue"
        ),
    ]
    prober = FakeProber(log, failing={"10.216.0.13:18301": "HTTP 500"})
    clock = FakeClock()
    prober.clock, prober.took = clock, 0.5
    swap = Swap(world["runtime"], world["router"], prober, clock, FakeJournal(log), engines={"swarm": swarm})
    converger = Converger(world["runtime"], world["router"], swap, world["state"], world["ledger"], lambda: None)
    app = replace(APP, engine="swarm", replicas=2, start_timeout=2.0)
    live = Running("v1", "r/web:v1", "sha256:1", "t1", "zdd-web-blue.1", "10.216.0.11:18301", since=1.0)
    world["state"].app("web").current = live.with_replicas(
        [Replica("t1", "zdd-web-blue.1", "10.216.0.11:18301"), Replica("t2", "zdd-web-blue.2", "10.216.0.12:18301")]
    )
    assert converger.converge([app]) == []
    probes = log.count("probe 10.216.0.13:18301/up -> HTTP 500")
    assert probes > 0 and world["router"].routes[-1] == [["10.216.0.11:18301"]]  # the new task is not routed
    assert converger.converge([app]) == []
    assert log.count("probe 10.216.0.13:18301/up -> HTTP 500") == probes  # nor gated again
    assert [r.container_id for r in world["state"].app("web").current.replicas] == ["t1", "t2"]
    assert swarm.removed == []
