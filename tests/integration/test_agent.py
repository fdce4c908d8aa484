"""The agent as systemd sees it: notify, watchdog, signals, the state lock, and crashes at every phase."""

import signal
import subprocess
import time

import docker
import pytest

from tests.integration.test_deploy import assert_no_failures, wait_until
from tests.support import images
from tests.support.load import LoadClient
from zdd.config import load_config
from zdd.state import StateStore

ONLY_DEBIAN_CADDY = pytest.mark.parametrize("caddy_binary", ["caddy2.6"], indirect=True)


@ONLY_DEBIAN_CADDY
def test_ready_only_after_reconciling_and_status_and_watchdog_during_a_deploy(stack, docker_client, test_images):
    stack.configure(health_successes=10)
    stack.start()
    assert stack.deploy("v1").returncode == 0
    stack.agent.stop()
    # A container a crashed deploy left behind: READY=1 must come only once it is gone. Another agent's
    # container (another state dir on the same engine) is not this agent's to touch.
    instance = StateStore(stack.state_dir).load().instance
    stray = docker_client.containers.run(
        test_images["v3"], detach=True, labels={"zdd.app": "web", "zdd.instance": instance}, network=stack.network
    )
    foreign = docker_client.containers.run(
        test_images["v3"], detach=True, labels={"zdd.app": "web", "zdd.instance": "another"}, network=stack.network
    )
    stack.agent.start(wait_ready=False, watchdog_usec=2_000_000)
    stack.agent.notify.wait_for("READY=1")
    # Start-up convergence may finish a deploy and stop a container: systemd is told to wait that long.
    lines = stack.agent.notify.lines()
    extend = [line for line in lines[: lines.index("READY=1")] if line.startswith("EXTEND_TIMEOUT_USEC=")]
    app = load_config(stack.config_path).apps["web"]
    needed = app.drain_timeout + app.stop_timeout + app.probation  # finishing a switched deploy, at most
    assert extend and int(extend[-1].partition("=")[2]) >= needed * 1e6, (needed, lines)
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(stray.id)
    assert docker_client.containers.get(foreign.id).status == "running"
    foreign.remove(force=True)

    with LoadClient(stack.caddy.port, slow_workers=1) as load:
        result = stack.deploy("v2")
    assert result.returncode == 0, result.stderr
    assert_no_failures(stack, load)
    seen = stack.agent.notify.statuses()
    assert any(s.startswith("idle; web v1 since ") for s in seen)
    for expected in ("web: v1 -> v2: starting", "web: v1 -> v2: health 1/10", "web: v1 -> v2: health 10/10"):
        assert expected in seen, seen
    assert seen[-1].startswith("idle; web v2 since ")
    pings = [t for t, message in stack.agent.notify.messages if message == "WATCHDOG=1"]
    assert len(pings) >= 3
    # Every half of WATCHDOG_USEC, deploy or not (the old container's 1 s graceful stop included); a little
    # later on a loaded machine, and always well inside the 2 s timeout.
    assert max(b - a for a, b in zip(pings, pings[1:], strict=False)) < 1.5


@ONLY_DEBIAN_CADDY
def test_a_stuck_agent_stops_pinging_the_watchdog(stack):
    stack.start(watchdog_usec=1_000_000)
    time.sleep(1.2)
    stack.agent.signal(signal.SIGSTOP)  # what a hang looks like from outside
    try:
        stopped_at = time.monotonic()
        time.sleep(1.5)
        late = [t for t, m in stack.agent.notify.messages if m == "WATCHDOG=1" and t > stopped_at + 0.1]
        assert late == []
    finally:
        stack.agent.signal(signal.SIGCONT)


@ONLY_DEBIAN_CADDY
def test_sigterm_mid_deploy_finishes_it_and_extends_the_stop_timeout(stack):
    stack.configure(health_successes=15)
    stack.start()
    assert stack.deploy("v1").returncode == 0
    stack.agent.echo("v2")
    wait_until(lambda: "web: v1 -> v2: health 1/15" in stack.agent.notify.statuses(), 30, "the health gate to start")
    stack.agent.signal(signal.SIGTERM)
    assert stack.agent.process.wait(timeout=60) == 0
    lines = stack.agent.notify.lines()
    assert "STOPPING=1" in lines and any(line.startswith("EXTEND_TIMEOUT_USEC=") for line in lines)
    assert stack.caddy.get() == (200, "v2")
    assert [c.labels["zdd.tag"] for c in stack.containers()] == ["v2"]
    assert "stop requested; finishing the deploy in progress first" in stack.agent.log


@ONLY_DEBIAN_CADDY
def test_a_second_agent_refuses_to_start(stack):
    stack.start()
    second = subprocess.run(stack.agent.command("run"), capture_output=True, text=True, timeout=30)
    assert second.returncode == 1
    assert f"another zdd agent (pid {stack.agent.process.pid}) holds" in second.stderr


@ONLY_DEBIAN_CADDY
def test_sighup_reloads_a_good_config_and_refuses_a_bad_one(stack):
    stack.start()
    assert stack.deploy("v1").returncode == 0
    stack.configure(health_successes=4)
    stack.agent.signal(signal.SIGHUP)
    wait_until(lambda: "reloaded config" in stack.agent.log, 10, "the reload")
    # The datagrams were sent before that log line, but the test's socket reader may not have read them yet.
    wait_until(lambda: stack.agent.notify.lines().count("READY=1") == 2, 5, "READY=1 after the reload")
    assert "RELOADING=1" in stack.agent.notify.lines()
    assert stack.deploy("v2").returncode == 0
    assert "web: v1 -> v2: health 4/4" in stack.agent.notify.statuses()

    good = stack.config_path.read_text()
    stack.config_path.write_text(good.replace("port = 8080", 'port = "eighty"'))
    stack.agent.signal(signal.SIGHUP)
    wait_until(lambda: "reload refused, keeping the running config" in stack.agent.log, 10, "the refusal")
    assert "apps.web.port: expected an integer, got a string" in stack.agent.log
    stack.agent.echo("v3")  # the agent still deploys with the config in force (the CLI would refuse the file)
    stack.caddy.wait_serving("v3")


# Where a SIGKILL lands: the STATUS the agent reported just before, the version deployed, and the
# settings that make the phase last long enough to be hit. What the crash left is read back from
# state.toml, not assumed.
CRASH_POINTS = {
    # point: (the STATUS to kill at, version, settings, the phases state.toml may say the kill hit)
    "pulling": ("web: v1 -> fat2: pulling", "fat2", {"pull": "always"}, {"pulling"}),
    "starting": ("web: v1 -> v2: starting", "v2", {}, {"starting", "started"}),
    "health gate": ("web: v1 -> v2: health 2/15", "v2", {"health_successes": 15}, {"started"}),
    "switched": ("web: v1 -> v2: health 3/3", "v2", {}, {"started", "switching", "draining"}),
    "draining": ("web: v1 -> v2: draining v1", "v2", {}, {"draining"}),
    "probation": ("web: v1 -> v2: probation", "v2", {"probation": "4s"}, {"probation"}),
    "stopping": ("web: v1 -> v2: stopping v1", "v2", {}, {"stopping"}),
}


@ONLY_DEBIAN_CADDY
@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
def test_sigkill_at_each_phase_then_restart_converges(stack, point, registry, docker_client, test_images):
    trigger, tag, settings, phases = CRASH_POINTS[point]
    repository = f"{registry}/zdd-it/web"
    for name in ("v1", tag):
        docker_client.images.get(test_images[name]).tag(repository, name)
        for message in docker_client.api.push(repository, tag=name, stream=True, decode=True):
            assert "error" not in message, message
    if point == "pulling":  # no layer of it may stay on the host, or the pull is instant
        docker_client.images.remove(f"{repository}:{tag}")
        docker_client.images.remove(test_images[tag])
    stack.configure(image=repository, **settings)
    stack.start()
    assert stack.deploy("v1").returncode == 0

    with LoadClient(stack.caddy.port) as load:
        time.sleep(1)
        stack.agent.echo(tag)
        wait_until(lambda: any(s.startswith(trigger) for s in stack.agent.notify.statuses()), 60, trigger)
        stack.agent.kill()
        crashed_in = StateStore(stack.state_dir).load().app("web").phase or "(between phases)"
        time.sleep(0.5)
        stack.agent.start()
        wait_until(lambda: [c.labels.get("zdd.tag") for c in stack.containers()] == [tag], 120, f"one container, {tag}")
        stack.caddy.wait_serving(tag)
        time.sleep(images.SLOW_SECONDS + 0.5)

    print(f"SIGKILL at {point!r}: state said {crashed_in!r}; converged to {tag}; {load.summary()}")
    assert crashed_in in phases, f"the kill meant for {point!r} hit {crashed_in!r}"
    assert_no_failures(stack, load)
    state = StateStore(stack.state_dir).load()
    assert state.app("web").current.tag == tag and state.app("web").phase == ""
    (entry,) = [e for e in state.history if e.tag == tag]
    assert entry.result == "succeeded", entry
    assert stack.caddy.routed() == {state.app("web").current.address}
