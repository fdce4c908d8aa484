"""zdd's own swap algorithm (agent/swap.py, unchanged) deploying across a real 3-node Swarm, with
SwarmRuntime as its Runtime, real Caddy (2.6.2 and current), a real `zdd dns` and the state journal:
v1, then v2 and v3 under load with 0 failed requests, each on the other colour's tasks, 2 replicas on
2 nodes; a version whose health check fails on its nodes leaves the live one serving, untouched."""

import dataclasses
import time

import pytest

from tests.support.load import LoadClient
from tests.support.swarm import PORT, SUBNET, zdd_on_swarm
from zdd.errors import PermanentError
from zdd.reference import parse_reference
from zdd.swarm_runtime import ENDED


@pytest.fixture
def swarm_stack(cluster, tmp_path, caddy_binary):
    repository = cluster.images["v1"].rpartition(":")[0]
    timeouts = {"start_timeout": "40s", "drain_timeout": "20s", "stop_timeout": "5s"}
    with zdd_on_swarm(cluster, tmp_path, caddy_binary, repository, ports=(PORT, PORT + 1), **timeouts) as stack:
        yield stack


def test_deploys_across_the_swarm_under_load_drop_nothing_and_a_failing_gate_keeps_the_live_set(cluster, swarm_stack):
    swap, caddy, state = swarm_stack.swap, swarm_stack.caddy, swarm_stack.state
    runtime = swap.runtime

    def deploy(tag: str, current, number: int):
        started = time.monotonic()
        running = swarm_stack.deploy(tag, current, number)
        print(f"deploy of {tag}: {time.monotonic() - started:.2f}s on {running.addresses}")
        return running

    v1 = deploy("v1", None, 1)
    assert [r.container_name for r in v1.replicas] == ["zdd-web-blue.1", "zdd-web-blue.2"]
    assert {a.rpartition(":")[2] for a in v1.addresses} == {str(PORT)}

    with LoadClient(caddy.port) as load:
        time.sleep(1.5)
        v2 = deploy("v2", v1, 2)
        v2_live = time.monotonic()
        time.sleep(1.5)
        with pytest.raises(PermanentError) as failed:  # its gate's wait is all of start_timeout: a short one
            swarm_stack.app = dataclasses.replace(swarm_stack.app, start_timeout=10)
            deploy("sick", v2, 3)
        swarm_stack.app = dataclasses.replace(swarm_stack.app, start_timeout=40)
        kept = swap.journal.failed_output.path("web").read_text()  # until the next deploy begins
        time.sleep(1.5)
        v3_started = time.monotonic()
        v3 = deploy("v3", v2, 4)
        v3_live = time.monotonic()
        time.sleep(1.5)
    print(f"{load.summary()}\nthe failed deploy: {failed.value}")

    assert load.failures == [], load.summary()
    # Each version on the other colour, 2 tasks on 2 nodes, the old colour scaled to 0 once drained.
    assert {a.rpartition(":")[2] for a in v2.addresses} == {str(PORT + 1)}
    assert {a.rpartition(":")[2] for a in v3.addresses} == {str(PORT)}
    assert len({a.rpartition(":")[0] for a in v3.addresses}) == 2
    assert runtime.tasks("web", "green") == [] and len(runtime.tasks("web", "blue")) == 2
    # Retired means stopped, not only no longer wanted: every task green ever ran has ended.
    assert {task["Status"]["State"] for task in runtime.api.tasks(filters={"service": "zdd-web-green"})} <= ENDED
    # The sick version's gate named the task's URL; v2 served on, and its colour stayed in place.
    assert f"health check http://{SUBNET}." in str(failed.value) and "/up" in str(failed.value)
    assert {r.body for r in load.results if v2_live + 0.5 < r.started < v3_started} == {"v2"}
    assert load.bodies_after(v3_live + 0.5) == {"v3"}
    # The failed version's tasks' output was kept for `zdd status`, read through Swarm from their nodes.
    assert "# zdd-web-blue.1, removed" in kept and "# zdd-web-blue.2, removed" in kept, kept
    # The journal went through every phase to the last, with the tasks by id (the daemon clears it after).
    journal = state.app("web")
    assert (journal.phase, journal.phase_data["container"]) == ("stopping", v3.container_id)


def test_a_rollback_in_probation_routes_back_to_the_kept_colour_under_load(cluster, tmp_path, caddy_binary):
    """The old colour stays running, unrouted, through the new one's probation: going back is a new SRV
    answer, then the new colour is scaled to 0. The version after it goes to the freed colour."""
    repository = cluster.images["v1"].rpartition(":")[0]
    settings = {"start_timeout": "40s", "stop_timeout": "5s", "probation": "60s"}
    with zdd_on_swarm(cluster, tmp_path, caddy_binary, repository, ports=(PORT, PORT + 1), **settings) as stack:
        swap, app, runtime = stack.swap, stack.app, stack.swap.runtime
        v1 = stack.deploy("v1", None, 1)
        with LoadClient(stack.caddy.port) as load:
            time.sleep(1.5)
            outcome = swap.deploy(app, parse_reference("v2", repository), v1, "d2")
            assert outcome.probation_until is not None and outcome.old == v1
            kept = [task.id for task in runtime.tasks("web", "blue")]
            time.sleep(1.5)
            with pytest.raises(PermanentError) as rolled:
                swap.roll_back(app, outcome.running, v1, "d2", "HTTP 500 from /up", "in probation")
            went_back = time.monotonic()  # roll_back returns once Caddy has had time to see the route back
            time.sleep(1.5)
            v3_started = time.monotonic()
            v3 = stack.deploy("v3", v1, 3)
            v3_live = time.monotonic()
            time.sleep(1.5)
        print(f"{load.summary()}\nthe rollback: {rolled.value}")

    assert load.failures == [], load.summary()
    assert sorted(kept) == sorted(r.container_id for r in v1.replicas)  # v1's very tasks, no new ones
    assert "traffic is back on v1" in str(rolled.value)
    assert {r.body for r in load.results if went_back + 0.5 < r.started < v3_started} == {"v1"}
    assert load.bodies_after(v3_live + 0.5) == {"v3"}
    assert {a.rpartition(":")[2] for a in v3.addresses} == {str(PORT + 1)}  # green again: it was freed
