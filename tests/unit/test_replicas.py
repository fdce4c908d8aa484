"""`replicas = N`: a version on N containers, gated, switched, drained, watched and rolled back as one set.

Over the swap's fakes; tests/integration/test_replicas.py runs the same against real Docker and Caddy."""

from dataclasses import replace

import pytest

from tests.support.fakes import collapse
from tests.unit.test_converge import V1_FOUND, V2_PHASE, running_deploy
from tests.unit.test_converge import world as converge_world  # noqa: F401  (a fixture)
from tests.unit.test_probation import run_out, watched  # noqa: F401  (a fixture)
from tests.unit.test_swap import APP, ref, world  # noqa: F401  (a fixture)
from zdd.caddy import render_fixed_snippet, snippet_fixed_addresses
from zdd.errors import PermanentError
from zdd.reconcile import Found, plan_app
from zdd.state import STATE_FORMAT, AppState, Replica, Running, State, StateStore, decode_replicas, encode_replicas
from zdd.swap import Container, phase_data

TWO = replace(APP, replicas=2)
V1_TWO = Running(
    "v1",
    "registry.example.com/acme/web:v1",
    "sha256:111",
    "c1",
    "zdd-web-d0",
    "10.0.0.1:8080",
    since=0.0,
    more=[Replica("c0", "zdd-web-d0-2", "10.0.0.100:8080")],
)


def test_a_deploy_gates_every_new_replica_switches_the_set_and_drains_every_old_one(world):  # noqa: F811
    world["router"].in_flight_by_address = {"10.0.0.1:8080": [1, 0], "10.0.0.100:8080": [3, 2, 1, 0]}
    outcome = world["swap"].deploy(TWO, ref("v2"), V1_TWO, "d1")

    assert outcome.running.addresses == ["10.0.0.2:8080", "10.0.0.3:8080"]
    assert outcome.running.names == "zdd-web-d1, zdd-web-d1-2"
    log = [e for e in collapse(world["log"]) if not e.startswith("phase")]
    assert log[log.index("start v2 as c2") :] == [
        "start v2 as c2",
        "start v2 as c3",  # both boot before the first probe
        "probe 10.0.0.2:8080/up -> ok",
        "probe 10.0.0.3:8080/up -> ok",
        "probe 10.0.0.2:8080/up -> ok",
        "probe 10.0.0.3:8080/up -> ok",
        "keep c2 running",
        "keep c3 running",
        "route [10.0.0.2:8080 10.0.0.3:8080] [10.0.0.1:8080 10.0.0.100:8080]",
        "route [10.0.0.2:8080 10.0.0.3:8080]",
        "stop c1 timeout=7",  # side by side (stop_all)
        "stop c0 timeout=7",
        "remove c1",
        "remove c0",
    ]
    # The drain waited for the busier old replica, and said what was in flight on both together.
    assert "web: v1 -> v2: draining v1 (4 in flight)" in world["statuses"]
    assert "web: v1 -> v2: health 2/2, 1/2" not in world["statuses"]  # each round probes both
    assert "web: v1 -> v2: health 2/2, 2/2" in world["statuses"]


def test_one_replica_that_crashes_in_the_gate_fails_the_deploy_and_removes_every_new_one(world):  # noqa: F811
    world["runtime"].crashed["c3"] = "exited with code 3"
    world["prober"].failing["10.0.0.3:8080"] = "connection refused"
    with pytest.raises(PermanentError, match=r"container zdd-web-d1-2 exited with code 3 before it became healthy"):
        world["swap"].deploy(TWO, ref("v2"), V1_TWO, "d1")
    assert world["runtime"].removed == ["c2", "c3"]
    assert world["router"].routes == [] and not any(e.startswith("stop") for e in world["log"])
    kept = world["journal"].kept_output
    assert "# zdd-web-d1, removed" in kept and "# zdd-web-d1-2, removed" in kept  # `zdd logs --failed`


def test_the_gate_times_out_naming_the_replica_that_never_passed(world):  # noqa: F811
    world["prober"].failing["10.0.0.3:8080"] = "HTTP 500"
    with pytest.raises(
        PermanentError, match=r"health check http://10.0.0.3:8080/up did not pass 2 times .*last: HTTP 500"
    ):
        world["swap"].deploy(TWO, ref("v2"), V1_TWO, "d1")
    assert world["runtime"].removed == ["c2", "c3"]


def test_one_replica_failing_its_probation_sends_the_traffic_back_to_the_old_set(watched):  # noqa: F811
    on_probation = replace(TWO, probation=2.0, health_interval=0.5)

    def second_replica_fails(now):
        if now > 1001:
            watched["prober"].failing["10.0.0.3:8080"] = "HTTP 502"

    watched["clock"].on_sleep = second_replica_fails
    run_out(watched, on_probation, V1_TWO)
    ((app, deploy, err),) = watched["ended"]
    assert "health check http://10.0.0.3:8080/up failed 2 times in a row (last: HTTP 502)" in str(err)
    assert watched["router"].routes[-1] == [["10.0.0.1:8080", "10.0.0.100:8080"]]
    assert {"c2", "c3"} <= set(watched["runtime"].removed) and "c1" not in watched["runtime"].removed


def test_the_phase_journal_and_the_state_file_keep_every_replica(tmp_path):
    new = replace(V1_TWO, tag="v2", container_id="c2", more=[Replica("c3", "zdd-web-d1-2", "10.0.0.3:8080")])
    assert phase_data(new, V1_TWO)["more"] == "c3,zdd-web-d1-2,10.0.0.3:8080"
    assert decode_replicas(encode_replicas(V1_TWO.replicas)) == V1_TWO.replicas
    store = StateStore(tmp_path)
    store.save(State(instance="ab12cd34", apps={"web": AppState(current=V1_TWO)}))
    assert store.load().app("web").current == V1_TWO
    assert (tmp_path / "state.toml").read_text().startswith(f"format = {STATE_FORMAT}\n")  # an older zdd refuses it


V2_TWO_FOUND = [
    Found("c2", "zdd-web-d2", True, "10.0.0.2:8080", "v2", "r/web:v2", "sha256:2", "d2", since=2.0),
    Found("c3", "zdd-web-d2-2", True, "10.0.0.3:8080", "v2", "r/web:v2", "sha256:2", "d2", since=2.0),
]
V1_MORE_FOUND = Found("c0", "zdd-web-1-2", True, "10.0.0.100:8080", "v1", "r/web:v1", "sha256:1", "d1", since=1.0)


def test_lost_state_adopts_the_routed_version_with_all_its_replicas():
    found = [V1_FOUND, V1_MORE_FOUND, *V2_TWO_FOUND]
    plan = plan_app("web", AppState(), found, {"10.0.0.3:8080"}, now=5.0)
    assert plan.current.addresses == ["10.0.0.2:8080", "10.0.0.3:8080"]
    assert {c.id for c in plan.remove} == {"c1", "c0"}


def test_a_crash_while_draining_replicas_finishes_with_every_container(converge_world):  # noqa: F811
    # Its second replica as journalled; dockerd has moved it since (V2_TWO_FOUND): it is followed.
    v2_phase = {**V2_PHASE, "name": "zdd-web-d2", "more": "c3,zdd-web-d2-2,10.0.0.33:8080"}
    running_deploy(converge_world, "draining", v2_phase)
    v1 = converge_world["state"].app("web").current
    converge_world["state"].app("web").current = replace(v1, more=[Replica("c0", "zdd-web-1-2", "10.0.0.100:8080")])
    converge_world["runtime"].found = [V1_FOUND, V1_MORE_FOUND, *V2_TWO_FOUND]
    converge_world["c"].converge([replace(APP, replicas=2)])
    assert [e for e in converge_world["log"] if not e.startswith("phase")] == [
        "route [10.0.0.2:8080 10.0.0.3:8080] [10.0.0.1:8080 10.0.0.100:8080]",
        "route [10.0.0.2:8080 10.0.0.3:8080]",
        "stop c1 timeout=7",
        "stop c0 timeout=7",
        "remove c1",
        "remove c0",
    ]
    assert converge_world["state"].app("web").current.addresses == ["10.0.0.2:8080", "10.0.0.3:8080"]


def test_a_crash_while_stopping_stops_what_still_runs_of_the_old_set_and_removes_it(converge_world):  # noqa: F811
    v2_phase = {"deploy": "d2", "container": "c2", "address": "10.0.0.2:8080", "tag": "v2", "old": "c1"}
    running_deploy(converge_world, "stopping", v2_phase)
    converge_world["runtime"].found = [V1_FOUND, V2_TWO_FOUND[0]]
    converge_world["c"].converge([APP])
    assert [e for e in converge_world["log"] if not e.startswith("phase")] == [
        "route 10.0.0.2:8080",  # no drain again: it had drained
        "stop c1 timeout=7",  # SIGTERM first, as the retire it was in would have done
        "remove c1",
    ]


def test_an_idle_converge_routes_around_a_replica_that_does_not_run(converge_world):  # noqa: F811
    v2 = Running(
        "v2",
        "r/web:v2",
        "sha256:2",
        "c2",
        "zdd-web-d2",
        "10.0.0.2:8080",
        2.0,
        [Replica("c3", "zdd-web-d2-2", "10.0.0.3:8080")],
    )
    converge_world["state"].app("web").current = v2
    stopped = replace(V2_TWO_FOUND[1], running=False, address="")
    converge_world["runtime"].found = [V2_TWO_FOUND[0], stopped]
    converge_world["router"].routes = [[["10.0.0.2:8080", "10.0.0.3:8080"]]]
    converge_world["c"].converge([replace(APP, replicas=2)])
    assert converge_world["router"].routes[-1] == [["10.0.0.2:8080"]]  # Docker may restart it: it stays
    assert converge_world["runtime"].removed == [] and converge_world["state"].app("web").current == v2
    converge_world["runtime"].found = V2_TWO_FOUND  # restarted at the same address
    converge_world["c"].converge([replace(APP, replicas=2)])
    assert converge_world["router"].routes[-1] == [["10.0.0.2:8080", "10.0.0.3:8080"]]


def test_a_new_replica_count_makes_a_deploy_of_the_live_version_a_real_one(world):  # noqa: F811
    live = replace(V1_TWO, tag="v2", reference="registry.example.com/acme/web:v2", image_id="sha256:222")
    outcome = world["swap"].deploy(replace(APP, replicas=3), ref("v2"), live, "d1")
    assert outcome.changed and len(outcome.running.replicas) == 3
    same = world["swap"].deploy(replace(APP, replicas=3), ref("v2"), outcome.running, "d2")
    assert not same.changed  # the count matches now: nothing to do


@pytest.mark.parametrize(
    ("addresses", "read_back"),
    [
        (["10.0.0.2:8080"], ["10.0.0.2:8080"]),
        (["10.0.0.2:8080", "10.0.0.3:8080"], ["10.0.0.2:8080", "10.0.0.3:8080"]),
        ([], []),  # not deployed: the 503 snippet names no upstream
    ],
)
def test_zdd_detach_pins_every_live_replica_and_a_later_adoption_reads_them_back(addresses, read_back):
    assert snippet_fixed_addresses(render_fixed_snippet(TWO, addresses)) == read_back


def test_a_replica_moved_in_the_gate_is_gated_where_it_runs_now_and_goes_live_there(world):  # noqa: F811
    # Swarm ran the second new task again on another node (its node failed): that one passes and goes live.
    world["prober"].failing["10.0.0.3:8080"] = "no answer within 2s"
    world["runtime"].moved["c3"] = Container("t9", "zdd-web-green.2", "10.0.0.9:8080")
    world["router"].in_flight_by_address = {"10.0.0.1:8080": [0], "10.0.0.100:8080": [0]}
    outcome = world["swap"].deploy(TWO, ref("v2"), V1_TWO, "d1")

    assert outcome.running.addresses == ["10.0.0.2:8080", "10.0.0.9:8080"]
    assert [r.container_id for r in outcome.running.replicas] == ["c2", "t9"]
    log = collapse(world["log"])
    assert "probe 10.0.0.9:8080/up -> ok" in log and "keep t9 running" in log and "keep c3 running" not in log
    assert "route [10.0.0.2:8080 10.0.0.9:8080] [10.0.0.1:8080 10.0.0.100:8080]" in log
    assert "web: v1 -> v2: health 2/2, 2/2" in world["statuses"]  # the moved one no longer counts


def test_a_deploy_whose_moved_replica_never_passes_discards_it_and_its_replacement(world):  # noqa: F811
    world["prober"].failing["10.0.0.3:8080"] = "no answer within 2s"
    world["prober"].failing["10.0.0.9:8080"] = "HTTP 500"
    world["runtime"].moved["c3"] = Container("t9", "zdd-web-green.2", "10.0.0.9:8080")
    with pytest.raises(PermanentError, match=r"health check http://10.0.0.9:8080/up did not pass .*last: HTTP 500"):
        world["swap"].deploy(TWO, ref("v2"), V1_TWO, "d1")
    assert world["runtime"].removed == ["c2", "c3", "t9"]
    assert world["router"].routes == []


def test_follow_gates_a_moved_live_replica_where_it_runs_now_and_routes_it_in_place(world):  # noqa: F811
    assert world["swap"].follow(TWO, V1_TWO) is V1_TWO  # nothing moved: nothing to do
    assert world["router"].routes == []
    world["runtime"].moved["c0"] = Container("t7", "zdd-web-blue.2", "10.0.0.7:8080")
    followed = world["swap"].follow(TWO, V1_TWO)

    assert [r.container_id for r in followed.replicas] == ["c1", "t7"]  # in its place, the other one kept
    assert followed.addresses == ["10.0.0.1:8080", "10.0.0.7:8080"]
    assert (followed.tag, followed.image_id, followed.since) == (V1_TWO.tag, V1_TWO.image_id, V1_TWO.since)
    log = collapse(world["log"])
    assert log.index("probe 10.0.0.7:8080/up -> ok") < log.index("route [10.0.0.1:8080 10.0.0.7:8080]")


def test_follow_routes_nothing_new_when_the_moved_replica_fails_its_gate(world):  # noqa: F811
    world["runtime"].moved["c0"] = Container("t7", "zdd-web-blue.2", "10.0.0.7:8080")
    world["prober"].failing["10.0.0.7:8080"] = "HTTP 500"
    with pytest.raises(PermanentError, match=r"web: v1: moved: health check http://10.0.0.7:8080/up did not pass"):
        world["swap"].follow(TWO, V1_TWO)
    assert world["router"].routes == []


def test_a_replica_that_stopped_after_it_passed_does_not_go_live(world):  # noqa: F811
    # It answered its probes, then its engine no longer runs it (a crash; a drained node's task in its grace).
    world["runtime"].dead.add("c3")
    with pytest.raises(PermanentError, match=r"http://10.0.0.3:8080/up did not pass 2 times .*last: stopped after it"):
        world["swap"].deploy(TWO, ref("v2"), V1_TWO, "d1")
    assert world["router"].routes == [] and world["runtime"].removed == ["c2", "c3"]
