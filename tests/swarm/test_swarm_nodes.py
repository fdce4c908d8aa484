"""Nodes that leave the Swarm in the middle of a deploy under load, while a task of the live version and
one of the new version, in its gate, run on them.

A node killed (its container: its dockerd and every task on it gone at once, no connection closed):
zdd dns leaves the dead task out of its answer within a second; Swarm runs the lost tasks again on the
third node; the gate follows the new version's task there, and the deploy goes live on the nodes that are
left. Requests already in flight on the node fail: they are counted apart.

A node drained by its operator (`docker node update --availability drain`): Swarm stops its tasks
(SIGTERM: the app finishes what it serves) and runs them elsewhere; the gate follows, nothing fails.

Between deploys, a task Swarm moved off a dead node is gated and routed where it runs now."""

import threading
import time

from tests.conftest import CADDY_BINARIES
from tests.support.load import LoadClient
from tests.support.swarm import PORT, wait_for_nodes, wait_serving, zdd_on_swarm
from zdd import dns
from zdd.routes import node_host, srv_name

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


def test_the_live_version_follows_a_task_swarm_moved_off_a_killed_node(cluster, tmp_path):
    """Between deploys: a worker with a live task dies; zdd dns stops naming it within a second, Swarm runs
    the task again on the third node, and Swap.follow gates it there and routes it (the agent's reconcile
    calls it), so the app is back to its two tasks."""
    caddy = CADDY_BINARIES["caddy2.6"]  # Debian's, and the stricter one: it cannot send a POST twice
    repository = cluster.images["v1"].rpartition(":")[0]
    with zdd_on_swarm(cluster, tmp_path, caddy, repository, start_timeout="60s", stop_timeout="5s") as stack:
        v1 = stack.deploy("v1", None, 1)
        victim = next(n for n in cluster.nodes[1:] if n.address in {a.rpartition(":")[0] for a in v1.addresses})
        try:
            with LoadClient(stack.caddy.port) as load:
                time.sleep(1.5)
                cluster.stop_node(victim)
                killed = time.monotonic()
                followed = v1
                while followed is v1 and time.monotonic() < killed + 60:
                    time.sleep(1)
                    followed = stack.swap.follow(stack.app, v1)
                routed = time.monotonic()
                time.sleep(2)
            in_flight = [r for r in load.failures if r.started < killed]
            later = [r for r in load.failures if r.started >= killed]
            print(
                f"{load.summary()}\nkilled {victim.name}; failed: {len(in_flight)} in flight at the kill, {len(later)} "
                f"sent after it; the moved task routed {routed - killed:.1f}s after the kill: {followed.addresses}"
            )
            assert [r for r in later if r.kind != "post" or r.started > killed + LEFT_OUT_WITHIN] == [], load.summary()
            # The task that was on the dead node now runs, gated and routed, on the node that had none.
            assert followed is not v1 and len(followed.replicas) == 2
            assert victim.address not in {a.rpartition(":")[0] for a in followed.addresses}
            assert len({a.rpartition(":")[0] for a in followed.addresses}) == 2
            answer = dns.resolve_srv(stack.dns.address, srv_name("web", stack.state.instance))
            assert sorted(f"{node_host(name, stack.state.instance)}:{port}" for name, port in answer) == sorted(
                followed.addresses
            )
            assert load.bodies_after(routed) == {"v1"}
        finally:
            cluster.start_node(victim)
            wait_for_nodes(cluster.manager.client(), len(cluster.nodes))
