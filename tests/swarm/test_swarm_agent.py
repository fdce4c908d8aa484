"""The agent itself (`zdd run` in a child process, with a real notify socket, `zdd dns` and Caddy) running an
app with `engine = "swarm"` on a real 3-node Swarm, driven as a user drives it: `zdd deploy --wait`,
`zdd rollback --wait`, `zdd status`, under load; then a SIGKILL of the agent in the middle of a deploy and
a restart, which converges to the new version with one colour running and nothing dropped."""

import json
import time

import pytest

from tests.integration.conftest import wait_file
from tests.integration.test_deploy import wait_until
from tests.support.agent_process import AgentProcess, write_config
from tests.support.caddy_server import CaddyServer
from tests.support.load import LoadClient
from tests.support.net import free_udp_port
from tests.support.swarm import PORT, wait_for_nodes
from tests.swarm.test_swarm_nodes import LEFT_OUT_WITHIN, on_nodes, set_availability
from zdd.state import StateStore
from zdd.swarm_runtime import SwarmRuntime

ONLY_DEBIAN_CADDY = pytest.mark.parametrize("caddy_binary", ["caddy2.6"], indirect=True)


class SwarmStack:
    """Caddy, `zdd dns` and the agent, configured for one app `web` on the Swarm `cluster`."""

    def __init__(self, cluster, workdir, caddy_binary, **settings):
        self.state_dir = workdir / "state"
        self.state_dir.mkdir()
        snippet = workdir / "state-caddy" / "web.caddy"
        self.caddy = CaddyServer(caddy_binary, workdir, snippet)
        config = workdir / "zdd.toml"
        app = {
            "engine": "swarm",
            "swarm_ports": [PORT, PORT + 1],
            "replicas": 2,
            "image": cluster.images["v1"].rpartition(":")[0],
            "port": 8080,
            "health_path": "/up",
            "health_interval": "100ms",
            "start_timeout": "40s",
            "drain_timeout": "20s",
            "stop_timeout": "5s",
            "probation": "0s",
            **settings,
        }
        resolver = f"127.0.0.1:{free_udp_port()}"
        write_config(
            config,
            self.state_dir,
            self.caddy.admin,
            self.caddy.caddyfile,
            "zdd-swarm",
            {"web": app},
            resolver,
            caddy_binary,
            docker_host=cluster.manager.docker_host,  # zdd runs on a manager node: it talks to that engine
        )
        self.agent = AgentProcess(config, self.state_dir, workdir)
        self.runtime = SwarmRuntime(cluster.manager.client())
        self.snippet = snippet

    def start(self) -> "SwarmStack":
        self.agent.start(wait_ready=False)
        wait_file(self.snippet)
        if self.caddy.process is None:
            self.caddy.start()
        self.agent.notify.wait_for("READY=1", timeout=90)
        return self

    def cli(self, *args: str, timeout: float = 180):
        return self.agent.cli(*args, timeout=timeout)

    def colours(self) -> dict[str, int]:
        """Tasks Swarm wants running, by colour."""
        return {colour: len(self.runtime.tasks("web", colour)) for colour in ("blue", "green")}

    def close(self) -> None:
        self.agent.close()
        self.caddy.stop()
        for colour in ("blue", "green"):
            self.runtime.remove_service("web", colour)


@pytest.fixture
def swarm_agent(cluster, tmp_path, caddy_binary, request):
    stack = SwarmStack(cluster, tmp_path, caddy_binary)
    yield stack
    if getattr(request.node, "rep_call", None) and request.node.rep_call.failed:
        print(f"--- agent log ---\n{stack.agent.log[-8000:]}\n--- zdd dns ---\n{stack.agent.resolver.log[-3000:]}")
    stack.close()


@ONLY_DEBIAN_CADDY
def test_the_agent_deploys_rolls_back_and_survives_a_sigkill_on_the_swarm(swarm_agent):
    stack = swarm_agent.start()
    deployed = stack.cli("deploy", "v1", "--wait", "--timeout", "120")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    stack.caddy.wait_serving("v1")
    assert stack.colours() == {"blue": 2, "green": 0}

    with LoadClient(stack.caddy.port) as load:
        time.sleep(1.5)
        deployed = stack.cli("deploy", "v2", "--wait", "--timeout", "120")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        v2_live = time.monotonic()
        assert stack.colours() == {"blue": 0, "green": 2}
        time.sleep(1.5)
        rolled = stack.cli("rollback", "--wait", "--timeout", "120")
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
        back_live = time.monotonic()
        # Going back put the kept colour again: v1 on blue's port, its image pinned by digest, no pull here.
        assert stack.colours() == {"blue": 2, "green": 0}
        time.sleep(1.5)

        # v3, and the agent killed once v2 (v3's colour) is switched to and the old one drains.
        stack.agent.echo("v3")
        wait_until(lambda: StateStore(stack.state_dir).load().app("web").phase == "draining", 90, "draining")
        stack.agent.kill()
        time.sleep(0.5)
        stack.start()
        wait_until(lambda: StateStore(stack.state_dir).load().app("web").phase == "", 90, "converged")
        stack.caddy.wait_serving("v3")
        v3_live = time.monotonic()
        wait_until(lambda: stack.colours() == {"blue": 0, "green": 2}, 60, "v1's colour scaled to 0")
        time.sleep(1.5)
    print(load.summary())

    assert load.failures == [], load.summary()
    assert {r.body for r in load.results if v2_live + 0.5 < r.started < v2_live + 1.4} == {"v2"}
    assert {r.body for r in load.results if back_live + 0.5 < r.started < back_live + 1.4} == {"v1"}
    assert load.bodies_after(v3_live + 0.5) == {"v3"}

    state = StateStore(stack.state_dir).load()
    live = state.app("web").current
    assert live.tag == "v3" and [r.container_name for r in live.replicas] == ["zdd-web-green.1", "zdd-web-green.2"]
    assert {e.tag: e.result for e in state.history if e.tag == "v3"} == {"v3": "succeeded"}
    status = json.loads(stack.cli("status", "--json").stdout)["web"]
    assert status["current"] == "v3" and status["previous"] == "v1" and status["engine"] == "swarm", status
    assert [r["container"] for r in status["replicas"]] == ["zdd-web-green.1", "zdd-web-green.2"], status
    assert (
        "web: v3 since " in stack.cli("status").stdout
        and "(on the Swarm: zdd-web-green.1 at " in stack.cli("status").stdout
    )


# Where the agent is SIGKILLed in a deploy of v2 over v1 (the phase state.toml holds), and the settings
# that make that phase last long enough to be hit. "draining" is in the test above.
CRASH_POINTS = {
    "starting": ({}, {"starting"}),  # Swarm puts green and starts its tasks
    "health gate": ({"health_successes": 25}, {"started"}),
    "probation": ({"probation": "6s"}, {"probation"}),
    "stopping": ({"stop_timeout": "8s"}, {"stopping"}),  # blue's tasks take their stop grace period
}


@ONLY_DEBIAN_CADDY
@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
def test_a_sigkill_of_the_agent_at_each_phase_converges_on_the_swarm(cluster, tmp_path, caddy_binary, point, request):
    settings, phases = CRASH_POINTS[point]
    stack = SwarmStack(cluster, tmp_path, caddy_binary, **settings)
    request.addfinalizer(stack.close)
    stack.start()
    deployed = stack.cli("deploy", "v1", "--wait", "--timeout", "120")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    with LoadClient(stack.caddy.port) as load:
        time.sleep(1)
        stack.agent.echo("v2")
        wait_until(lambda: StateStore(stack.state_dir).load().app("web").phase in phases, 90, f"phase {phases}")
        stack.agent.kill()
        crashed_in = StateStore(stack.state_dir).load().app("web").phase
        time.sleep(0.5)
        stack.start()
        # Undone and retried once before the switch, finished after it: v2 serves on green either way.
        wait_until(lambda: StateStore(stack.state_dir).load().app("web").current.tag == "v2", 120, "v2 recorded")
        wait_until(lambda: StateStore(stack.state_dir).load().app("web").phase == "", 60, "the deploy's end")
        stack.caddy.wait_serving("v2")
        wait_until(lambda: stack.colours() == {"blue": 0, "green": 2}, 60, "one colour running")
        time.sleep(1.5)
    print(f"SIGKILL at {point!r}: state said {crashed_in!r}; {load.summary()}")
    if load.failures:
        print(f"--- agent log ---\n{stack.agent.log[-8000:]}")
    assert crashed_in in phases
    assert load.failures == [], load.summary()
    state = StateStore(stack.state_dir).load()
    (entry,) = [e for e in state.history if e.tag == "v2"]
    assert entry.result == "succeeded", entry
    assert [r.container_name for r in state.app("web").current.replicas] == ["zdd-web-green.1", "zdd-web-green.2"]


@ONLY_DEBIAN_CADDY
def test_zdd_logs_shows_the_live_task_s_output_fetched_from_its_node(cluster, tmp_path, caddy_binary, request):
    # httpd -vv writes a line per request: the app's own output, as a real server logs its requests.
    command = ["/bin/sh", "-c", "echo booting $(cat /www/index.html); exec httpd -f -vv -p 8080 -h /www"]
    stack = SwarmStack(cluster, tmp_path, caddy_binary, replicas=1, command=command)
    request.addfinalizer(stack.close)
    stack.start()
    deployed = stack.cli("deploy", "v1", "--wait", "--timeout", "120")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    stack.caddy.get("/marker-one")
    shown = stack.cli("logs", "-n", "all")
    assert shown.returncode == 0, shown.stderr
    assert "booting v1" in shown.stdout and "url:/marker-one" in shown.stdout, shown.stdout

    # -f goes on from one version's task to the next (Swarm's own stream of a stopped task never ends).
    def deploy_v2() -> None:
        deployed = stack.cli("deploy", "v2", "--wait", "--timeout", "120")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        stack.caddy.get("/marker-two")

    out, err = stack.agent.logs_followed(deploy_v2, settle=3)
    assert "booting v1" in out and "booting v2" in out and "url:/marker-two" in out
    assert "# zdd: web: now v2 (zdd-web-green.1)" in err, err


@ONLY_DEBIAN_CADDY  # Debian's, and the stricter one: it cannot send a POST twice
def test_the_agent_follows_a_live_task_swarm_moved_off_a_killed_node(cluster, tmp_path, caddy_binary, request):
    """Between deploys: a worker with a live task dies; zdd dns stops naming it within a second, Swarm runs
    the task again on the third node, and the agent's convergence (every 5 s) gates it there and routes
    it, so the app is back to its two tasks, and state.toml says where they run."""
    stack = SwarmStack(cluster, tmp_path, caddy_binary, start_timeout="60s")
    request.addfinalizer(stack.close)
    stack.start()
    deployed = stack.cli("deploy", "v1", "--wait", "--timeout", "120")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    v1 = StateStore(stack.state_dir).load().app("web").current
    victim = next(n for n in cluster.nodes[1:] if n.address in on_nodes(v1))
    try:
        with LoadClient(stack.caddy.port) as load:
            time.sleep(1.5)
            cluster.stop_node(victim)
            killed = time.monotonic()

            def moved():
                current = StateStore(stack.state_dir).load().app("web").current
                return victim.address not in on_nodes(current) and len(on_nodes(current)) == 2

            wait_until(moved, 60, "the moved task recorded")
            routed = time.monotonic()
            time.sleep(2)
        in_flight = [r for r in load.failures if r.started < killed]
        later = [r for r in load.failures if r.started >= killed]
        followed = StateStore(stack.state_dir).load().app("web").current
        print(
            f"{load.summary()}\nkilled {victim.name}; failed: {len(in_flight)} in flight at the kill, {len(later)} "
            f"sent after it; the moved task recorded {routed - killed:.1f}s after the kill: {followed.addresses}"
        )
        assert [r for r in later if r.kind != "post" or r.started > killed + LEFT_OUT_WITHIN] == [], load.summary()
        # The task that was on the dead node runs, gated and routed, on the node that had none.
        assert [r.container_name for r in followed.replicas] == [r.container_name for r in v1.replicas]
        assert load.bodies_after(routed) == {"v1"}
        assert "moved from" in stack.agent.log and "routed there" in stack.agent.log
        lost = next(a for a in v1.addresses if a.startswith(f"{victim.address}:"))
        assert f"the task at {lost} did not accept a connection" in stack.agent.resolver.log
    finally:
        cluster.start_node(victim)
        wait_for_nodes(cluster.manager.client(), len(cluster.nodes))


@ONLY_DEBIAN_CADDY
def test_a_deploy_waiting_for_a_node_goes_on_when_one_is_added(cluster, tmp_path, caddy_binary, request):
    """replicas = 3, one task per node, and one of the three nodes is not available (drained, as a node not
    joined yet): the third task waits, pending; once the node is available Swarm places it, the gate passes
    and the version goes live on three nodes."""
    manager = cluster.manager.client()
    stack = SwarmStack(cluster, tmp_path, caddy_binary, replicas=3, start_timeout="90s")
    request.addfinalizer(stack.close)
    absent = next(n for n in manager.nodes.list() if n.attrs["Spec"]["Role"] == "worker")
    set_availability(absent, "drain")
    request.addfinalizer(lambda: set_availability(manager.nodes.get(absent.id), "active"))
    stack.start()
    stack.agent.echo("v1")
    wait_until(lambda: any(t.state == "pending" for t in stack.runtime.tasks("web", "blue")), 60, "a pending task")
    time.sleep(2)
    assert StateStore(stack.state_dir).load().app("web").phase == "starting"  # the gate waits for it
    set_availability(manager.nodes.get(absent.id), "active")
    added = time.monotonic()
    wait_until(lambda: StateStore(stack.state_dir).load().app("web").current is not None, 90, "v1 live")
    print(f"v1 live {time.monotonic() - added:.1f}s after the node was added")
    live = StateStore(stack.state_dir).load().app("web").current
    assert len(on_nodes(live)) == 3 and absent.attrs["Status"]["Addr"] in on_nodes(live)
    stack.caddy.wait_serving("v1")


@ONLY_DEBIAN_CADDY
def test_a_version_whose_gate_fails_on_one_node_leaves_the_old_set_serving(cluster, tmp_path, caddy_binary, request):
    """`picky` is healthy on node1 and node3 and answers 404 on /up on node2 (a node-specific fault): its
    deploy fails naming that task's address, v1 serves on, under load, and green goes back to 0 tasks."""
    env = {"NODE": "{{.Node.Hostname}}"}  # Swarm's template: each task's node name
    stack = SwarmStack(cluster, tmp_path, caddy_binary, replicas=3, start_timeout="8s", env=env)
    request.addfinalizer(stack.close)
    stack.start()
    deployed = stack.cli("deploy", "v1", "--wait", "--timeout", "120")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    node2 = next(n.address for n in cluster.nodes if n.name.endswith("node2"))
    with LoadClient(stack.caddy.port) as load:
        time.sleep(1)
        failed = stack.cli("deploy", "picky", "--wait", "--timeout", "120")
        time.sleep(1)
    print(f"{load.summary()}\n{failed.stderr.strip()}")
    assert failed.returncode == 1 and f"health check http://{node2}:{PORT + 1}/up did not pass" in failed.stderr
    assert load.failures == [] and load.bodies_after(0) == {"v1"}
    assert stack.colours() == {"blue": 3, "green": 0}
    assert StateStore(stack.state_dir).load().app("web").current.tag == "v1"
