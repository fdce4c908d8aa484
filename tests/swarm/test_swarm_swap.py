"""zdd's own swap algorithm (agent/swap.py, unchanged) deploying across a real 3-node Swarm, with
SwarmRuntime as its Runtime, real Caddy (2.6.2 and current), a real `zdd dns` and the state journal:
v1, then v2 and v3 under load with 0 failed requests, each on the other colour's tasks, 2 replicas on
2 nodes; a version whose health check fails on its nodes leaves the live one serving, untouched."""

import dataclasses
import time

import pytest

from tests.support.agent_process import ResolverProcess, write_config
from tests.support.caddy_server import CaddyServer
from tests.support.load import LoadClient
from tests.support.net import free_udp_port
from tests.swarm.test_swarm_runtime import PORT
from zdd.caddy import CaddyRouter
from zdd.clock import SystemClock
from zdd.config import load_config
from zdd.daemon import StateJournal
from zdd.errors import PermanentError
from zdd.failed_output import FailedOutput
from zdd.health import HttpProber
from zdd.reference import parse_reference
from zdd.state import State, StateStore
from zdd.swap import Swap
from zdd.swarm_runtime import SwarmRuntime

INSTANCE = "6b5c4d3e"


@pytest.fixture
def swarm_stack(cluster, tmp_path, caddy_binary):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    config_path = tmp_path / "zdd.toml"
    snippet = state_dir.with_name("state-caddy") / "web.caddy"
    caddy = CaddyServer(caddy_binary, tmp_path, snippet)
    resolver = f"127.0.0.1:{free_udp_port()}"
    repository = cluster.images["v1"].rpartition(":")[0]
    table = {
        "image": repository,
        "port": 8080,
        "health_path": "/up",
        "health_interval": "100ms",
        "start_timeout": "15s",
        "drain_timeout": "20s",
        "stop_timeout": "5s",
        "probation": "0s",
    }
    write_config(config_path, state_dir, caddy.admin, caddy.caddyfile, "zdd-it-swarm", {"web": table}, resolver)
    config = load_config(config_path)
    app = dataclasses.replace(config.apps["web"], engine="swarm", replicas=2, swarm_ports=(PORT, PORT + 1))
    router = CaddyRouter(config, INSTANCE)
    dns = ResolverProcess(config_path, tmp_path)
    runtime = SwarmRuntime(cluster.manager.client())
    state = State(instance=INSTANCE)
    journal = StateJournal(StateStore(state_dir), state, FailedOutput(state_dir))
    swap = Swap(runtime, router, HttpProber(), SystemClock(), journal)
    dns.start()
    router.ensure_snippets({})
    caddy.start()
    yield swap, app, caddy, state, repository
    caddy.stop()
    dns.stop()
    for colour in ("blue", "green"):
        runtime.remove_service("web", colour)


def test_deploys_across_the_swarm_under_load_drop_nothing_and_a_failing_gate_keeps_the_live_set(cluster, swarm_stack):
    swap, app, caddy, state, repository = swarm_stack
    runtime = swap.runtime

    def deploy(tag: str, current, number: int):
        started = time.monotonic()
        outcome = swap.deploy(app, parse_reference(tag, repository), current, f"d{number}")
        print(f"deploy of {tag}: {time.monotonic() - started:.2f}s on {outcome.running.addresses}")
        return outcome.running

    v1 = deploy("v1", None, 1)
    assert [r.container_name for r in v1.replicas] == ["zdd-web-blue.1", "zdd-web-blue.2"]
    assert {a.rpartition(":")[2] for a in v1.addresses} == {str(PORT)}

    with LoadClient(caddy.port) as load:
        time.sleep(1.5)
        v2 = deploy("v2", v1, 2)
        v2_live = time.monotonic()
        time.sleep(1.5)
        with pytest.raises(PermanentError) as failed:
            deploy("sick", v2, 3)
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
    # The sick version's gate named the task's URL; v2 served on, and its colour stayed in place.
    assert "health check http://10.216.0." in str(failed.value) and "/up" in str(failed.value)
    assert {r.body for r in load.results if v2_live + 0.5 < r.started < v3_started} == {"v2"}
    assert load.bodies_after(v3_live + 0.5) == {"v3"}
    # The failed version's tasks' output was kept for `zdd status`, read through Swarm from their nodes.
    assert "# zdd-web-blue.1, removed" in kept and "# zdd-web-blue.2, removed" in kept, kept
    # The journal went through every phase to the last, with the tasks by id (the daemon clears it after).
    journal = state.app("web")
    assert (journal.phase, journal.phase_data["container"]) == ("stopping", v3.container_id)
