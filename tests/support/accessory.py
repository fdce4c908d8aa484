"""An accessory for the tests: a container on a user network of its own, known there by an alias (the
app's database or cache in a real set-up); an app container reaches it only if it joined that network."""

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import docker


@contextmanager
def accessory(client: docker.DockerClient, image: str, alias: str, init: bool = False) -> Iterator[tuple[str, object]]:
    """Yields (network name, the running container); both are removed afterwards."""
    name = f"zdd-it-{alias}-{secrets.token_hex(3)}"
    network = client.networks.create(name, driver="bridge")
    api = client.api
    created = api.create_container(
        image,
        name=f"{name}-{alias}",
        host_config=api.create_host_config(network_mode=name, init=init),
        networking_config=api.create_networking_config({name: api.create_endpoint_config(aliases=[alias])}),
    )
    try:
        api.start(created["Id"])
        yield name, client.containers.get(created["Id"])
    finally:
        api.remove_container(created["Id"], force=True)
        network.remove()
