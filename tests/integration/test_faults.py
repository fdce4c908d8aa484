"""Faults around a deploy, with a client throughout: the registry down, a full disk, Caddy gone mid-deploy."""

import time

import pytest

from tests.integration.test_deploy import assert_no_failures, wait_until
from tests.support.load import LoadClient
from tests.support.net import free_port
from zdd.state import StateStore

ONLY_DEBIAN_CADDY = pytest.mark.parametrize("caddy_binary", ["caddy2.6"], indirect=True)


@ONLY_DEBIAN_CADDY
def test_registry_down_fails_the_deploy_clearly_and_v1_keeps_serving(stack, docker_client, test_images):
    repository = f"127.0.0.1:{free_port()}/zdd-it/web"  # nothing listens there
    docker_client.images.get(test_images["v1"]).tag(repository, "v1")
    stack.configure(image=repository, pull="missing")
    stack.start()
    assert stack.deploy("v1").returncode == 0
    with LoadClient(stack.caddy.port, slow_workers=1) as load:
        result = stack.deploy("v2")
    assert result.returncode == 1
    assert f"pull {repository}:v2" in result.stderr and "connection refused" in result.stderr.lower()
    assert_no_failures(stack, load)
    assert stack.caddy.get() == (200, "v1") and [c.labels["zdd.tag"] for c in stack.containers()] == ["v1"]
    docker_client.images.remove(f"{repository}:v1")


@ONLY_DEBIAN_CADDY
def test_a_pull_is_refused_before_it_starts_when_the_disk_is_too_full(stack, registry):
    stack.configure(image=f"{registry}/zdd-it/web", pull="always", min_free_space="1000TB")
    stack.start()
    result = stack.deploy("v1")
    assert result.returncode == 1
    assert "refusing to pull" in result.stderr and "below min_free_space 1000.0 TB" in result.stderr
    assert "pulling" not in " ".join(stack.agent.notify.statuses())
    assert stack.containers() == []


@ONLY_DEBIAN_CADDY
def test_caddy_gone_at_the_switch_fails_safely_and_the_agent_recovers_by_itself(stack):
    stack.configure(health_successes=20)
    stack.start()
    assert stack.deploy("v1").returncode == 0
    with LoadClient(stack.caddy.port, slow_workers=1) as load:
        time.sleep(1)
        stack.agent.echo("v2")
        wait_until(
            lambda: any("v1 -> v2: health 1/20" in s for s in stack.agent.notify.statuses()), 30, "the health gate"
        )
        down = time.monotonic()
        stack.caddy.stop()  # the site is down: that is the fault itself
        wait_until(lambda: "trying it once more once that answers" in stack.agent.log, 30, "the failure")
        assert "Caddy admin API" in stack.agent.log
        # The old route is on disk again and v2's container is gone: nothing half-done waits for Caddy.
        assert [c.labels["zdd.tag"] for c in stack.containers()] == ["v1"]
        stack.caddy.start()  # reads the snippet zdd restored: the old route
        up = time.monotonic()
        # Caddy answers: the agent converges, then tries v2 once more, which lands. No restart of its own.
        wait_until(lambda: stack.caddy.get() == (200, "v2"), 30, "v2 tried again and live")
        recovered = time.monotonic()
        assert stack.deploy("v3").returncode == 0
        stack.caddy.wait_serving("v3")
        time.sleep(1)
    failed_outside_the_outage = [r for r in load.failures if not down <= r.ended <= up + 0.5]
    assert failed_outside_the_outage == [], load.summary()
    assert not [r for r in load.results if r.started > recovered and not r.ok]
    (entry,) = [e for e in StateStore(stack.state_dir).load().history if e.tag == "v2"]
    assert entry.result == "succeeded" and entry.attempts == 1, entry
    assert [c.labels["zdd.tag"] for c in stack.containers()] == ["v3"]


@ONLY_DEBIAN_CADDY
def test_caddy_restarted_during_the_health_gate_the_deploy_completes(stack):
    stack.configure(health_successes=20)
    stack.start()
    assert stack.deploy("v1").returncode == 0
    stack.agent.echo("v2")
    wait_until(lambda: any("v1 -> v2: health 1/20" in s for s in stack.agent.notify.statuses()), 30, "the health gate")
    stack.caddy.restart()
    wait_until(lambda: stack.caddy.get() == (200, "v2"), 30, "v2 served")
    wait_until(lambda: [c.labels["zdd.tag"] for c in stack.containers()] == ["v2"], 30, "v1 removed")


@ONLY_DEBIAN_CADDY
def test_a_container_restarted_on_another_ip_is_followed_by_caddy(stack, docker_client, test_images):
    stack.configure(top={"reconcile_interval": "1s"})
    stack.start()
    assert stack.deploy("v1").returncode == 0
    (container,) = stack.containers()
    old_ip = container.attrs["NetworkSettings"]["Networks"][stack.network]["IPAddress"]
    container.stop(timeout=1)  # what a dockerd restart does to it, without touching the other tests' engine
    squatter = docker_client.containers.run(test_images["v3"], detach=True, network=stack.network)  # takes the IP
    try:
        container.start()
        container.reload()
        new_ip = container.attrs["NetworkSettings"]["Networks"][stack.network]["IPAddress"]
        assert new_ip != old_ip
        wait_until(lambda: stack.caddy.get() == (200, "v1"), 20, "Caddy following the new address")
        assert f"moved from {old_ip}:8080 to {new_ip}:8080" in stack.agent.log
    finally:
        squatter.remove(force=True)


@ONLY_DEBIAN_CADDY
def test_caddy_refusing_the_config_fails_the_deploy_and_v1_keeps_serving(stack):
    stack.start()
    assert stack.deploy("v1").returncode == 0
    good = stack.caddy.caddyfile.read_text()
    stack.caddy.caddyfile.write_text(good + "\nthis is not a directive {\n")  # an operator's bad edit
    with LoadClient(stack.caddy.port, slow_workers=1) as load:
        time.sleep(1)
        result = stack.deploy("v2")
        assert result.returncode == 1
        assert "Caddy admin API POST /load: HTTP 400" in result.stderr, result.stderr
        assert stack.caddy.get() == (200, "v1") and [c.labels["zdd.tag"] for c in stack.containers()] == ["v1"]
        stack.caddy.caddyfile.write_text(good)  # fixed: the next deploy goes through
        assert stack.deploy("v2").returncode == 0
        stack.caddy.wait_serving("v2")
        time.sleep(1)
    assert_no_failures(stack, load)
    (failed, succeeded) = [e for e in StateStore(stack.state_dir).load().history if e.tag == "v2"]
    assert failed.result == "failed" and succeeded.result == "succeeded"
