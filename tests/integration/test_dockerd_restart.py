"""dockerd restarts, while idle and in the middle of a deploy, under a client. Stopping dockerd stops
every container, so the site is down while it is: that is the fault itself. What is asserted is that the
agent, never restarted, reconnects and converges: the site serves again, one container of the right
version, Caddy routing to it, and a deploy works afterwards with zero failed requests."""

import time

import pytest

from tests.integration.conftest import DOCKER_HOST
from tests.integration.test_deploy import wait_until
from tests.support.dockerd import start_dockerd, stop_dockerd
from tests.support.images import SLOW_SECONDS
from tests.support.load import LoadClient
from zdd.caddy import CaddyRouter
from zdd.state import StateStore

ONLY_DEBIAN_CADDY = pytest.mark.parametrize("caddy_binary", ["caddy2.6"], indirect=True)


def restart_dockerd_when(stack, saw_it_down: str) -> tuple[float, float]:
    """Stop dockerd, wait until the agent's log shows `saw_it_down`, start dockerd again.
    Returns (monotonic moment it was stopped, moment the site was back). Back means: zdd dns answers the
    addresses the containers have now (dockerd may restart them on each other's IPs), Caddy has asked it
    since (its refresh), and the site answers 200."""
    down = time.monotonic()
    command = stop_dockerd()
    try:
        wait_until(lambda: saw_it_down in stack.agent.log, 30, f"the agent to log {saw_it_down!r}")
        assert stack.agent.process.poll() is None, "the agent died with dockerd"
    finally:
        start_dockerd(command, DOCKER_HOST)

    def back() -> bool:
        running = {live_address(stack, c) for c in stack.containers() if c.status == "running"}
        return bool(stack.caddy.routed()) and stack.caddy.routed() <= running and stack.caddy.get()[0] == 200

    wait_until(back, 60, "the site serving again from where the containers are")
    time.sleep(CaddyRouter.switch_delay)
    return down, time.monotonic()


def live_address(stack, container) -> str:
    return f"{container.attrs['NetworkSettings']['Networks'][stack.network]['IPAddress']}:8080"


def deploy_v2_and_restart_dockerd_at(stack, status: str, saw_it_down: str) -> tuple[float, float]:
    """Queue v2 and restart dockerd once the deploy reports `status` (see restart_dockerd_when)."""
    stack.agent.echo("v2")
    wait_until(lambda: any(status in s for s in stack.agent.notify.statuses()), 30, status)
    return restart_dockerd_when(stack, saw_it_down)


def assert_converged(stack, tag: str) -> None:
    state = StateStore(stack.state_dir).load().app("web")
    assert state.current.tag == tag and state.phase == ""
    assert [c.labels["zdd.tag"] for c in stack.containers()] == [tag]
    assert stack.caddy.routed() == {state.current.address}


def failed_outside(load: LoadClient, down: float, recovered: float) -> list:
    return [r for r in load.failures if not (down <= r.ended and r.started <= recovered)]


@ONLY_DEBIAN_CADDY
def test_dockerd_restarted_while_idle_the_agent_reconnects_and_deploys_again(stack):
    stack.configure(top={"reconcile_interval": "1s"})
    stack.start()
    assert stack.deploy("v1").returncode == 0
    agent_pid = stack.agent.process.pid
    with LoadClient(stack.caddy.port) as load:
        time.sleep(1)
        down, recovered = restart_dockerd_when(stack, "convergence failed: Docker engine unavailable")
        stack.caddy.wait_serving("v1")
        wait_until(lambda: "convergence succeeded after" in stack.agent.log, 30, "the agent to reconnect")
        time.sleep(1)
        after = time.monotonic()
        deployed = stack.deploy("v2")
        assert deployed.returncode == 0, deployed.stderr
        time.sleep(SLOW_SECONDS)

    print(f"dockerd restart while idle: site back {recovered - down:.1f}s after the stop; {load.summary()}")
    assert stack.agent.process.pid == agent_pid  # no restart of its own
    assert failed_outside(load, down, recovered) == [], load.summary()
    assert [r for r in load.failures if r.started > after] == [], load.summary()  # the deploy after it
    assert_converged(stack, "v2")


@ONLY_DEBIAN_CADDY
def test_dockerd_restarted_during_the_health_gate_the_agent_converges_and_v2_lands(stack):
    stack.configure(health_successes=40)  # a gate of ~4 s to restart dockerd in
    stack.start()
    assert stack.deploy("v1").returncode == 0
    agent_pid = stack.agent.process.pid
    with LoadClient(stack.caddy.port) as load:
        time.sleep(1)
        down, recovered = deploy_v2_and_restart_dockerd_at(stack, "v1 -> v2: health 2/40", "Docker engine unavailable")
        wait_until(lambda: ended(stack, "v2"), 90, "the v2 deploy to end")
        (entry,) = [e for e in StateStore(stack.state_dir).load().history if e.tag == "v2"]
        # dockerd stopping its containers is an outage, not v2's crash (its API may answer for a moment
        # after: zdd asks again a second later): v2 is tried once more and lands.
        assert entry.result == "succeeded" and entry.attempts == 1, entry
        stack.caddy.wait_serving("v2")
        time.sleep(SLOW_SECONDS)

    print(f"dockerd restart in the gate: {entry.result}, site back {recovered - down:.1f}s after; {load.summary()}")
    assert stack.agent.process.pid == agent_pid
    assert failed_outside(load, down, recovered) == [], load.summary()
    assert_converged(stack, "v2")


def ended(stack, tag: str) -> bool:
    return any(e.tag == tag and e.result in ("succeeded", "failed") for e in StateStore(stack.state_dir).load().history)


@ONLY_DEBIAN_CADDY
def test_dockerd_restarted_while_draining_the_deploy_is_finished(stack):
    stack.configure(drain_timeout="30s")
    stack.start()
    assert stack.deploy("v1").returncode == 0
    agent_pid = stack.agent.process.pid
    with LoadClient(stack.caddy.port) as load:
        time.sleep(1)
        down, recovered = deploy_v2_and_restart_dockerd_at(
            stack, "v1 -> v2: draining", "it is live, the rest follows once that answers"
        )
        wait_until(lambda: [c.labels["zdd.tag"] for c in stack.containers()] == ["v2"], 60, "v2 alone")
        stack.caddy.wait_serving("v2")
        time.sleep(SLOW_SECONDS)

    print(f"dockerd restart while draining: site back {recovered - down:.1f}s after the stop; {load.summary()}")
    assert stack.agent.process.pid == agent_pid
    assert failed_outside(load, down, recovered) == [], load.summary()
    assert_converged(stack, "v2")
    (entry,) = [e for e in StateStore(stack.state_dir).load().history if e.tag == "v2"]
    assert entry.result == "succeeded" and entry.reason == "finished after an interruption", entry
