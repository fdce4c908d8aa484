"""The Swarm tier: a real 3-node Docker Swarm (tests/support/swarm.py) on the engine at DOCKER_HOST,
with the test images in a registry its nodes pull from."""

import os

import docker
import pytest

from tests.support import images
from tests.support.swarm import swarm

DOCKER_HOST = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        host = docker.DockerClient(base_url=DOCKER_HOST, timeout=120)
        host.ping()
    except Exception as err:
        pytest.fail(f"the Swarm tier needs a running dockerd at {DOCKER_HOST} ({err}); .ci/run starts one")
    with swarm(host, tmp_path_factory.mktemp("swarm")) as running:
        for tag, variant in (
            ("v1", "graceful"),
            ("v2", "graceful"),
            ("v3", "graceful"),
            ("sick", "sick"),
            ("picky", "node2-sick"),
        ):
            running.images[tag] = running.registry.push(host, images.build(host, tag, variant))
        yield running


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """The call's report on the test item, for fixtures that print logs when it failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
