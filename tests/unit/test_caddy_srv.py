"""agent/caddy.py for an app on a Swarm: the `dynamic srv` snippet, and the drain's reading of Caddy's
upstreams, where a task found by SRV is listed by its node name, not by the address zdd routed."""

import dataclasses
import threading

import pytest

from tests.support.net import free_udp_port
from zdd import dns
from zdd.caddy import CaddyRouter, dialed, render_snippet, render_srv_snippet, snippet_instance
from zdd.config import parse_config
from zdd.errors import TemporaryError
from zdd.routes import LiveRoutes

INSTANCE = "ab12cd34"
WEB = {"image": "r/web", "port": 8080}


@pytest.mark.parametrize(
    ("listed", "expected"),
    [
        ("ip-10-216-0-12.ab12cd34.zdd.internal.:18302", "10.216.0.12:18302"),  # Caddy 2.6 and 2.11 list it so
        ("ip-10-216-0-12.ab12cd34.zdd.internal:18302", "10.216.0.12:18302"),
        ("172.20.0.5:8080", "172.20.0.5:8080"),  # a local container: as it is
        ("ip-172-18-0-5.eu-west-1.compute.internal:8080", "ip-172-18-0-5.eu-west-1.compute.internal:8080"),
        ("ip-10-216-0-12.otherone.zdd.internal.:18302", "ip-10-216-0-12.otherone.zdd.internal.:18302"),
        ("localhost:9000", "localhost:9000"),
    ],
)
def test_an_upstream_is_read_as_zdd_routed_it(listed, expected):
    assert dialed(listed, INSTANCE) == expected


class Admin:
    """Caddy's /reverse_proxy/upstreams as 2.11 lists dynamic upstreams (an address may come twice)."""

    def __init__(self, upstreams: list[dict]):
        self.listed = upstreams

    def upstreams(self) -> list[dict]:
        return self.listed


def test_the_drain_counts_tasks_by_their_node_names(tmp_path):
    config = parse_config({"state_dir": str(tmp_path / "state"), "apps": {"web": {"image": "r/web", "port": 8080}}})
    router = CaddyRouter(
        config,
        INSTANCE,
        admin=Admin(
            [
                {"address": "ip-10-216-0-11.ab12cd34.zdd.internal.:18301", "num_requests": 2},
                {"address": "ip-10-216-0-11.ab12cd34.zdd.internal.:18301", "num_requests": 0},
                {"address": "ip-10-216-0-12.ab12cd34.zdd.internal.:18301", "num_requests": 1},
                {"address": "ip-10-216-0-12.ab12cd34.zdd.internal.:18302", "num_requests": 5},  # the new colour
                {"address": "ip-10-216-0-13.eu-west-1.compute.internal:18301", "num_requests": 7},  # another site
            ]
        ),
    )
    assert router.in_flight(["10.216.0.11:18301", "10.216.0.12:18301"]) == 3
    assert router.in_flight(["10.216.0.13:18301"]) is None


def test_the_srv_snippet_names_zdd_dns_for_the_tasks_and_their_nodes(tmp_path):
    config = parse_config({"state_dir": str(tmp_path / "state"), "apps": {"web": {"image": "r/web", "port": 8080}}})
    app = dataclasses.replace(config.apps["web"], engine="swarm")
    text = render_srv_snippet(app, "web.srv.ab12cd34.zdd.internal.", "127.0.0.1:5354")
    assert "\tdynamic srv web.srv.ab12cd34.zdd.internal. {\n\t\tresolvers udp/127.0.0.1:5354\n" in text
    # Go refuses an IP as SRV target: the transport resolves the node names through zdd dns too.
    assert "\ttransport http {\n\t\tresolvers udp/127.0.0.1:5354\n" in text
    # A dead node's connections never open: Caddy gives up on one within a second and tries another task.
    assert "\tlb_try_duration 5000ms\n" in text and "\t\tdial_timeout 1000ms\n" in text
    assert "fail_duration" not in text  # Caddy 2.6 counts its own failed retry of a POST against the good task
    # The same transport settings as a local app's, so a container drained holds no idle connection.
    local = render_snippet(config.apps["web"], "web.p8080.ab12cd34.zdd.internal.", 8080, "127.0.0.1:5354")
    for line in ("keepalive 1000ms", "keepalive_interval 30s", "keepalive_idle_conns_per_host 32"):
        assert line in text and line in local
    snippet_text = CaddyRouter(config, INSTANCE)._snippet_text(app, [["10.216.0.11:18301"]])
    assert snippet_text == render_srv_snippet(app, "web.srv.ab12cd34.zdd.internal.", config.caddy.resolver)
    # After lost state, the agent takes its instance from the snippet, as from a local app's.
    assert snippet_instance(snippet_text) == snippet_instance(local) == INSTANCE


def test_the_route_check_takes_a_swarm_answer_that_leaves_out_a_task_zdd_dns_cannot_reach(tmp_path):
    """CaddyRouter.verify asks a real zdd dns (on loopback) what Caddy will be told. For a Swarm app it
    may name fewer tasks than routes.toml (agent/reachability.py): that is not another responder."""
    resolver = f"127.0.0.1:{free_udp_port()}"
    (tmp_path / "state").mkdir()
    config = parse_config({"state_dir": str(tmp_path / "state"), "caddy": {"resolver": resolver}, "apps": {"web": WEB}})
    app = dataclasses.replace(config.apps["web"], engine="swarm")
    router = CaddyRouter(config, INSTANCE)
    router._save_route(app, [["10.216.0.11:18301", "10.216.0.12:18301"]])
    answer = {"keep": lambda addresses: addresses}
    routes = LiveRoutes(config.routes_path, lambda app_name, addresses: answer["keep"](addresses))
    sock = dns.bind(resolver)
    threading.Thread(target=dns.serve, args=(sock, routes.lookup, routes.lookup_srv), daemon=True).start()
    try:
        router.verify(app)  # every task
        answer["keep"] = lambda addresses: addresses[1:]
        router.verify(app)  # one left out: fine
        answer["keep"] = lambda addresses: ["10.216.0.99:18301"]  # not what this state dir routes
        with pytest.raises(TemporaryError, match=r"is another zdd dns \(another state dir\) listening there"):
            router.verify(app)
    finally:
        sock.close()
