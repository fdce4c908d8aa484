"""A new version's probation, watched by probation.Probations between the agent's other work, over fakes."""

from dataclasses import replace

import pytest

from tests.support.fakes import collapse
from tests.unit.test_swap import APP, V1, V2, ref, world  # noqa: F401  (world: the swap's fixture)
from zdd.errors import PermanentError, TemporaryError
from zdd.probation import Probations
from zdd.swap import Container

ON_PROBATION = replace(APP, probation=2.0, health_interval=0.5)


@pytest.fixture
def watched(world):  # noqa: F811
    """The world, and a Probations whose ends are recorded as (app, deploy, error or None)."""
    ended: list[tuple[str, str, Exception | None]] = []
    probations = Probations(lambda: world["swap"], lambda w, err: ended.append((w.app.name, w.deploy_id, err)))
    return {**world, "probations": probations, "ended": ended}


def run_out(w, app=ON_PROBATION, current=V1):
    """Deploy, then run the main loop's part: poll each probation when it is due until none is left."""
    outcome = w["swap"].deploy(app, ref("v2"), current, "d1")
    if outcome.probation_until is not None:
        w["probations"].watch(app, "d1", outcome.running, outcome.old, outcome.probation_until)
    while (due := w["probations"].due_in()) is not None:
        w["clock"].sleep(due)
        w["probations"].poll()
    return outcome


def test_the_deploy_returns_at_the_probation_with_the_old_kept_running_unrouted(watched):
    outcome = watched["swap"].deploy(ON_PROBATION, ref("v2"), V1, "d1")
    assert outcome.changed and outcome.old == V1
    assert outcome.probation_until == pytest.approx(watched["clock"].time() + 2.0)
    log = [e for e in collapse(watched["log"]) if not e.startswith("probe")]
    assert log[log.index("phase draining") :] == ["phase draining", "route 10.0.0.2:8080", "phase probation"]
    assert "web: v1 -> v2: probation (v1 kept ready for 2s)" in watched["statuses"]


def test_probation_keeps_the_old_running_unrouted_then_stops_it(watched):
    run_out(watched)
    log = [e for e in collapse(watched["log"]) if not e.startswith("probe")]
    assert log[log.index("phase probation") :] == [
        "phase probation",
        "phase stopping",
        "stop c1 timeout=7",
        "remove c1",
    ]
    probes_after_switch = watched["log"][watched["log"].index("phase probation") :].count(
        "probe 10.0.0.2:8080/up -> ok"
    )
    assert probes_after_switch == 4  # 2 s of probation, a probe every 0.5 s
    assert watched["ended"] == [("web", "d1", None)]
    assert any(s.startswith("web: v1 -> v2: probation, 2s left (v1 kept ready)") for s in watched["statuses"])


def test_a_crash_in_probation_routes_back_to_the_old_and_removes_the_new(watched):
    # Passes the gate (no exit check while its probes pass), dies 0.5 s into the probation.
    watched["runtime"].exits_after_probes = 1
    run_out(watched)
    ((app, deploy, error),) = watched["ended"]
    assert isinstance(error, PermanentError)
    message = str(error)
    assert message.startswith("web: v1 -> v2: failed 0.5s into its probation of 2s: container zdd-web-d1 exited")
    assert message.endswith("exited with code 1; traffic is back on v1 and zdd-web-d1 is removed")
    assert watched["router"].routes[-1] == [["10.0.0.1:8080"]]
    assert watched["log"][-3:] == ["route 10.0.0.1:8080", "stop c2 timeout=7", "remove c2"]
    assert "stop c1 timeout=7" not in watched["log"]  # the old one never stopped: no pull, no boot to go back
    assert "container zdd-web-d1 exited with code 1\noutput of c2" in watched["journal"].kept_output


def test_an_unhealthy_new_version_in_probation_is_rolled_back_after_consecutive_failures(watched):
    watched["prober"].results = [None, None, "HTTP 500", None, "HTTP 500", "HTTP 503"]
    run_out(watched)
    ((_, _, error),) = watched["ended"]
    assert "health check http://10.0.0.2:8080/up failed 2 times in a row (last: HTTP 503)" in str(error)
    assert watched["router"].routes[-1] == [["10.0.0.1:8080"]] and watched["runtime"].removed == ["c2"]


def test_a_route_back_that_fails_keeps_the_new_container_and_leaves_it_to_the_converger(watched):
    # Issue 11.2: removing the container zdd dns still answers would be a full outage.
    watched["runtime"].exits_after_probes = 1

    def route_back_fails(now):
        if "phase probation" in watched["log"] and watched["router"].fail_route is None:
            watched["router"].fail_route = PermanentError("Caddy admin API POST /load: HTTP 400")

    watched["clock"].on_sleep = route_back_fails
    run_out(watched)
    ((_, _, error),) = watched["ended"]
    assert isinstance(error, TemporaryError)
    assert "route back to v1 is not confirmed" in str(error) and "zdd-web-d1 keeps running" in str(error)
    assert watched["journal"].phases[-1] == "rolling-back"  # journalled before the route was tried
    assert watched["log"].index("phase rolling-back") < watched["log"].index("route 10.0.0.1:8080")
    assert watched["runtime"].removed == [] and not any(e.startswith("stop") for e in watched["log"])


def test_a_rollback_is_journalled_before_it_routes_back(watched):
    watched["runtime"].exits_after_probes = 1
    run_out(watched)
    log = watched["log"]
    assert log.index("phase rolling-back") < log.index("route 10.0.0.1:8080") < log.index("remove c2")


def test_probation_runs_on_the_monotonic_clock_not_the_wall_clock(watched):
    # An NTP step of an hour during the probation neither ends it early nor stretches it.
    clock = watched["clock"]
    wall = {"offset": 0.0}
    clock_time = clock.time
    clock.time = lambda: clock_time() + wall["offset"]  # type: ignore[method-assign]

    def ntp_step(now):
        if "phase probation" in watched["log"]:
            wall["offset"] = 3600.0

    clock.on_sleep = ntp_step
    started = clock.now
    run_out(watched)
    log = watched["log"]
    probes = [e for e in log[log.index("phase probation") :] if e.startswith("probe 10.0.0.2")]
    assert len(probes) == ON_PROBATION.probation / ON_PROBATION.health_interval  # 4 probes, not 1
    assert clock.now - started >= ON_PROBATION.probation


def test_no_probation_for_a_first_deploy(watched):
    watched["runtime"].exits_after_probes = 1
    outcome = run_out(watched, current=None)
    assert outcome.changed and outcome.probation_until is None and "phase probation" not in watched["log"]


def test_finish_in_probation_routes_only_the_new_and_hands_back_the_saved_deadline(watched):
    until = watched["clock"].time() + 1.0
    assert watched["swap"].finish(ON_PROBATION, V2, V1, "d1", probation_until=until) == until
    watched["probations"].watch(ON_PROBATION, "d1", V2, V1, until)
    while (due := watched["probations"].due_in()) is not None:
        watched["clock"].sleep(due)
        watched["probations"].poll()
    assert [e for e in watched["log"] if not e.startswith(("phase", "probe"))] == [
        "route 10.0.0.2:8080",
        "stop c1 timeout=7",
        "remove c1",
    ]
    assert watched["log"].count("probe 10.0.0.2:8080/up -> ok") == 2  # the 1 s left, not a fresh 2 s


def test_a_finish_whose_probation_is_over_retires_the_old_at_once(watched):
    assert watched["swap"].finish(ON_PROBATION, V2, V1, "d1", probation_until=watched["clock"].time() - 1) is None
    assert watched["log"][-2:] == ["stop c1 timeout=7", "remove c1"]


def test_a_stop_request_cuts_the_probations_short_and_stops_the_old(watched):
    outcome = watched["swap"].deploy(ON_PROBATION, ref("v2"), V1, "d1")
    watched["probations"].watch(ON_PROBATION, "d1", outcome.running, V1, outcome.probation_until)
    watched["clock"].sleep(0.5)
    watched["probations"].poll()
    watched["probations"].cut_short()
    assert watched["log"][-2:] == ["stop c1 timeout=7", "remove c1"]
    assert watched["ended"] == [("web", "d1", None)] and not watched["probations"].active("web")


def test_a_stop_during_the_drain_skips_the_probation(watched):
    watched["swap"].stopping = lambda: True
    outcome = watched["swap"].deploy(ON_PROBATION, ref("v2"), V1, "d1")
    assert outcome.probation_until is None and "phase probation" not in watched["log"]
    assert watched["log"][-2:] == ["stop c1 timeout=7", "remove c1"]


def test_no_going_back_to_an_old_container_that_died_too(watched):
    watched["runtime"].exits_after_probes = 1
    watched["runtime"].dead.add("c1")
    run_out(watched)
    assert watched["ended"] == [("web", "d1", None)] and watched["router"].routes[-1] == [["10.0.0.2:8080"]]
    assert watched["log"][-2:] == ["stop c1 timeout=7", "remove c1"] and "c2" not in watched["runtime"].removed


def test_two_apps_in_probation_are_watched_each_on_its_own(watched):
    other = replace(ON_PROBATION, name="api", probation=1.0)
    watched["probations"].watch(ON_PROBATION, "d1", V2, V1, watched["clock"].time() + 2.0)
    watched["probations"].watch(other, "d2", V2, V1, watched["clock"].time() + 1.0)
    assert set(watched["probations"].status()) == {"web", "api"}
    ended_at = {}
    while (due := watched["probations"].due_in()) is not None:
        watched["clock"].sleep(due)
        watched["probations"].poll()
        for app, _, _ in watched["ended"]:
            ended_at.setdefault(app, watched["clock"].now)
    assert ended_at["api"] < ended_at["web"]  # the shorter one ended first, not after the other


def test_from_another_deploys_ticks_a_crash_is_sent_back_at_once_and_the_rest_waits_for_the_loop(watched):
    # Called nested (another app's deploy ticks): no stop may run there, the deploy's own deadlines run.
    watched["runtime"].exits_after_probes = 1
    outcome = watched["swap"].deploy(ON_PROBATION, ref("v2"), V1, "d1")
    watched["probations"].watch(ON_PROBATION, "d1", outcome.running, V1, outcome.probation_until)
    watched["probations"].poll(nested=True)  # still up
    watched["clock"].sleep(0.5)
    watched["probations"].poll(nested=True)  # exited
    assert watched["router"].routes[-1] == [["10.0.0.1:8080"]] and watched["journal"].phases[-1] == "rolling-back"
    assert not any(e.startswith(("stop", "remove")) for e in watched["log"]) and watched["ended"] == []
    assert watched["probations"].due_in() == 0.0  # the main loop finishes it next
    watched["probations"].poll()
    assert watched["log"][-2:] == ["stop c2 timeout=7", "remove c2"]
    ((_, _, error),) = watched["ended"]
    assert "failed 0.5s into its probation of 2s: container zdd-web-d1 exited" in str(error)


def test_from_another_deploys_ticks_a_passed_probation_waits_for_the_loop_to_stop_the_old(watched):
    outcome = watched["swap"].deploy(ON_PROBATION, ref("v2"), V1, "d1")
    watched["probations"].watch(ON_PROBATION, "d1", outcome.running, V1, outcome.probation_until)
    watched["clock"].sleep(2.0)
    watched["probations"].poll(nested=True)
    assert not any(e.startswith("stop") for e in watched["log"]) and watched["ended"] == []
    watched["probations"].poll()
    assert watched["log"][-2:] == ["stop c1 timeout=7", "remove c1"] and watched["ended"] == [("web", "d1", None)]


def test_a_bug_while_ending_a_probation_leaves_it_to_the_converger(watched):
    outcome = watched["swap"].deploy(ON_PROBATION, ref("v2"), V1, "d1")
    watched["probations"].watch(ON_PROBATION, "d1", outcome.running, V1, outcome.probation_until)
    watched["swap"].retire = lambda *args: 1 / 0
    watched["clock"].sleep(2.0)
    watched["probations"].poll()
    ((_, _, error),) = watched["ended"]
    assert isinstance(error, TemporaryError) and "ZeroDivisionError" in str(error)


def test_on_a_swarm_a_task_moved_in_probation_is_followed_not_taken_for_a_failure(watched):
    """Its node was drained: Swarm stopped the task (no exit of the app's own) and runs the slot again
    elsewhere. The probation neither fails on it nor probes it; it gates and routes the new task."""
    app = replace(ON_PROBATION, engine="swarm")
    watched["swap"].engines["swarm"] = runtime = watched["runtime"]
    outcome = watched["swap"].deploy(app, ref("v2"), V1, "d1")
    watched["probations"].watch(app, "d1", outcome.running, outcome.old, outcome.probation_until)
    runtime.dead.add("c2")
    watched["prober"].failing["10.0.0.2:8080"] = "connection refused"
    for _ in range(3):  # well past health_successes looks at a task that no longer runs
        watched["clock"].sleep(watched["probations"].due_in())
        watched["probations"].poll()
    assert watched["ended"] == [] and watched["router"].routes[-1] == [["10.0.0.2:8080"]]
    runtime.moved["c2"] = Container("c9", "zdd-web-green.1", "10.0.0.9:8080")
    while (due := watched["probations"].due_in()) is not None:
        watched["clock"].sleep(due)
        watched["probations"].poll()
    assert watched["ended"] == [("web", "d1", None)]
    assert watched["router"].routes[-1] == [["10.0.0.9:8080"]] and "probe 10.0.0.9:8080/up -> ok" in watched["log"]


def test_on_a_swarm_a_manager_that_cannot_say_whether_a_task_runs_leaves_the_health_check_to_tell(watched):
    app = replace(ON_PROBATION, engine="swarm")
    watched["swap"].engines["swarm"] = runtime = watched["runtime"]
    outcome = watched["swap"].deploy(app, ref("v2"), V1, "d1")
    watched["probations"].watch(app, "d1", outcome.running, outcome.old, outcome.probation_until)

    def no_leader(container_id):
        raise TemporaryError("Docker engine unavailable: rpc error: no elected cluster leader")

    runtime.is_running = no_leader
    while (due := watched["probations"].due_in()) is not None:
        watched["clock"].sleep(due)
        watched["probations"].poll()  # raises nothing: the probes of the new version go on
    assert watched["ended"] == [("web", "d1", None)]
