"""Deploys against a real dockerd and a real Caddy, under real HTTP load: zero failed requests."""

import json
import os
import re
import socket
import time

import pytest

from tests.support import images
from tests.support.images import REPOSITORY, SLOW_SECONDS
from tests.support.load import KINDS, LoadClient


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def switch_moment(stack) -> float:
    """When the agent told systemd it switched (first STATUS after health passed), monotonic time."""
    for moment, message in stack.agent.notify.messages:
        if "draining" in message or "stopping" in message:
            return moment
    raise AssertionError("the agent never reported draining/stopping")


def assert_no_failures(stack, load: LoadClient) -> None:
    """Zero failed requests of every kind (keep-alive GETs and POSTs, new connections, slow requests),
    none retried. Every test that uses this deploys v1 before the load starts: the switches under load
    change zdd dns's answer and never load a config into Caddy."""
    assert load.failures == [], load.summary()
    assert {r.kind for r in load.results} >= {"keepalive", "post", "fresh"}, load.summary()


def deploy_under_load(stack, tag_from: str, tag_to: str) -> LoadClient:
    stack.start()
    first = stack.deploy(tag_from)
    assert first.returncode == 0, first.stderr
    stack.caddy.wait_serving(tag_from)
    old_containers = {c.id for c in stack.containers()}

    with LoadClient(stack.caddy.port) as load:
        time.sleep(2.5)  # steady state, with slow requests in flight
        stack.agent.echo(tag_to)  # exactly as a user: echo v2 > /var/lib/zdd/queue
        wait_until(lambda: tag_to in load.bodies_after(time.monotonic() - 0.5), 60, f"{tag_to} served")
        wait_until(lambda: not old_containers & {c.id for c in stack.containers()}, 60, "old container removed")
        time.sleep(SLOW_SECONDS + 1)  # slow requests begun on the new version finish too
        settled = time.monotonic()

    print(load.summary())
    assert_no_failures(stack, load)
    moment = switch_moment(stack)
    assert load.in_flight_at(moment), "no slow request was in flight at the switch; the test proves too little"
    assert load.bodies_after(settled - 1) == {tag_to}
    assert len(stack.containers()) == 1
    return load


def test_deploy_under_load_has_zero_failed_requests(stack):
    load = deploy_under_load(stack, "v1", "v2")
    assert {r.kind for r in load.results} == set(KINDS)
    status = stack.agent.cli("status", "--json")
    assert '"current": "v2"' in status.stdout and '"previous": "v1"' in status.stdout


def test_app_that_exits_at_once_on_sigterm_loses_nothing(stack):
    # busybox httpd dies on SIGTERM with its CGI children: only the measured drain protects slow requests.
    deploy_under_load(stack, "abrupt1", "abrupt2")


def test_unhealthy_version_never_receives_traffic(stack):
    stack.configure(start_timeout="3s")
    stack.start()
    assert stack.deploy("v1").returncode == 0
    with LoadClient(stack.caddy.port, slow_workers=1) as load:
        time.sleep(1)
        result = stack.deploy("sick")
        time.sleep(1)
    assert result.returncode == 1
    assert "health check http://" in result.stderr and "/up did not pass 3 times in a row" in result.stderr
    assert "HTTP 404" in result.stderr
    assert_no_failures(stack, load)
    assert load.bodies_after(0) == {"v1"}
    assert [c.labels["zdd.tag"] for c in stack.containers()] == ["v1"]
    assert "web: v1 -> sick: deploy" in stack.agent.log and "failed" in stack.agent.log


def test_container_that_crashes_at_start_is_reported_with_its_output(stack):
    stack.start()
    assert stack.deploy("v1").returncode == 0
    result = stack.deploy("crash")
    assert result.returncode == 1
    assert "exited with code 1" in result.stderr and "fatal: cannot open database" in result.stderr
    stack.caddy.wait_serving("v1")
    assert [c.labels["zdd.tag"] for c in stack.containers()] == ["v1"]


def test_already_live_tag_is_a_noop(stack):
    stack.start()
    assert stack.deploy("v1").returncode == 0
    container = stack.containers()[0].id
    again = stack.deploy("v1")
    assert again.returncode == 0 and "unchanged" in again.stdout
    assert [c.id for c in stack.containers()] == [container]
    assert "v1 is already live; nothing to do" in stack.agent.log
    history = json.loads(stack.agent.cli("history", "--json").stdout)
    assert [(e["tag"], e["result"], e["requested_by"]) for e in history] == [
        ("v1", "succeeded", os.getuid()),  # `zdd deploy` drops a request file the kernel says is ours
        ("v1", "unchanged", os.getuid()),
    ]


def test_invalid_queue_lines_are_rejected_and_the_agent_keeps_going(stack):
    stack.start()
    # One at a time: a second `echo >` right after the first may overwrite it before it is claimed.
    stack.agent.echo("../../etc/passwd")
    wait_until(lambda: stack.agent.log.count("queue: rejected entry") >= 1, 10, "the first rejection logged")
    stack.agent.echo("evil.example.com/acme/web:v1")
    wait_until(lambda: stack.agent.log.count("queue: rejected entry") >= 2, 10, "the second rejection logged")
    assert "is not the repository of any configured app" in stack.agent.log
    assert stack.deploy("v1").returncode == 0
    stack.caddy.wait_serving("v1")


def test_routing_survives_caddy_reload_and_restart(stack):
    stack.start()
    assert stack.deploy("v1").returncode == 0
    assert stack.deploy("v2").returncode == 0
    stack.caddy.wait_serving("v2")
    stack.caddy.reload()  # systemctl reload caddy: the Caddyfile from disk, with zdd's snippet
    assert stack.caddy.get() == (200, "v2")
    stack.caddy.restart()  # systemctl restart caddy
    assert stack.caddy.get() == (200, "v2")
    assert stack.deploy("v3").returncode == 0  # and zdd still drives the restarted Caddy
    stack.caddy.wait_serving("v3")


def test_before_the_first_deploy_the_site_answers_503(stack):
    stack.start()
    assert stack.caddy.get() == (503, "web: no version deployed yet")


def test_agent_restart_keeps_serving_and_remembers_the_version(stack):
    stack.start()
    assert stack.deploy("v1").returncode == 0
    container = stack.containers()[0].id
    with LoadClient(stack.caddy.port, slow_workers=1) as load:
        assert stack.agent.stop() == 0
        time.sleep(0.5)
        stack.agent.start()
        time.sleep(0.5)
    assert_no_failures(stack, load)
    assert [c.id for c in stack.containers()] == [container]  # containers are not the agent's children
    assert stack.deploy("v2").returncode == 0
    stack.caddy.wait_serving("v2")


@pytest.mark.parametrize("caddy_binary", ["caddy2.6"], indirect=True)
def test_pull_from_a_registry_and_a_missing_tag(stack, registry, docker_client, test_images):
    repository = f"{registry}/zdd-it/web"
    # An image of its own with 100 MB of random bytes: no layer of it is on the host once it is pushed.
    fresh = images.build(docker_client, "fresh100", padding_mb=100)
    for tag, image in (("v2", test_images["v2"]), ("fresh100", fresh)):
        docker_client.images.get(image).tag(repository, tag)
        for message in docker_client.api.push(repository, tag=tag, stream=True, decode=True):
            assert "error" not in message, message
        docker_client.images.remove(f"{repository}:{tag}")  # so zdd must pull it
    docker_client.images.remove(fresh)
    stack.configure(image=repository, pull="missing")
    stack.start()
    pulled = stack.deploy("v2")
    assert pulled.returncode == 0, pulled.stderr
    stack.caddy.wait_serving("v2")
    assert f"pulled {repository}:v2 in " in stack.agent.log  # layers of a few bytes: Docker gives no size

    with LoadClient(stack.caddy.port, slow_workers=1) as load:
        missing = stack.deploy("v404")
    assert missing.returncode == 1
    assert f"pull {repository}:v404" in missing.stderr and "not found" in missing.stderr.lower()
    assert_no_failures(stack, load)
    assert stack.caddy.get() == (200, "v2")
    assert [c.labels["zdd.tag"] for c in stack.containers()] == ["v2"]

    stack.configure(image=repository, pull="always")
    stack.agent.stop()
    stack.agent.start()
    fat = stack.deploy(f"{repository}:fresh100")  # a full reference of the app's repository
    assert fat.returncode == 0, fat.stderr
    stack.caddy.wait_serving("fresh100")
    # `deploy --wait` showed the pull of its 100 MB layer in bytes (piped: a line per step, not per figure).
    pulling = rf"fresh100: pulling {repository}:fresh100: [\d.]+ [kM]?B of 10[\d.]+ MB\n"
    assert re.search(pulling, fat.stderr), fat.stderr
    assert re.search(r"pulled \S+:fresh100 in [\d.]+s \(10[\d.]+ MB of new layers\)", stack.agent.log)


def test_the_image_is_run_by_id_and_labelled_for_rediscovery(stack, docker_client):
    stack.start()
    assert stack.deploy("v1").returncode == 0
    (container,) = stack.containers()
    labels = container.labels
    assert labels["zdd.app"] == "web" and labels["zdd.tag"] == "v1" and labels["zdd.deploy"]
    assert labels["zdd.reference"] == f"{REPOSITORY}:v1"
    host_config = container.attrs["HostConfig"]
    assert host_config["RestartPolicy"]["Name"] == "unless-stopped" and host_config["Init"] is True
    assert container.attrs["Image"] == docker_client.images.get(f"{REPOSITORY}:v1").id
    assert stack.network in container.attrs["NetworkSettings"]["Networks"]


class UpgradedConnection:
    """A WebSocket-style upgraded connection through Caddy: HTTP 101, then lines echoed by the app."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.buffer = b""
        head = self._until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def echo(self, text: str) -> str:
        self.sock.sendall(text.encode() + b"\n")
        return self._until(b"\n").decode()


@pytest.mark.parametrize("caddy_binary", ["caddy-current"], indirect=True)
def test_websockets_stay_open_through_the_drain_on_caddy_27_and_later(stack):
    stack.configure(drain_timeout="4s")
    stack.start()
    assert stack.deploy("ws1").returncode == 0
    connection = UpgradedConnection(stack.caddy.port)
    assert connection.echo("hello") == "ws1 hello"
    stack.agent.echo("ws2")
    wait_until(lambda: any("draining ws1" in line for line in stack.agent.notify.lines()), 30, "the drain")
    switched_at = time.monotonic()
    # Caddy has reloaded for the switch: with stream_close_delay the upgraded stream of the old
    # config is still open, and still answered by the old version.
    assert connection.echo("during the drain") == "ws1 during the drain"
    time.sleep(1.5)
    assert connection.echo("still") == "ws1 still"
    with pytest.raises((ConnectionError, OSError)):
        while time.monotonic() - switched_at < 30:
            connection.echo("ping")
            time.sleep(0.2)
    assert time.monotonic() - switched_at >= 3.5  # open until the drain timeout ended it, not at the reload
    assert UpgradedConnection(stack.caddy.port).echo("new") == "ws2 new"
