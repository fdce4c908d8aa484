"""The traffic half of zdd on a Swarm (docs/swarm.md), on a real 3-node Swarm with real Caddy (2.6.2 and
current) and a real `zdd dns`: Caddy finds the app's tasks by SRV, a switch from blue's tasks to green's
(another port) is a new answer of zdd dns with no config load, the drain reads Caddy's in-flight counts
of blue's tasks by their node names, and under a load of fresh connections, keep-alive GETs, keep-alive
POSTs that are never replayed and slow requests, no request fails."""

import dataclasses
import time

from tests.support.agent_process import ResolverProcess, write_config
from tests.support.caddy_server import CaddyServer
from tests.support.load import LoadClient
from tests.support.net import free_udp_port
from tests.support.swarm import PORT, wait_serving
from zdd.caddy import CaddyRouter
from zdd.config import load_config
from zdd.health import HttpProber
from zdd.swarm_runtime import SwarmRuntime

INSTANCE = "5a4b3c2d"


def gate(app, addresses: list[str]) -> None:
    """zdd's probe, 3 passes in a row at every task's node address."""
    prober, passed = HttpProber(), dict.fromkeys(addresses, 0)
    deadline = time.monotonic() + 30
    while min(passed.values()) < 3:
        assert time.monotonic() < deadline, passed
        for address in addresses:
            passed[address] = passed[address] + 1 if prober.check(address, app.health) is None else 0
        time.sleep(0.1)


def drain(router: CaddyRouter, addresses: list[str], timeout: float = 20) -> int:
    """Wait as the swap does: past the switch delay, until Caddy has nothing in flight on `addresses`
    three reads in a row. Returns the largest count read."""
    started, quiet, most = time.monotonic(), 0, 0
    while quiet < 3:
        assert time.monotonic() - started < timeout, f"still {most} in flight on {addresses}"
        count = router.in_flight(addresses) or 0
        most = max(most, count)
        settled = time.monotonic() - started > router.switch_delay
        quiet = quiet + 1 if settled and count == 0 else 0
        time.sleep(0.05)
    return most


def test_a_switch_between_colours_is_an_srv_answer_and_drops_nothing(cluster, tmp_path, caddy_binary):
    state = tmp_path / "state"
    state.mkdir()
    config_path = tmp_path / "zdd.toml"
    snippet = state.with_name("state-caddy") / "web.caddy"
    caddy = CaddyServer(caddy_binary, tmp_path, snippet)
    resolver = f"127.0.0.1:{free_udp_port()}"
    app_table = {"image": "zdd-it/web", "port": 8080, "health_path": "/up"}
    write_config(config_path, state, caddy.admin, caddy.caddyfile, "zdd-it-swarm", {"web": app_table}, resolver)
    config = load_config(config_path)
    app = dataclasses.replace(config.apps["web"], engine="swarm", replicas=2)
    router = CaddyRouter(config, INSTANCE)
    dns = ResolverProcess(config_path, tmp_path)
    runtime = SwarmRuntime(cluster.manager.client())
    dns.start()
    try:
        router.ensure_snippets({})
        caddy.start()
        runtime.put(app, "blue", cluster.images["v1"], "zdd-it/web:v1", "d1", PORT)
        blue = [task.address(PORT) for task in wait_serving(runtime, "web", "blue", cluster.images["v1"], 2)]
        gate(app, blue)
        router.route(app, [blue])  # the first version: the one config load, before any load runs
        assert "dynamic srv web.srv.5a4b3c2d.zdd.internal." in snippet.read_text()
        assert router.caddy_uses_snippet(app, [blue])

        with LoadClient(caddy.port) as load:
            time.sleep(2)
            runtime.put(app, "green", cluster.images["v2"], "zdd-it/web:v2", "d2", PORT + 1)
            green = [task.address(PORT + 1) for task in wait_serving(runtime, "web", "green", cluster.images["v2"], 2)]
            gate(app, green)
            snippet_before = snippet.read_text()
            switched = time.monotonic()
            router.route(app, [green, blue])
            routed = time.monotonic()
            most = drain(router, blue)
            router.route(app, [green])
            runtime.scale("web", "blue", 0)
            time.sleep(2)
        print(f"{caddy_binary}: {load.summary()}; drained blue with at most {most} in flight")

        assert load.failures == [], load.summary()
        assert snippet.read_text() == snippet_before  # the switch loaded no config into Caddy
        # Slow requests were on blue's tasks at the switch, and the drain saw them by their node names.
        assert load.in_flight_at(switched) and most > 0, most
        assert load.bodies_after(routed + router.switch_delay) == {"v2"}
        assert {r.body for r in load.results if r.ok} == {"v1", "v2"}
    finally:
        caddy.stop()
        dns.stop()
        for colour in ("blue", "green"):
            runtime.remove_service("web", colour)
