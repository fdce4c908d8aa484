"""An app that ends its SIGTERM only once its idle keep-alive connections close (many servers do) must
not wait out stop_timeout after a deploy: Caddy must not hold idle connections to the old container."""

import re
import time

import pytest

from tests.integration.test_deploy import assert_no_failures
from tests.support import lingering
from tests.support.load import LoadClient


@pytest.fixture(scope="session")
def lingering_images(docker_client):
    return lingering.build(docker_client)


def test_the_old_container_ends_on_its_sigterm_not_at_the_stop_timeout(stack, lingering_images):
    stack.configure(image=lingering.REPOSITORY, stop_timeout="10s", probation="0s")
    stack.start()
    assert stack.deploy("l1").returncode == 0
    with LoadClient(stack.caddy.port, slow_workers=0) as load:  # keep-alive GETs and POSTs, new connections
        time.sleep(1.5)
        started = time.monotonic()
        result = stack.deploy("l2")
        took = time.monotonic() - started
        time.sleep(0.5)
    assert result.returncode == 0, result.stderr
    assert_no_failures(stack, load)
    stopped = re.search(r"stopping l1 \((zdd-web-\S+)\) took ([0-9.]+)s, exit code (\d+)", stack.agent.log)
    print(f"deploy l1 -> l2, probation 0s: {took:.1f}s; {stopped and stopped.group(0)}; {load.summary()}")
    assert "was killed" not in stack.agent.log, stack.agent.log
    assert stopped and stopped.group(3) == "0"
