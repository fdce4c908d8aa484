"""Nodes that leave the Swarm in the middle of a deploy under load, while a task of the live version and
one of the new version, in its gate, run on them.

A node killed (its container: its dockerd and every task on it gone at once, no connection closed):
zdd dns leaves the dead task out of its answer within a second; Swarm runs the lost tasks again on the
third node; the gate follows the new version's task there, and the deploy goes live on the nodes that are
left. Requests already in flight on the node fail: they are counted apart.

A node drained by its operator (`docker node update --availability drain`): Swarm stops its tasks at once
(SIGTERM) and runs them elsewhere; the gate follows. Only what the live task was serving when its app
stopped may fail (Swarm stopped it, routed), and nothing after.

Between deploys, the agent follows a task Swarm moved off a dead node: test_swarm_agent.py."""

import threading
import time

from tests.conftest import CADDY_BINARIES
from tests.support.load import LoadClient
from tests.support.swarm import PORT, wait_for_nodes, wait_serving, zdd_on_swarm

# Caddy before 2.11 cannot send a request with a body a second time (caddy#7360): a POST that it sent
# to the dead node before zdd dns left it out fails, where a later Caddy sends it to another task. zdd dns
# probes every 0.5 s and gives a connection 1.5 s (agent/reachability.py).
LEFT_OUT_WITHIN = 3.0
# A drain: Swarm sends SIGTERM to the node's tasks at once; the test app serves 1 s more, then exits, and
# whatever it was serving then is cut (a real app server finishes it): Swarm's doing, not the deploy's.
DRAINED_TASKS_STOP_WITHIN = 5.0


SETTINGS = {
    "start_timeout": "60s",
    "drain_timeout": "10s",
    "stop_timeout": "5s",
    # 30 probes 100 ms apart: the gate lasts about 3 s once the tasks run, long enough to act in it.
    "health_successes": 30,
}


class DeployInTheBackground:
    """v2's deploy over the live v1, started in a thread; once v2's tasks run (its gate has begun), `green`
    and `blue` are the nodes of the new and the live tasks. `wait()` returns v2's Running or raises."""

    def __init__(self, cluster, stack, v1):
        self.stack, self.v1 = stack, v1
        self.outcome: dict = {}
        self.thread = threading.Thread(target=self._deploy_v2)
        self.thread.start()
        runtime = stack.swap.runtime
        self.green = {task.node_address for task in wait_serving(runtime, "web", "green", cluster.images["v2"], 2)}
        self.blue = {task.node_address for task in runtime.tasks("web", "blue")}

    def _deploy_v2(self) -> None:
        try:
            self.outcome["v2"] = self.stack.deploy("v2", self.v1, 2)
        except Exception as err:  # raised again by wait()
            self.outcome["error"] = err

    def wait(self):
        self.thread.join(timeout=120)
        if "error" in self.outcome:
            raise self.outcome["error"]
        return self.outcome["v2"]


def failures_around(load, moment: float, what: str) -> str:
    return f"{load.summary()}\n{what}\n" + "\n".join(
        f"  {r.kind} {r.started - moment:+.3f}s..{r.ended - moment:+.3f}s: {r.error or r.status}" for r in load.failures
    )


def on_nodes(running) -> set[str]:
    return {address.rpartition(":")[0] for address in running.addresses}


def test_a_node_killed_during_the_gate_costs_only_the_requests_in_flight_on_it(cluster, tmp_path, caddy_binary):
    repository = cluster.images["v1"].rpartition(":")[0]
    with zdd_on_swarm(cluster, tmp_path, caddy_binary, repository, **SETTINGS) as stack:
        v1 = stack.deploy("v1", None, 1)
        with LoadClient(stack.caddy.port) as load:
            time.sleep(1.5)
            deploy = DeployInTheBackground(cluster, stack, v1)
            # A worker (zdd runs on the manager) with a new task, and a live one too if a worker has both.
            victim = max(
                (n for n in cluster.nodes[1:] if n.address in deploy.green), key=lambda n: n.address in deploy.blue
            )
            cluster.stop_node(victim)
            killed = time.monotonic()  # a request sent while the kill ran was in flight on the node, or not
            try:
                v2 = deploy.wait()
                live = time.monotonic()
                time.sleep(1.5)
            finally:
                load.stop()
                cluster.start_node(victim)
                wait_for_nodes(cluster.manager.client(), len(cluster.nodes))
    in_flight = [r for r in load.failures if r.started < killed]
    later = [r for r in load.failures if r.started >= killed]
    print(
        failures_around(
            load,
            killed,
            f"killed {victim.name} ({victim.address}); failed: {len(in_flight)} in flight at the kill, "
            f"{len(later)} sent after it; v2 live {live - killed:.1f}s after the kill",
        )
    )
    if caddy_binary == CADDY_BINARIES["caddy2.6"]:
        assert [r for r in later if r.kind != "post" or r.started > killed + LEFT_OUT_WITHIN] == [], load.summary()
    else:
        assert later == [], load.summary()
    if victim.address in deploy.blue:  # zdd dns left the dead live task out
        assert f"the task at {victim.address}:{PORT} did not accept a connection" in stack.dns.log
    # The new version went live on the two nodes left, one task each.
    assert victim.address not in on_nodes(v2) and len(on_nodes(v2)) == 2
    assert load.bodies_after(live + 0.5) == {"v2"}


def test_a_node_drained_during_the_gate_fails_nothing_after_swarm_stopped_its_tasks(cluster, tmp_path, caddy_binary):
    repository = cluster.images["v1"].rpartition(":")[0]
    manager = cluster.manager.client()
    with zdd_on_swarm(cluster, tmp_path, caddy_binary, repository, **SETTINGS) as stack:
        v1 = stack.deploy("v1", None, 1)
        with LoadClient(stack.caddy.port) as load:
            time.sleep(1.5)
            deploy = DeployInTheBackground(cluster, stack, v1)
            drained = next(n for n in manager.nodes.list() if n.attrs["Status"]["Addr"] in deploy.blue & deploy.green)
            set_availability(drained, "drain")
            started = time.monotonic()
            try:
                v2 = deploy.wait()
                live = time.monotonic()
                time.sleep(1.5)
            finally:
                set_availability(manager.nodes.get(drained.id), "active")
    address = drained.attrs["Status"]["Addr"]
    name = drained.attrs["Description"]["Hostname"]
    print(failures_around(load, started, f"drained {name} ({address}); v2 live {live - started:.1f}s after the drain"))
    # Caddy 2.6 may also fail a POST it sent to the stopped task before zdd dns left it out.
    assert [r for r in load.failures if r.started > started + DRAINED_TASKS_STOP_WITHIN] == [], load.summary()
    assert address not in on_nodes(v2) and len(on_nodes(v2)) == 2
    assert load.bodies_after(live + 0.5) == {"v2"}


def set_availability(node, availability: str) -> None:
    node.update(dict(node.attrs["Spec"], Availability=availability))
