"""Long use: a hundred deploys in a row under a steady client."""

import time

import pytest

from tests.integration.test_deploy import assert_no_failures, wait_until
from tests.support.load import LoadClient
from zdd.state import StateStore

DEPLOYS = 100


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("caddy_binary", ["caddy2.6"], indirect=True)
def test_a_hundred_deploys_in_a_row_fail_no_request_and_leak_nothing(stack, docker_client):
    stack.configure(health_successes=2, health_interval="50ms", drain_timeout="5s", stop_timeout="2s")
    stack.start()
    assert stack.deploy("abrupt1").returncode == 0
    networks_before = {n.name for n in docker_client.networks.list()}
    rss = {}
    started = time.monotonic()
    with LoadClient(stack.caddy.port, slow_workers=1) as load:
        for i in range(1, DEPLOYS + 1):
            tag = "abrupt2" if i % 2 else "abrupt1"
            result = stack.deploy(tag, timeout=60)
            assert result.returncode == 0, f"deploy {i}: {result.stderr}"
            if i in (10, DEPLOYS):
                rss[i] = rss_kib(stack.agent.process.pid)
        wait_until(lambda: stack.caddy.get() == (200, "abrupt1"), 10, "the last version served")
    took = time.monotonic() - started
    print(
        f"{DEPLOYS} deploys in {took:.0f}s; agent RSS {rss[10]} KiB after 10, {rss[DEPLOYS]} KiB after "
        f"{DEPLOYS}; {load.summary()}"
    )
    assert_no_failures(stack, load)
    assert len(stack.containers()) == 1
    assert {n.name for n in docker_client.networks.list()} == networks_before
    # The agent's lock on the snippet dir is there for good (one file); anything else is a leak.
    assert sorted(p.name for p in stack.snippet.parent.iterdir()) == [".zdd-agent.lock", "web.caddy"]
    assert not list(stack.state_dir.glob(".claim-*")) and not list((stack.state_dir / "requests").iterdir())
    assert not list(stack.state_dir.glob(".*.tmp.*"))
    assert rss[DEPLOYS] - rss[10] < 4096, rss  # flat: under 4 MiB of growth over 90 deploys
    history = StateStore(stack.state_dir).load().history
    assert sum(e.result == "succeeded" for e in history) == DEPLOYS + 1


@pytest.mark.parametrize("caddy_binary", ["caddy2.6"], indirect=True)
def test_tags_written_quickly_during_a_deploy_newest_wins(stack):
    stack.configure(health_successes=10)
    stack.start()
    assert stack.deploy("v1").returncode == 0
    stack.agent.echo("v2")
    wait_until(lambda: any("v1 -> v2: health 1/10" in line for line in stack.agent.notify.lines()), 30, "v2's deploy")
    for tag in ("abrupt1", "v1", "abrupt2", "v3"):  # while v2's deploy runs
        with open(stack.state_dir / "queue", "a") as queue:
            queue.write(tag + "\n")
    wait_until(lambda: stack.caddy.get() == (200, "v3"), 60, "v3, the newest, served")
    wait_until(lambda: "last deploy v3: succeeded" in stack.agent.cli("status").stdout, 30, "v3 recorded")
    results = [(e.tag, e.result) for e in StateStore(stack.state_dir).load().history]
    assert results == [
        ("v1", "succeeded"),
        ("v2", "succeeded"),
        ("abrupt1", "superseded"),
        ("v1", "superseded"),
        ("abrupt2", "superseded"),
        ("v3", "succeeded"),
    ], results
    assert "web: skipping abrupt1: v3 was queued after it" in stack.agent.log
