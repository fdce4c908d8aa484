"""Nodes that leave the Swarm in the middle of a deploy under load, while a task of the live version and
one of the new version, in its gate, run on them.

A node killed (its container: its dockerd and every task on it gone at once, no connection closed):
zdd dns leaves the dead task out of its answer within a second; Swarm runs the lost tasks again on the
third node; the gate follows the new version's task there, and the deploy goes live on the nodes that are
left. Requests already in flight on the node fail: they are counted apart.

A node drained by its operator (`docker node update --availability drain`): Swarm stops its tasks
(SIGTERM: the app finishes what it serves) and runs them elsewhere; the gate follows, nothing fails."""

import threading
import time

from tests.conftest import CADDY_BINARIES
from tests.support.load import LoadClient
from tests.support.swarm import PORT, wait_for_nodes, wait_serving, zdd_on_swarm

# Caddy before 2.11 cannot send a request with a body a second time (caddy#7360): a POST that it sent
# to the dead node before zdd dns left it out fails, where a later Caddy sends it to another task.
LEFT_OUT_WITHIN = 2.0


def test_a_node_killed_during_the_gate_costs_only_the_requests_in_flight_on_it(cluster, tmp_path, caddy_binary):
    repository = cluster.images["v1"].rpartition(":")[0]
    # 30 probes 100 ms apart: the gate lasts about 3 s once the tasks run, long enough to kill a node in it.
    settings = {"start_timeout": "60s", "drain_timeout": "10s", "stop_timeout": "5s", "health_successes": 30}
    with zdd_on_swarm(cluster, tmp_path, caddy_binary, repository, ports=(PORT, PORT + 1), **settings) as stack:
        runtime = stack.swap.runtime
        v1 = stack.deploy("v1", None, 1)
        deployed: dict = {}

        def deploy_v2() -> None:
            try:
                deployed["v2"] = stack.deploy("v2", v1, 2)
            except Exception as err:  # told by the assertion below
                deployed["error"] = err

        with LoadClient(stack.caddy.port) as load:
            time.sleep(1.5)
            deploying = threading.Thread(target=deploy_v2)
            deploying.start()
            green = {task.node_address for task in wait_serving(runtime, "web", "green", cluster.images["v2"], 2)}
            blue = {task.node_address for task in runtime.tasks("web", "blue")}
            # A worker (zdd runs on the manager) with a new task, and a live one too if a worker has both.
            victim = max((n for n in cluster.nodes[1:] if n.address in green), key=lambda n: n.address in blue)
            cluster.stop_node(victim)
            killed = time.monotonic()  # a request sent while the kill ran was in flight on the node, or not
            deploying.join(timeout=120)
            live = time.monotonic()
            time.sleep(1.5)
        try:
            in_flight = [r for r in load.failures if r.started < killed]
            later = [r for r in load.failures if r.started >= killed]
            print(
                f"{load.summary()}\nkilled {victim.name} ({victim.address}); failed: {len(in_flight)} in flight "
                f"at the kill, {len(later)} sent after it; v2 live {live - killed:.1f}s after the kill\n"
                + "\n".join(
                    f"  {r.kind} {r.started - killed:+.3f}s..{r.ended - killed:+.3f}s: {r.error or r.status}"
                    for r in load.failures
                )
            )
            assert "error" not in deployed, deployed.get("error")
            v2 = deployed["v2"]
            if caddy_binary == CADDY_BINARIES["caddy2.6"]:
                assert [r for r in later if r.kind != "post" or r.started > killed + LEFT_OUT_WITHIN] == [], (
                    load.summary()
                )
            else:
                assert later == [], load.summary()
            # zdd dns left the dead task out; the new version went live on the two nodes left, one task each.
            assert f"the task at {victim.address}:{PORT} did not accept a connection" in stack.dns.log
            assert victim.address not in {a.rpartition(":")[0] for a in v2.addresses}
            assert len({a.rpartition(":")[0] for a in v2.addresses}) == 2
            assert load.bodies_after(live + 0.5) == {"v2"}
        finally:
            cluster.start_node(victim)
            wait_for_nodes(cluster.manager.client(), len(cluster.nodes))


def test_a_node_drained_during_the_gate_fails_nothing(cluster, tmp_path, caddy_binary):
    repository = cluster.images["v1"].rpartition(":")[0]
    settings = {"start_timeout": "60s", "drain_timeout": "10s", "stop_timeout": "5s", "health_successes": 30}
    manager = cluster.manager.client()
    with zdd_on_swarm(cluster, tmp_path, caddy_binary, repository, ports=(PORT, PORT + 1), **settings) as stack:
        runtime = stack.swap.runtime
        v1 = stack.deploy("v1", None, 1)
        deployed: dict = {}

        def deploy_v2() -> None:
            try:
                deployed["v2"] = stack.deploy("v2", v1, 2)
            except Exception as err:  # told by the assertion below
                deployed["error"] = err

        with LoadClient(stack.caddy.port) as load:
            time.sleep(1.5)
            deploying = threading.Thread(target=deploy_v2)
            deploying.start()
            green = {task.node_address for task in wait_serving(runtime, "web", "green", cluster.images["v2"], 2)}
            blue = {task.node_address for task in runtime.tasks("web", "blue")}
            drained = next(n for n in manager.nodes.list() if n.attrs["Status"]["Addr"] in blue & green)
            set_availability(drained, "drain")
            started = time.monotonic()
            try:
                deploying.join(timeout=120)
                live = time.monotonic()
                time.sleep(1.5)
            finally:
                set_availability(manager.nodes.get(drained.id), "active")
        address = drained.attrs["Status"]["Addr"]
        print(
            f"{load.summary()}\ndrained {drained.attrs['Description']['Hostname']} ({address}); "
            f"v2 live {live - started:.1f}s after the drain\n"
            + "\n".join(f"  {r.kind} {r.started - started:+.3f}s: {r.error or r.status}" for r in load.failures)
        )
        assert "error" not in deployed, deployed.get("error")
        v2 = deployed["v2"]
        if caddy_binary == CADDY_BINARIES["caddy2.6"]:
            # A POST Caddy 2.6 sent to the stopped task before zdd dns left it out cannot be sent again.
            assert [r for r in load.failures if r.kind != "post" or r.started > started + LEFT_OUT_WITHIN + 5] == []
        else:
            assert load.failures == [], load.summary()
        assert address not in {a.rpartition(":")[0] for a in v2.addresses}
        assert len({a.rpartition(":")[0] for a in v2.addresses}) == 2
        assert load.bodies_after(live + 0.5) == {"v2"}


def set_availability(node, availability: str) -> None:
    spec = dict(node.attrs["Spec"], Availability=availability)
    node.update(spec)
