"""Pulls from a registry that needs a login (Debian's docker-registry with htpasswd), with the logins in
Docker's config.json format: none, a wrong one, the right one, and one rotated between deploys. A failed
login fails the deploy before anything starts, names the registry and its answer, and never the secret."""

import base64
import json
import time

import pytest

from tests.integration.test_deploy import assert_no_failures
from tests.support.load import LoadClient

ONLY_DEBIAN_CADDY = pytest.mark.parametrize("caddy_binary", ["caddy2.6"], indirect=True)
SECRETS = ("first-Secret-1", "wrong-Secret-2", "rotated-Secret-3")


def write_login(path, registry: str, user: str, password: str) -> None:
    """What `docker login` writes (with no credential helper), owner-only as the README says."""
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    path.chmod(0o600)


@ONLY_DEBIAN_CADDY
def test_private_registry_logins_wrong_right_and_rotated(stack, private_registry, docker_client, test_images):
    first, wrong, rotated = SECRETS
    private_registry.login(first)
    repository = f"{private_registry.address}/acme/web"
    login = {"username": private_registry.USER, "password": first}
    for tag in ("v1", "v2"):
        docker_client.images.get(test_images[tag]).tag(repository, tag)
        for message in docker_client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=login):
            assert "error" not in message, message
    auth_file = stack.workdir / "registry-auth.json"
    stack.configure(top={"registry_auth": str(auth_file)}, image=repository, pull="always")
    stack.start()

    no_login = stack.deploy("v1")
    assert no_login.returncode == 1
    assert (
        f"registry {private_registry.address} wants a login and {auth_file} has none for {private_registry.address} "
        "(HTTP 401 Unauthorized" in no_login.stderr
    ), no_login.stderr
    write_login(auth_file, private_registry.address, private_registry.USER, wrong)
    refused = stack.deploy("v1")
    assert refused.returncode == 1
    assert f"registry {private_registry.address} refused user alice from {auth_file} (HTTP 401" in refused.stderr
    assert stack.containers() == []  # nothing started
    checked = stack.agent.cli("check")
    assert "registry_auth" not in checked.stderr, checked.stderr  # the file is valid and owner-only

    write_login(auth_file, private_registry.address, private_registry.USER, first)
    assert stack.deploy("v1").returncode == 0
    stack.caddy.wait_serving("v1")

    with LoadClient(stack.caddy.port, slow_workers=1) as load:
        time.sleep(0.5)
        private_registry.login(rotated)  # the registry's password changes; zdd's file does not yet
        stale = stack.deploy("v2")
        write_login(auth_file, private_registry.address, private_registry.USER, rotated)
        renewed = stack.deploy("v2")  # read at the pull: no reload of zdd needed
        time.sleep(1)
    assert stale.returncode == 1 and "refused user alice" in stale.stderr
    assert renewed.returncode == 0, renewed.stderr
    assert_no_failures(stack, load)
    assert stack.caddy.get() == (200, "v2")

    history = stack.agent.cli("history", "--json").stdout
    for text in (no_login.stderr, refused.stderr, stale.stderr, stack.agent.log, history):
        assert not any(secret in text for secret in SECRETS)
    auth_file.chmod(0o644)
    exposed = stack.agent.cli("check")
    assert exposed.returncode == 2 and "registry passwords readable by others" in exposed.stderr
