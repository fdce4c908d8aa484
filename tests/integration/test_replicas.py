"""`replicas = 2` against a real dockerd and a real Caddy, under real HTTP load: every replica takes a
fair share of the requests, and a deploy swaps the whole set with zero failed requests."""

import http.client
import time
from collections import Counter

from tests.integration.test_deploy import assert_no_failures, wait_until
from tests.support.images import SLOW_SECONDS
from tests.support.load import LoadClient

SPREAD_REQUESTS = 400


def whoami(port: int) -> str:
    """One request on a new connection, as a new visitor: `v2 3f2a9c81d0e4` (version, container)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/cgi-bin/whoami")
        response = conn.getresponse()
        body = response.read().decode().strip()
        assert response.status == 200, (response.status, body)
        return body
    finally:
        conn.close()


def spread(port: int, tag: str) -> Counter:
    """Which container answered each of SPREAD_REQUESTS requests for `tag`'s version."""
    answers = Counter(whoami(port) for _ in range(SPREAD_REQUESTS))
    assert {answer.split()[0] for answer in answers} == {tag}, answers
    return Counter({answer.split()[1]: n for answer, n in answers.items()})


def short_ids(stack, tag: str) -> set[str]:
    return {c.id[:12] for c in stack.containers() if c.labels.get("zdd.tag") == tag and c.status == "running"}


def test_replicas_share_the_load_and_a_deploy_swaps_the_whole_set_with_zero_failed_requests(stack):
    stack.configure(replicas=2)
    stack.start()
    assert stack.deploy("v1").returncode == 0
    stack.caddy.wait_serving("v1")
    assert len(short_ids(stack, "v1")) == 2
    status = stack.agent.cli("status")
    assert status.stdout.count(":8080") == 2, status.stdout  # both containers, each with its address

    with LoadClient(stack.caddy.port) as load:
        time.sleep(2.5)  # steady state, with slow requests in flight
        before = spread(stack.caddy.port, "v1")  # under load: each replica's share
        old = short_ids(stack, "v1")
        stack.agent.echo("v2")
        wait_until(lambda: "v2" in load.bodies_after(time.monotonic() - 0.5), 60, "v2 served")
        wait_until(lambda: not old & {c.id[:12] for c in stack.containers()}, 60, "both old containers removed")
        after = spread(stack.caddy.port, "v2")
        time.sleep(SLOW_SECONDS + 1)  # slow requests begun on the new version finish too

    print(load.summary())
    print(f"spread over the replicas of v1: {dict(before)}; of v2: {dict(after)}")
    assert_no_failures(stack, load)
    assert set(before) == old
    assert set(after) == short_ids(stack, "v2") and len(after) == 2
    # Caddy picks an upstream at random: each of 2 replicas gets a share far from 0 (400 requests: a
    # share under 35 % is over 6 standard deviations away from a fair 50 %).
    for counts in (before, after):
        assert min(counts.values()) >= 0.35 * SPREAD_REQUESTS, counts
    assert len(stack.containers()) == 2
