"""Convergence when the world changes under the agent: config edits, lost state, two agents, a frozen
dockerd, a registry that stalls. Against a real dockerd, Caddy and zdd dns, with a client throughout."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.test_deploy import assert_no_failures, wait_until
from tests.support.load import LoadClient
from zdd.state import StateStore

ONLY_DEBIAN_CADDY = pytest.mark.parametrize("caddy_binary", ["caddy2.6"], indirect=True)


@ONLY_DEBIAN_CADDY
def test_a_port_edit_applies_to_the_next_deploy_and_never_to_the_running_version(stack):
    # Issue 11.1: v1 listens on 8080. The operator sets port = 9090 for the next version and reloads zdd;
    # v1 must keep being dialled on 8080 (after the reload and after convergence runs again).
    stack.configure(top={"reconcile_interval": "1s"})
    stack.start()
    assert stack.deploy("v1").returncode == 0
    with LoadClient(stack.caddy.port, slow_workers=1) as load:
        time.sleep(1)
        stack.configure(top={"reconcile_interval": "1s"}, port=9090)
        stack.agent.signal(signal.SIGHUP)
        wait_until(lambda: "reloaded config" in stack.agent.log, 10, "the reload")
        time.sleep(3)  # three convergence rounds
        assert stack.caddy.get() == (200, "v1")
    assert_no_failures(stack, load)
    assert "moved from" not in stack.agent.log
    # The next version listens on 9090: the snippet's upstream name changes, so Caddy reloads once.
    assert stack.deploy("p9090").returncode == 0
    stack.caddy.wait_serving("p9090")
    (container,) = stack.containers()
    assert container.labels["zdd.port"] == "9090"
    assert stack.caddy.routed() == {StateStore(stack.state_dir).load().app("web").current.address}


@ONLY_DEBIAN_CADDY
def test_lost_state_adopts_the_serving_container_and_never_answers_503(stack):
    # Issue 11.3: state.toml and routes.toml gone (apt purge, then install again): the live container
    # is adopted by the instance its snippet names; the site keeps serving, nothing is orphaned.
    stack.start()
    assert stack.deploy("v1").returncode == 0
    (before,) = stack.containers()
    with LoadClient(stack.caddy.port, slow_workers=1) as load:
        time.sleep(1)
        stack.agent.stop()
        stack.agent.resolver.stop()  # the whole state dir goes, as with a purge: zdd dns goes with it
        for name in ("state.toml", "routes.toml"):
            (stack.state_dir / name).unlink()
        stack.agent.resolver.start()  # answers nothing until the agent has written routes.toml again
        stack.agent.start()
        stack.caddy.wait_serving("v1")
        time.sleep(1)
    # While zdd dns had no routes.toml the site could not be found (that outage is the purge itself);
    # what is asserted: the agent adopted what served, and nothing after its start failed.
    ready = stack.agent.notify.messages[-1][0]
    assert [r for r in load.failures if r.started > ready] == [], load.summary()
    assert "adopting the running v1" in stack.agent.log
    assert [c.id for c in stack.containers()] == [before.id]
    state = StateStore(stack.state_dir).load()
    assert state.app("web").current.container_id == before.id and state.instance == before.labels["zdd.instance"]
    assert stack.deploy("v2").returncode == 0  # and deploys on from there
    assert [c.labels["zdd.tag"] for c in stack.containers()] == ["v2"]


@ONLY_DEBIAN_CADDY
def test_a_second_agent_on_the_same_snippet_dir_is_refused(stack, tmp_path):
    stack.start()
    other_state = tmp_path / "other-state"
    config = stack.config_path.read_text().replace(str(stack.state_dir), str(other_state))
    config = config.replace("[caddy]\n", f'[caddy]\nsnippet_dir = "{stack.snippet.parent}"\n')
    other = tmp_path / "other.toml"
    other.write_text(config)
    result = subprocess.run(
        [sys.executable, "-m", "zdd", "--config", str(other), "run"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2, result.stderr
    assert f"caddy.snippet_dir {stack.snippet.parent} is used by another zdd agent" in result.stderr


@ONLY_DEBIAN_CADDY
def test_dockerd_frozen_longer_than_the_watchdog_the_agent_keeps_pinging(stack, docker_client):
    # Issue 11.6: every Docker call blocks while dockerd is SIGSTOPped. The agent must keep pinging systemd
    # (WATCHDOG_USEC=4s: a ping every 2 s), and the deploy it was in must end well once dockerd is back.
    stack.configure(top={"reconcile_interval": "1s"})
    stack.start(watchdog_usec=4_000_000)
    assert stack.deploy("v1").returncode == 0
    dockerd = int(subprocess.run(["pidof", "dockerd"], capture_output=True, text=True, check=True).stdout.split()[0])
    frozen = time.monotonic()
    os.kill(dockerd, signal.SIGSTOP)
    try:
        stack.agent.echo("v2")
        time.sleep(12)
    finally:
        os.kill(dockerd, signal.SIGCONT)
    thawed = time.monotonic()
    wait_until(lambda: stack.caddy.get() == (200, "v2"), 120, "v2 once dockerd answers")
    pings = [t for t, m in stack.agent.notify.messages if "WATCHDOG=1" in m and frozen - 2 <= t <= thawed]
    gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
    assert len(pings) >= 5 and max(gaps) < 3.5, gaps  # never near the 4 s timeout
    assert stack.agent.process.poll() is None
