"""How the Docker adapter reads Docker's failures: an engine that does not answer is an outage."""

import pytest
import requests.exceptions

from zdd.config import AppConfig
from zdd.docker_runtime import DockerRuntime, limits
from zdd.errors import TemporaryError


@pytest.mark.parametrize(
    "failure",
    [
        requests.exceptions.ReadTimeout("UnixHTTPConnectionPool: Read timed out. (read timeout=60)"),  # hung
        requests.exceptions.ConnectionError("Connection aborted: FileNotFoundError"),  # gone
    ],
    ids=["hung dockerd", "no dockerd"],
)
def test_an_engine_that_does_not_answer_is_an_outage_not_a_crash(failure):
    runtime = DockerRuntime("unix:///nonexistent/docker.sock", "zdd", "ab12cd34")

    def get(container_id):
        raise failure

    runtime.client.containers.get = get
    with pytest.raises(TemporaryError, match="Docker engine unavailable"):
        runtime.is_running("c1")


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({}, {}),
        ({"memory": 64 * 1024**2}, {"mem_limit": 64 * 1024**2}),
        ({"cpus": 1.5, "pids_limit": 100}, {"nano_cpus": 1_500_000_000, "pids_limit": 100}),
        ({"cpus": 0.25}, {"nano_cpus": 250_000_000}),
    ],
)
def test_limits_are_given_to_docker_as_docker_run_would(keys, expected):
    assert limits(AppConfig(name="web", image="acme/web", port=8080, **keys)) == expected
