"""Faults around a deploy, with a client throughout: the registry down, a full disk, Caddy gone mid-deploy."""

import time

import pytest

from tests.integration.test_deploy import assert_no_failures, wait_until
from tests.support.load import LoadClient
from tests.support.net import free_port
from zdd.routes import RouteFile
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
def test_caddy_gone_during_a_deploy_does_not_stop_it_and_caddy_comes_back_on_the_new_version(stack):
    # The switch changes what zdd dns answers; Caddy's config is not involved. With Caddy down the drain
    # cannot be measured, so zdd waits out drain_timeout (nothing can be in flight through a dead Caddy).
    stack.configure(health_successes=20, drain_timeout="3s")
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
        wait_until(lambda: [c.labels["zdd.tag"] for c in stack.containers()] == ["v2"], 60, "v1 stopped, v2 alone")
        assert "cannot read Caddy's in-flight count" in stack.agent.log
        assert "drain timeout 3s reached" in stack.agent.log
        # What a Caddy started now reads from disk: the snippet names zdd dns, which answers v2.
        instance = StateStore(stack.state_dir).load().instance
        assert f"dynamic a web.p8080.{instance}.zdd.internal. 8080" in stack.snippet.read_text()
        v2_address = StateStore(stack.state_dir).load().app("web").current.address
        assert RouteFile(stack.state_dir / "routes.toml").load().apps == {"web": [[v2_address]]}  # one set of one
        stack.caddy.start()
        up = time.monotonic()
        stack.caddy.wait_serving("v2")
        assert stack.deploy("v3").returncode == 0
        stack.caddy.wait_serving("v3")
        time.sleep(1)
    failed_outside_the_outage = [r for r in load.failures if not down <= r.ended <= up + 0.5]
    assert failed_outside_the_outage == [], load.summary()
    history = {e.tag: e.result for e in StateStore(stack.state_dir).load().history}
    assert history == {"v1": "succeeded", "v2": "succeeded", "v3": "succeeded"}, history


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
def test_an_unloadable_caddyfile_edit_does_not_stop_a_deploy(stack):
    # An operator's broken edit of the Caddyfile, not reloaded yet. Caddy runs the config it has; zdd's
    # switch changes only zdd dns's answer, so the deploy lands, and zdd never pushes the broken file.
    stack.start()
    assert stack.deploy("v1").returncode == 0
    good = stack.caddy.caddyfile.read_text()
    stack.caddy.caddyfile.write_text(good + "\nthis is not a directive {\n")
    with LoadClient(stack.caddy.port, slow_workers=1) as load:
        time.sleep(1)
        assert stack.deploy("v2").returncode == 0
        stack.caddy.wait_serving("v2")
        time.sleep(1)
    assert_no_failures(stack, load)
    assert "POST /load" not in stack.agent.log
    assert stack.caddy.log.read_text().count('"load complete"') == 1  # the first deploy's, before the load
