"""What real apps need from a deploy, against a real dockerd and Caddy: extra networks where their
database runs, memory/CPU/pids limits, and a health check that sends the Host the app expects."""

import signal
import time

import pytest

from tests.integration.test_deploy import assert_no_failures, wait_until
from tests.support.accessory import accessory
from tests.support.images import APP_HOST
from tests.support.load import LoadClient

ONLY_DEBIAN_CADDY = pytest.mark.parametrize("caddy_binary", ["caddy2.6"], indirect=True)


def reconfigure(stack, **app_keys) -> None:
    """Edit zdd.toml and `systemctl reload zdd` (SIGHUP), as an operator does; returns once it took effect."""
    before = stack.agent.log.count("reloaded config")
    stack.configure(**app_keys)
    stack.agent.signal(signal.SIGHUP)
    wait_until(lambda: stack.agent.log.count("reloaded config") > before, 10, "the config reload")


@pytest.fixture
def backend(docker_client, test_images):
    """A user network with an "accessory" on it, known there by that name: the app reaches it only if its
    container joined the network."""
    with accessory(docker_client, test_images["v3"], "accessory", init=True) as (network, _):
        yield network


def test_networks_limits_and_health_host_under_load(backend, stack):  # the network outlives the containers
    stack.configure(
        networks=[backend],
        memory="64MiB",
        cpus=0.5,
        pids_limit=64,
        health_path="/cgi-bin/hostup",  # 403 to any Host but APP_HOST, like Rails' or Django's allowed hosts
        health_host=APP_HOST,
        health_status=[200],
    )
    stack.start()
    assert stack.deploy("v1").returncode == 0
    with LoadClient(stack.caddy.port) as load:
        time.sleep(1.5)
        result = stack.deploy("v2")
        time.sleep(1)
        settled = time.monotonic()
        time.sleep(1)
    assert result.returncode == 0, result.stderr
    print(load.summary())
    assert_no_failures(stack, load)
    assert load.bodies_after(settled) == {"v2"}

    [container] = stack.containers()
    host_config = container.attrs["HostConfig"]
    assert (host_config["Memory"], host_config["NanoCpus"], host_config["PidsLimit"]) == (64 * 1024**2, 500_000_000, 64)
    assert set(container.attrs["NetworkSettings"]["Networks"]) == {stack.network, backend}
    # Through Caddy, the app answers with what it got from the accessory, by name, on the backend network.
    assert stack.caddy.get("/cgi-bin/peer") == (200, "v3")


@ONLY_DEBIAN_CADDY
def test_an_app_that_checks_the_host_fails_its_health_gate_without_health_host(stack):
    stack.configure(health_path="/cgi-bin/hostup", start_timeout="2s")
    stack.start()
    result = stack.deploy("v1")
    assert result.returncode == 1
    assert "health check http://" in result.stderr and "/cgi-bin/hostup did not pass" in result.stderr
    assert "HTTP 403" in result.stderr
    reconfigure(stack, health_path="/cgi-bin/hostup", health_host=APP_HOST)
    assert stack.deploy("v1").returncode == 0
    stack.caddy.wait_serving("v1")


@ONLY_DEBIAN_CADDY
def test_a_missing_network_or_an_app_killed_for_memory_leaves_the_old_version_serving(stack, docker_client):
    stack.start()
    assert stack.deploy("v1").returncode == 0
    with LoadClient(stack.caddy.port, slow_workers=1) as load:
        time.sleep(0.5)
        reconfigure(stack, networks=["zdd-it-no-such-network"])
        checked = stack.agent.cli("check")
        missing = stack.deploy("v2")
        reconfigure(stack, memory="32MiB")  # the "hog" version needs 200 MB before it serves
        killed = stack.deploy("hog")
        time.sleep(0.5)
    assert checked.returncode == 2 and "apps.web.networks: Docker network 'zdd-it-no-such-network' does not exist" in (
        checked.stderr
    )
    assert missing.returncode == 1
    assert "Docker network 'zdd-it-no-such-network' (apps.web.networks) does not exist" in missing.stderr
    assert killed.returncode == 1
    assert "exited with code 137 (out of memory)" in killed.stderr and "before it became healthy" in killed.stderr
    assert_no_failures(stack, load)
    assert load.bodies_after(0) == {"v1"}
    wait_until(lambda: [c.labels["zdd.tag"] for c in stack.containers()] == ["v1"], 10, "only v1 left")


@ONLY_DEBIAN_CADDY
def test_zdd_logs_shows_the_live_container_follows_it_across_a_deploy_and_keeps_a_failed_ones(stack):
    # httpd -vv writes a line per request: the app's own output, as a real server logs its requests.
    stack.configure(command=["/bin/sh", "-c", "echo booting $(cat /www/index.html); exec httpd -f -vv -p 8080 -h /www"])
    stack.start()
    assert stack.deploy("v1").returncode == 0
    stack.caddy.get("/marker-one")
    shown = stack.agent.cli("logs")
    assert shown.returncode == 0, shown.stderr
    assert "booting v1" in shown.stdout and "url:/marker-one" in shown.stdout

    def deploy_v2() -> None:
        assert stack.deploy("v2").returncode == 0
        stack.caddy.get("/marker-two")

    out, err = stack.agent.logs_followed(deploy_v2, settle=1.5)
    assert "booting v1" in out and "booting v2" in out and "url:/marker-two" in out
    assert "# zdd: web: now v2 (zdd-web-" in err

    nothing = stack.agent.cli("logs", "--failed")
    assert nothing.returncode == 1 and "web: no failed deploy's output is kept" in nothing.stderr
    reconfigure(stack, command=[])  # the image's own CMD again: "crash" exits at once with an error
    assert stack.deploy("crash").returncode == 1
    failed = stack.agent.cli("logs", "--failed")
    assert failed.returncode == 0 and "fatal: cannot open database" in failed.stdout
    assert "web: v2 -> crash: never went live" in failed.stdout
    # Kept until the next deploy, which replaces it. (Not a deploy that succeeds: zdd would then prune the
    # failed deploy's image, "crash", which the other tests share.)
    assert stack.deploy("sick").returncode == 1
    replaced = stack.agent.cli("logs", "--failed").stdout
    assert "web: v2 -> sick: never went live" in replaced and "cannot open database" not in replaced


@ONLY_DEBIAN_CADDY
def test_deploy_wait_shows_the_steps_as_they_happen(stack):
    stack.configure(probation="3s")
    stack.start()
    assert stack.deploy("v1").returncode == 0
    result = stack.deploy("v2")  # not a terminal: a line per step
    assert result.returncode == 0, result.stderr
    steps = result.stderr.splitlines()
    print("\n".join(steps))
    assert "web: v1 -> v2: probation, 3s left (v1 kept ready)" in steps
    assert not any("2s left" in step for step in steps)  # piped: a step once, not each second of it
    first = {key: next(i for i, s in enumerate(steps) if key in s) for key in ("starting", "draining", "stopping")}
    assert first["starting"] < first["draining"] < steps.index("web: v1 -> v2: probation, 3s left (v1 kept ready)")
    assert first["stopping"] == len(steps) - 1
    assert result.stdout.splitlines()[-1] == "web: v2 is live (succeeded)"
