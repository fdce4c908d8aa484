"""What a restarted agent does, for each phase a crash can leave behind."""

from zdd.converge import kept_groups
from zdd.reconcile import Found, plan_app, same_slots, slot_restarts
from zdd.state import AppState, Replica, Running

OLD = Running(
    tag="v1",
    reference="r:v1",
    image_id="i1",
    container_id="c1",
    container_name="zdd-web-1",
    address="10.0.0.1:8080",
    since=1.0,
)
OLD_FOUND = Found("c1", "zdd-web-1", True, "10.0.0.1:8080")
NEW_FOUND = Found("c2", "zdd-web-2", True, "10.0.0.2:8080")
NEW_DATA = {
    "deploy": "d2",
    "container": "c2",
    "address": "10.0.0.2:8080",
    "tag": "v2",
    "reference": "r:v2",
    "image": "i2",
    "name": "zdd-web-2",
    "old": "c1",
}


def plan(phase: str, containers, routed=frozenset(), data=None):
    state = AppState(current=OLD, phase=phase, phase_data=dict(data if data is not None else NEW_DATA))
    return plan_app("web", state, list(containers), set(routed), now=99.0)


def test_idle_keeps_current_and_removes_leaked_containers():
    leaked = Found("c9", "zdd-web-9", False, "")
    p = plan("", [OLD_FOUND, leaked], data={})
    assert p.current == OLD and p.remove == [leaked] and p.interrupted == ""


def test_crash_while_starting_removes_the_new_container():
    p = plan("starting", [OLD_FOUND, NEW_FOUND], data={"deploy": "d2"})
    assert p.current == OLD and p.remove == [NEW_FOUND] and p.interrupted == "before-switch"


def test_crash_after_start_before_switch_removes_the_new_container():
    for phase in ("started", "switching"):
        p = plan(phase, [OLD_FOUND, NEW_FOUND], routed={"10.0.0.1:8080"})
        assert p.current == OLD and p.remove == [NEW_FOUND] and p.drain_and_stop is None, phase


def test_crash_during_switch_after_caddy_switched_finishes_the_deploy():
    p = plan("switching", [OLD_FOUND, NEW_FOUND], routed={"10.0.0.2:8080", "10.0.0.1:8080"})
    assert p.current.container_id == "c2" and p.drain_and_stop == OLD and p.interrupted == "after-switch"


def test_crash_while_draining_finishes_the_deploy_with_a_drain():
    p = plan("draining", [OLD_FOUND, NEW_FOUND])
    assert p.current.tag == "v2" and p.current.address == "10.0.0.2:8080" and p.drain_and_stop == OLD
    assert p.remove == []


def test_crash_while_stopping_stops_and_removes_the_already_drained_old_without_a_drain_or_probation():
    p = plan("stopping", [OLD_FOUND, NEW_FOUND])
    assert p.current.container_id == "c2" and p.drain_and_stop == OLD and p.remove == []
    assert p.probation_until is not None  # over already: the swap retires the old at once


def test_crash_while_stopping_after_old_was_removed():
    p = plan("stopping", [NEW_FOUND])
    assert p.current.container_id == "c2" and p.drain_and_stop is None and p.interrupted == "after-switch"


def test_new_container_dead_after_switch_falls_back_to_old_and_is_not_retried():
    dead = Found("c2", "zdd-web-2", False, "")
    for phase in ("draining", "probation"):
        p = plan(phase, [OLD_FOUND, dead])
        assert p.current == OLD and p.remove == [dead] and p.interrupted == "rolled-back", phase
    p = plan("probation", [OLD_FOUND])  # removed by hand, or by the agent's own roll-back before it died
    assert p.current == OLD and p.remove == [] and p.interrupted == "rolled-back"


def test_crash_in_probation_finishes_the_probation_then_stops_the_old():
    p = plan("probation", [OLD_FOUND, NEW_FOUND], data={**NEW_DATA, "until": "1234.5"})
    assert p.current.container_id == "c2" and p.drain_and_stop == OLD and p.probation_until == 1234.5
    assert p.interrupted == "after-switch" and p.remove == []


def test_crash_while_draining_has_no_probation_deadline_yet():
    assert plan("draining", [OLD_FOUND, NEW_FOUND]).probation_until is None


def test_current_container_gone_is_noted():
    p = plan("", [], data={})
    assert p.current is None and "is gone" in p.notes[0]


def test_a_container_restarted_on_another_ip_is_followed():
    moved = Found("c1", "zdd-web-1", True, "10.0.0.9:8080")
    p = plan("", [moved], data={})
    assert p.current.address == "10.0.0.9:8080" and p.current.container_id == "c1" and "moved" in p.notes[0]


def test_a_deploy_finished_after_a_dockerd_restart_follows_both_containers_to_their_new_addresses():
    moved_new = Found("c2", "zdd-web-2", True, "10.0.0.7:8080")
    moved_old = Found("c1", "zdd-web-1", True, "10.0.0.8:8080")
    p = plan("draining", [moved_old, moved_new])
    assert p.current.address == "10.0.0.7:8080" and p.drain_and_stop.address == "10.0.0.8:8080"
    assert "web: v2 moved from 10.0.0.2:8080 to 10.0.0.7:8080" in p.notes


# --- an app on a Swarm: its "containers" are tasks, one per slot, and a colour is removed as a whole --------
def task(task_id: str, colour: str, slot: int, node: str, running: bool = True, deploy: str = "d1") -> Found:
    service = f"zdd-web-{colour}"
    return Found(task_id, f"{service}.{slot}", running, f"{node}:18301", tag="v1", deploy=deploy, group=service)


# v1 on blue's two tasks, as state.toml records an app on a Swarm.
BLUE = OLD.with_replicas(
    [Replica("t1", "zdd-web-blue.1", "10.216.0.11:18301"), Replica("t2", "zdd-web-blue.2", "10.216.0.12:18301")]
)


def test_a_task_swarm_ran_again_in_its_slot_is_the_live_version_not_a_leftover():
    # Node 10.216.0.12 failed: slot 2 runs again on .13 as a new task; the green colour is a leftover.
    moved = task("t9", "blue", 2, "10.216.0.13")
    leftover = task("g1", "green", 1, "10.216.0.11", deploy="d0")
    state = AppState(current=BLUE)
    p = plan_app("web", state, [task("t1", "blue", 1, "10.216.0.11"), moved, leftover], set(), now=99.0)
    assert [(r.container_id, r.address) for r in p.current.replicas] == [
        ("t1", "10.216.0.11:18301"),
        ("t9", "10.216.0.13:18301"),
    ]
    assert p.remove == [leftover] and p.interrupted == ""


def test_a_slot_with_no_task_yet_keeps_the_others_serving():
    p = plan_app("web", AppState(current=BLUE), [task("t1", "blue", 1, "10.216.0.11")], set(), now=99.0)
    assert [r.container_id for r in p.current.replicas] == ["t1"] and p.remove == []


def test_same_slots_leaves_local_containers_alone():
    assert same_slots(OLD, [Found("c7", "zdd-web-1", True, "10.0.0.7:8080")]) == OLD
    assert same_slots(None, [task("t1", "blue", 1, "10.216.0.11")]) is None


def test_a_crash_after_the_switch_finishes_on_the_tasks_that_run_now():
    # Draining when the agent died; green's slot 1 ran again elsewhere meanwhile.
    data = {
        "deploy": "d2",
        "container": "g1",
        "name": "zdd-web-green.1",
        "address": "10.216.0.11:18302",
        "tag": "v2",
        "reference": "r:v2",
        "image": "sha256:2",
    }
    green = Found("g7", "zdd-web-green.1", True, "10.216.0.13:18302", tag="v2", deploy="d2", group="zdd-web-green")
    found = [task("t1", "blue", 1, "10.216.0.11"), task("t2", "blue", 2, "10.216.0.12"), green]
    p = plan_app("web", AppState(current=BLUE, phase="draining", phase_data=data), found, set(), now=99.0)
    assert p.interrupted == "after-switch" and p.current.container_id == "g7"
    assert p.current.address == "10.216.0.13:18302" and p.drain_and_stop == BLUE and p.remove == []


def test_a_slot_whose_new_task_does_not_run_yet_keeps_its_replica_unrouted():
    # Slot 2's task exited or its node failed; Swarm's new task waits out its restart delay (or pulls).
    starting = task("t9", "blue", 2, "10.216.0.13", running=False)
    p = plan_app("web", AppState(current=BLUE), [task("t1", "blue", 1, "10.216.0.11"), starting], set(), now=99.0)
    assert p.current == BLUE and {"t2", "t9"} <= p.down
    assert p.routable(p.current).addresses == ["10.216.0.11:18301"]
    assert kept_groups([task("t1", "blue", 1, "10.216.0.11"), starting], p) == {"zdd-web-blue"}


def test_the_only_task_restarting_keeps_the_live_colour():
    one = BLUE.with_replicas([Replica("t1", "zdd-web-blue.1", "10.216.0.11:18301")])
    starting = task("t9", "blue", 1, "10.216.0.13", running=False)
    p = plan_app("web", AppState(current=one), [starting], set(), now=99.0)
    assert p.current == one and p.routable(p.current) == one  # no route is worse than a stale one
    assert kept_groups([starting], p) == {"zdd-web-blue"}  # never scaled to 0 while it restarts


def test_slot_restarts_name_the_replicas_whose_slot_runs_another_task():
    found = [task("t1", "blue", 1, "10.216.0.11"), task("t9", "blue", 2, "10.216.0.13")]
    assert slot_restarts(BLUE, found) == {"t2": found[1]}
    assert slot_restarts(BLUE, [found[0], task("t9", "blue", 2, "10.216.0.13", running=False)]) == {}
    assert slot_restarts(OLD, [Found("c7", "zdd-web-1", True, "10.0.0.7:8080")]) == {}


def test_a_crash_while_stopping_with_the_new_task_restarting_finishes_the_deploy():
    """The manager rebooted: the agent died stopping blue, and green's task with it; Swarm runs it again."""
    data = {
        "deploy": "d2",
        "container": "g1",
        "name": "zdd-web-green.1",
        "address": "10.216.0.11:18302",
        "tag": "v2",
        "reference": "r:v2",
        "image": "sha256:2",
    }
    green = Found("g7", "zdd-web-green.1", False, "", tag="v2", deploy="d2", group="zdd-web-green")
    p = plan_app("web", AppState(current=BLUE, phase="stopping", phase_data=data), [green], set(), now=99.0)
    assert p.interrupted == "after-switch" and p.current.container_id == "g1"
    assert p.drain_and_stop is None  # blue was scaled to 0 before the crash: nothing of it is left
    assert kept_groups([green], p) == {"zdd-web-green"} and p.routable(p.current) == p.current
