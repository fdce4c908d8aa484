"""The swap's order of steps and every failure path, over in-memory fakes."""

import re
from dataclasses import replace

import pytest

from tests.support.fakes import FakeClock, FakeJournal, FakeProber, FakeRouter, FakeRuntime, collapse
from zdd.config import AppConfig
from zdd.errors import PermanentError, TemporaryError
from zdd.reference import ImageRef
from zdd.state import Running
from zdd.swap import Swap

APP = AppConfig(
    name="web",
    image="registry.example.com/acme/web",
    port=8080,
    health_successes=2,
    start_timeout=5.0,
    drain_timeout=3.0,
    stop_timeout=7.0,
    probation=0.0,  # the probation has its own tests below
)
V1 = Running(
    tag="v1",
    reference="registry.example.com/acme/web:v1",
    image_id="sha256:111",
    container_id="c1",
    container_name="zdd-web-1",
    address="10.0.0.1:8080",
    since=0.0,
)
V2 = Running(  # as a restarted agent reads it back from the phase journal
    tag="v2",
    reference="registry.example.com/acme/web:v2",
    image_id="sha256:222",
    container_id="c2",
    container_name="zdd-web-2",
    address="10.0.0.2:8080",
    since=0.0,
)


def ref(tag: str) -> ImageRef:
    return ImageRef(APP.image, tag=tag)


@pytest.fixture
def world():
    log: list[str] = []
    runtime = FakeRuntime(log, registry={f"{APP.image}:v2": "sha256:222", f"{APP.image}:v1": "sha256:111"})
    router = FakeRouter(log)
    prober = FakeProber(log)
    clock = FakeClock()
    journal = FakeJournal(log)
    statuses: list[str] = []
    ticks: list[float] = []
    swap = Swap(runtime, router, prober, clock, journal, status=statuses.append, tick=lambda: ticks.append(clock.now))
    return {
        "log": log,
        "runtime": runtime,
        "router": router,
        "prober": prober,
        "clock": clock,
        "journal": journal,
        "swap": swap,
        "statuses": statuses,
        "ticks": ticks,
    }


def test_deploy_runs_the_steps_in_order(world):
    world["router"].in_flight_by_address["10.0.0.1:8080"] = [2, 1, 0, 0]
    outcome = world["swap"].deploy(APP, ref("v2"), V1, "d1")

    assert outcome.changed and outcome.running.tag == "v2" and outcome.running.address == "10.0.0.2:8080"
    assert collapse(world["log"]) == [
        "phase pulling",
        "pull registry.example.com/acme/web:v2",
        "phase starting",
        "start v2 as c2",
        "phase started",
        "probe 10.0.0.2:8080/up -> ok",
        "keep c2 running",
        "phase switching",
        "route 10.0.0.2:8080 10.0.0.1:8080",
        "phase draining",
        "route 10.0.0.2:8080",
        "phase stopping",
        "stop c1 timeout=7",
        "remove c1",
    ]
    assert "web: v1 -> v2: health 2/2" in world["statuses"]
    assert "web: v1 -> v2: draining v1 (2 in flight)" in world["statuses"]
    pulling = [s for s in world["statuses"] if "pulling" in s]
    assert pulling == [
        "web: v1 -> v2: pulling registry.example.com/acme/web:v2",
        "web: v1 -> v2: pulling registry.example.com/acme/web:v2: 1.5 MB of 3.0 MB",
        "web: v1 -> v2: pulling registry.example.com/acme/web:v2: 3.0 MB of 3.0 MB",
    ]


def test_drain_waits_for_in_flight_requests_not_a_fixed_sleep(world):
    world["router"].in_flight_by_address["10.0.0.1:8080"] = [3, 3, 3, 2, 1, 0, 0]
    world["swap"].deploy(APP, ref("v2"), V1, "d1")
    stop_index = world["log"].index("stop c1 timeout=7")
    assert world["log"].index("route 10.0.0.2:8080") < stop_index
    assert world["router"].in_flight_by_address["10.0.0.1:8080"] == [0]  # every reading was consumed


def test_drain_gives_up_at_the_drain_timeout_and_still_stops_the_old(world):
    world["router"].in_flight_by_address["10.0.0.1:8080"] = [1]  # a request that never ends
    started = world["clock"].now
    world["swap"].deploy(APP, ref("v2"), V1, "d1")
    assert "stop c1 timeout=7" in world["log"]
    assert world["clock"].now - started >= APP.drain_timeout


def test_first_deploy_routes_only_the_new_container(world):
    outcome = world["swap"].deploy(APP, ref("v2"), None, "d1")
    assert outcome.changed
    assert [e for e in world["log"] if e.startswith(("route", "stop", "remove"))] == ["route 10.0.0.2:8080"]


def test_already_live_tag_is_a_noop(world):
    outcome = world["swap"].deploy(APP, ref("v1"), V1, "d1")
    assert not outcome.changed and outcome.running is V1
    assert world["log"] == []


def test_pull_always_with_same_image_is_a_noop_after_the_pull(world):
    app = AppConfig(**{**APP.__dict__, "pull": "always"})
    outcome = world["swap"].deploy(app, ref("v1"), V1, "d1")
    assert not outcome.changed
    assert not any(e.startswith("start") for e in world["log"])


def test_missing_pull_skips_pull_when_image_is_local(world):
    world["runtime"].local_images.add(f"{APP.image}:v2")
    world["swap"].deploy(APP, ref("v2"), V1, "d1")
    assert not any(e.startswith("pull") for e in world["log"])


def test_pull_never_refuses_an_image_that_is_not_local(world):
    app = AppConfig(**{**APP.__dict__, "pull": "never"})
    with pytest.raises(PermanentError, match='not on this host and pull = "never"'):
        world["swap"].deploy(app, ref("v2"), V1, "d1")
    assert world["runtime"].started == []


def test_pull_error_starts_nothing_and_touches_nothing(world):
    with pytest.raises(PermanentError, match="manifest unknown"):
        world["swap"].deploy(APP, ref("v404"), V1, "d1")
    assert world["runtime"].started == [] and world["router"].routes == []
    assert not any(e.startswith(("stop", "remove", "route")) for e in world["log"])


def test_a_pull_is_refused_before_it_starts_when_the_disk_is_too_full(world):
    world["runtime"].free = 200_000_000
    with pytest.raises(PermanentError, match="refusing to pull .*:v2: 200.0 MB free .* below min_free_space 1.0 GB"):
        world["swap"].deploy(APP, ref("v2"), V1, "d1")
    assert not any(e.startswith(("pull", "start")) for e in world["log"])


def test_unhealthy_new_version_is_removed_and_old_never_touched(world):
    world["prober"].results = ["HTTP 500"] * 1000
    with pytest.raises(PermanentError) as failure:
        world["swap"].deploy(APP, ref("v2"), V1, "d1")
    message = str(failure.value)
    assert "web: v1 -> v2: health check http://10.0.0.2:8080/up did not pass 2 times in a row" in message
    assert "last: HTTP 500" in message and "within 5s" in message
    assert world["runtime"].removed == ["c2"]
    assert not any(e.startswith(("route", "stop")) for e in world["log"])
    kept = world["journal"].kept_output.splitlines()  # for `zdd logs --failed`, until the next deploy
    assert kept[0].startswith("# zdd-web-d1, removed ") and kept[1:] == [
        "# web: v1 -> v2: never went live",
        "output of c2",
    ]
    world["prober"].results = []
    world["swap"].deploy(APP, ref("v2"), V1, "d2")
    assert world["journal"].kept_output == ""


def test_health_needs_consecutive_successes(world):
    world["prober"].results = [None, "HTTP 502", None, None]
    world["swap"].deploy(APP, ref("v2"), V1, "d1")
    probes = [e for e in world["log"] if e.startswith("probe")]
    assert len(probes) == 4


def test_new_container_that_exits_fails_the_gate(world):
    world["runtime"].exits_after_probes = 1
    world["prober"].results = ["connection refused"] * 10
    with pytest.raises(PermanentError, match="container zdd-web-d1 exited with code 1 before it became healthy"):
        world["swap"].deploy(APP, ref("v2"), V1, "d1")
    assert world["runtime"].removed == ["c2"]


def test_switch_failure_restores_the_old_route_and_removes_the_new(world):
    world["router"].fail_route = TemporaryError("Caddy admin API unreachable")
    with pytest.raises(TemporaryError):
        world["swap"].deploy(APP, ref("v2"), V1, "d1")
    assert world["router"].routes == [[["10.0.0.1:8080"]]]
    assert world["runtime"].removed == ["c2"]
    assert not any(e.startswith("stop") for e in world["log"])


def test_waits_tick_the_watchdog_and_sleep_the_configured_interval(world):
    world["prober"].results = ["connection refused"] * 5
    world["swap"].deploy(APP, ref("v2"), V1, "d1")
    assert len(world["ticks"]) >= 5
    assert world["clock"].sleeps[:5] == pytest.approx([APP.health_interval] * 5)


def test_probes_start_health_interval_apart_whatever_a_probe_takes(world):
    world["prober"].clock, world["prober"].took = world["clock"], 0.03
    world["prober"].results = ["connection refused"] * 3
    world["swap"].deploy(APP, ref("v2"), V1, "d1")
    gate = 3 + APP.health_successes - 1  # sleeps: after each failure, and between the passes
    assert world["clock"].sleeps[:gate] == pytest.approx([APP.health_interval - 0.03] * gate)


def test_the_gate_asks_docker_only_after_a_failed_probe(world):
    # A passing probe shows the container runs; a failed one may be a crash, which ends the gate at once.
    world["prober"].results = ["connection refused", None, "HTTP 502", None, None]
    world["swap"].deploy(APP, ref("v2"), V1, "d1")
    assert world["runtime"].exit_checks == 2


def test_finish_after_a_restart_routes_both_then_drains_and_stops_the_old(world):
    world["swap"].finish(APP, V2, V1, "d1")
    assert [e for e in world["log"] if not e.startswith("phase")] == [
        "route 10.0.0.2:8080 10.0.0.1:8080",
        "route 10.0.0.2:8080",
        "stop c1 timeout=7",
        "remove c1",
    ]


def test_phases_are_journaled_before_each_step(world):
    world["swap"].deploy(APP, ref("v2"), V1, "d1")
    assert world["journal"].phases == ["pulling", "starting", "started", "switching", "draining", "stopping"]


# The probation's own tests are in test_probation.py.


MIGRATES = replace(APP, release_command=("bin/rails", "db:migrate"), release_timeout=10.0)


def test_the_release_command_runs_once_before_the_new_version_starts_and_its_container_goes_after(world):
    world["runtime"].release_exits = [None, None, 0]  # runs for two polls, then exits 0
    world["swap"].deploy(MIGRATES, ref("v2"), V1, "d1")
    log = world["log"]
    assert log.index("phase releasing") < log.index("release v2: run r-d1") < log.index("phase starting")
    assert log.index("start v2 as c2") < log.index("remove r-d1")  # kept until the deploy ended
    assert world["runtime"].releases == {}


@pytest.mark.parametrize(
    ("exits", "message"),
    [
        ([3], "web: v1 -> v2: release command exited with code 3; last output: "),
        ([None] * 1000, "web: v1 -> v2: release command did not finish within 10s (release_timeout) and was killed"),
    ],
    ids=["fails", "times out"],
)
def test_a_failed_or_hung_release_fails_the_deploy_and_starts_nothing(world, exits, message):
    world["runtime"].release_exits = exits
    with pytest.raises(PermanentError, match=re.escape(message)):
        world["swap"].deploy(MIGRATES, ref("v2"), V1, "d1")
    assert world["runtime"].started == [] and not any(e.startswith("route") for e in world["log"])
    assert world["runtime"].releases == {}  # removed: the deploy ended
    assert "release command" in world["journal"].kept_output and "output of r-d1" in world["journal"].kept_output


def test_a_release_that_ran_before_a_restart_is_not_run_again(world):
    world["runtime"].releases = {"d1": "r-d1"}  # the retried deploy finds its release container
    world["swap"].deploy(MIGRATES, ref("v2"), V1, "d1")
    assert "release v2: found r-d1" in world["log"] and "start v2 as c2" in world["log"]


def test_a_stop_during_the_release_leaves_it_running_for_the_retry(world):
    world["runtime"].release_exits = [None] * 1000
    world["swap"].stopping = lambda: True
    with pytest.raises(TemporaryError, match="zdd is stopping; the release command runs on in zdd-web-d1-release"):
        world["swap"].deploy(MIGRATES, ref("v2"), V1, "d1")
    assert world["runtime"].releases == {"d1": "r-d1"} and world["runtime"].started == []


def test_a_release_waits_while_an_earlier_deploys_release_still_runs(world):
    world["runtime"].releases = {"d0": "r-d0"}
    world["runtime"].release_exits = [None, None, None, 0]  # the check, then two polls, then it ended
    world["swap"].deploy(MIGRATES, ref("v2"), V1, "d1")
    assert "release v2: run r-d1" in world["log"] and world["clock"].sleeps.count(0.2) >= 2


@pytest.mark.parametrize(
    ("exit_code", "took", "logged"),
    [
        (0, 0.0, "web: v1 -> v2: stopping v1 (zdd-web-1) took 0.0s, exit code 0"),
        (137, 7.0, "did not exit within apps.web.stop_timeout 7s of SIGTERM and was killed"),
        (137, 0.0, "took 0.0s, exit code 137"),  # killed before (out of memory), not at the stop timeout
        (-1, 0.0, "web: v1 -> v2: stopping v1 (zdd-web-1): it was already gone"),
    ],
)
def test_the_log_says_how_the_old_version_ended(world, caplog, exit_code, took, logged):
    world["runtime"].stop_exits["c1"] = exit_code
    world["runtime"].stop = lambda container_id, timeout: world["clock"].sleep(took)
    caplog.set_level("INFO")
    world["swap"].deploy(APP, ref("v2"), V1, "d1")
    assert logged in caplog.text


def test_a_crash_in_the_gate_is_told_as_docker_says_it_a_moment_later(world):
    # Docker sets OOMKilled a moment after the exit: the reason read after ENGINE_SETTLE is the one told.
    readings = iter(["exited with code 137", "exited with code 137 (out of memory)"])
    world["runtime"].exit_reason = lambda container_id: next(readings)
    world["prober"].results = ["connection refused"]
    with pytest.raises(PermanentError, match=r"exited with code 137 \(out of memory\) before it became healthy"):
        world["swap"].deploy(APP, ref("v2"), V1, "d1")
