"""How the Docker adapter reads Docker's failures: an engine that does not answer is an outage."""

import pytest
import requests.exceptions

from zdd.docker_runtime import DockerRuntime
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
