"""A private registry (docker-registry asking for a login): the nodes pull with the login from zdd's
credentials file, which SwarmRuntime forwards as `docker service create --with-registry-auth` does.
Without one, the deploy fails before anything starts, naming the registry and the file."""

import base64
import json

import pytest

from tests.conftest import CADDY_BINARIES
from tests.support import images
from tests.support.swarm import Registry, get, zdd_on_swarm
from zdd.errors import PermanentError

LOGIN = ("deployer", "pull-secret-1")


@pytest.fixture(scope="module")
def private(cluster, tmp_path_factory):
    registry = Registry(tmp_path_factory.mktemp("private-registry"), login=LOGIN)
    try:
        # An image of its own (a repository no other test uses): no node can have it before this module.
        image = images.build(cluster.host, "v1", "graceful", repository="zdd-it/private")
        yield registry.push(cluster.host, image).rpartition(":")[0]
    finally:
        registry.stop()


def credentials(path, repository: str, login: tuple[str, str]):
    """A credentials file as `docker login` writes it."""
    token = base64.b64encode(":".join(login).encode()).decode()
    path.write_text(json.dumps({"auths": {repository.partition("/")[0]: {"auth": token}}}))
    path.chmod(0o600)
    return path


def test_the_nodes_pull_a_private_image_with_the_login_zdd_forwards(cluster, tmp_path, private):
    auth = credentials(tmp_path / "registry-auth.json", private, LOGIN)
    caddy = CADDY_BINARIES["caddy-current"]
    with zdd_on_swarm(cluster, tmp_path, caddy, private, registry_auth=auth, start_timeout="60s") as stack:
        v1 = stack.deploy("v1", None, 1)
        # Two nodes pulled the image themselves: none had it, and the registry lets no one in without the login.
        assert len({address.rpartition(":")[0] for address in v1.addresses}) == 2
        assert {get(address) for address in v1.addresses} == {"v1"}


@pytest.mark.parametrize("login", [None, ("deployer", "wrong")], ids=["no-login", "wrong-password"])
def test_a_deploy_the_registry_refuses_fails_before_anything_starts(cluster, tmp_path, private, login):
    auth = credentials(tmp_path / "registry-auth.json", private, login) if login else None
    caddy = CADDY_BINARIES["caddy-current"]
    registry = private.partition("/")[0]
    with zdd_on_swarm(cluster, tmp_path, caddy, private, registry_auth=auth, start_timeout="60s") as stack:
        with pytest.raises(PermanentError) as refused:
            stack.deploy("v1", None, 1)
        assert stack.swap.runtime.colours("web") == {}  # no service was put
    expected = f"refused user deployer from {auth}" if login else "wants a login and no credentials file has none"
    assert f"registry {registry} {expected}" in str(refused.value), refused.value
