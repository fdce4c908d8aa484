"""agent/swarm_runtime.py against a real 3-node Swarm: two colours of an app run side by side on the
same nodes, one task per node, each answering at its node's address; a colour scaled to 0 stays for
going back; an image no node can pull is told with the node and Docker's reason; a node that fails has
its task started again elsewhere."""

import time

import pytest

from tests.support.swarm import PORT, get, wait_serving
from zdd.config import AppConfig
from zdd.swarm_runtime import SwarmRuntime, serving


@pytest.fixture
def runtime(cluster):
    runtime = SwarmRuntime(cluster.manager.client())
    yield runtime
    for colour in ("blue", "green"):
        runtime.remove_service("web", colour)


def test_two_colours_run_side_by_side_one_task_per_node_and_a_scaled_down_one_stays(cluster, runtime):
    app = AppConfig(name="web", image="zdd-it/web", port=8080, replicas=2, env={"GREETING": "hi"})
    runtime.put(app, "blue", cluster.images["v1"], "zdd-it/web:v1", "d1", PORT)
    blue = wait_serving(runtime, "web", "blue", cluster.images["v1"], 2)
    assert len({task.node for task in blue}) == 2, blue
    assert {task.node_address for task in blue} <= {node.address for node in cluster.nodes}
    assert [get(task.address(PORT)) for task in blue] == ["v1", "v1"]

    runtime.put(app, "green", cluster.images["v2"], "zdd-it/web:v2", "d2", PORT + 1)
    green = wait_serving(runtime, "web", "green", cluster.images["v2"], 2)
    # Both versions serve at once, on their own ports, with no port clash on a node that runs both.
    assert [get(task.address(PORT + 1)) for task in green] == ["v2", "v2"]
    assert [get(task.address(PORT)) for task in blue] == ["v1", "v1"]

    runtime.scale("web", "blue", 0)
    deadline = time.monotonic() + 30
    while runtime.tasks("web", "blue") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert runtime.tasks("web", "blue") == []
    colours = runtime.colours("web")
    assert (colours["blue"].deploy_id, colours["blue"].replicas, colours["blue"].port) == ("d1", 0, PORT)
    assert (colours["green"].deploy_id, colours["green"].replicas, colours["green"].port) == ("d2", 2, PORT + 1)
    assert [get(task.address(PORT + 1)) for task in green] == ["v2", "v2"]

    # Going back: the kept service is scaled up again, with no new service and no new spec.
    runtime.scale("web", "blue", 2)
    again = wait_serving(runtime, "web", "blue", cluster.images["v1"], 2)
    assert [get(task.address(PORT)) for task in again] == ["v1", "v1"]


def test_an_image_no_node_can_pull_is_told_with_the_node_and_dockers_reason(cluster, runtime):
    app = AppConfig(name="web", image="zdd-it/web", port=8080, replicas=2)
    missing = cluster.images["v1"].replace(":v1", ":not-pushed")
    runtime.put(app, "green", missing, "zdd-it/web:not-pushed", "d3", PORT + 1)
    deadline = time.monotonic() + 60
    while not runtime.failed_tasks("web", "green") and time.monotonic() < deadline:
        time.sleep(0.3)
    failed = runtime.failed_tasks("web", "green")
    assert failed, runtime.tasks("web", "green")
    assert failed[0].state == "rejected" and failed[0].node in {"node1", "node2", "node3"}, failed[0]
    assert "not-pushed" in failed[0].error or "manifest unknown" in failed[0].error, failed[0].error
    assert serving(runtime.tasks("web", "green"), missing, 2) is None


def test_a_failed_node_has_its_task_started_on_another_node(cluster, runtime):
    app = AppConfig(name="web", image="zdd-it/web", port=8080, replicas=2)
    runtime.put(app, "blue", cluster.images["v1"], "zdd-it/web:v1", "d4", PORT)
    blue = wait_serving(runtime, "web", "blue", cluster.images["v1"], 2)
    worker = next(node for node in cluster.nodes[1:] if node.address in {task.node_address for task in blue})
    killed = time.monotonic()
    cluster.stop_node(worker)
    moved = None
    deadline = time.monotonic() + 120
    while moved is None and time.monotonic() < deadline:
        ready = serving(runtime.tasks("web", "blue"), cluster.images["v1"], 2)
        if ready is not None and worker.address not in {task.node_address for task in ready}:
            moved = ready
        time.sleep(0.5)
    assert moved is not None, runtime.tasks("web", "blue")
    print(f"the task of a killed node ran again on another node {time.monotonic() - killed:.1f} s later")
    assert [get(task.address(PORT)) for task in moved] == ["v1", "v1"]
