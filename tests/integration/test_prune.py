"""Image pruning against a real dockerd: the live image, the previous keep_images and the rollback
target stay; an image another container uses and an image zdd never deployed are never removed."""

import secrets

import docker.errors
import pytest

from tests.support import images
from zdd.state import StateStore

ONLY_DEBIAN_CADDY = pytest.mark.parametrize("caddy_binary", ["caddy2.6"], indirect=True)


def present(client, repository: str) -> list[str]:
    return sorted(tag.rpartition(":")[2] for image in client.images.list(name=repository) for tag in image.tags)


@ONLY_DEBIAN_CADDY
def test_pruning_keeps_the_live_the_previous_n_and_the_rollback_target(stack, docker_client):
    # A repository of its own: the images the other tests share are never at risk.
    repository = f"zdd-prune-{secrets.token_hex(3)}/web"
    for tag in ("p1", "p2", "p3", "p4", "p5", "unrelated"):
        images.build(docker_client, tag, repository=repository)
    stack.configure(image=repository, keep_images=1)
    stack.start()
    bystander = None
    try:
        for tag in ("p1", "p2", "p3"):
            assert stack.deploy(tag).returncode == 0, stack.agent.log
        # live p3 + one previous (p2, also the rollback target): p1 goes.
        assert present(docker_client, repository) == ["p2", "p3", "p4", "p5", "unrelated"]
        assert f"pruning image {repository}:p1 (sha256:" in stack.agent.log

        # Someone else runs p2: Docker refuses to delete it, and zdd leaves it (and says so).
        bystander = docker_client.containers.create(f"{repository}:p2", name=f"bystander-{secrets.token_hex(3)}")
        assert stack.deploy("p4").returncode == 0
        assert present(docker_client, repository) == ["p2", "p3", "p4", "p5", "unrelated"]
        assert f"pruning image {repository}:p2 (sha256:" in stack.agent.log and ": kept: " in stack.agent.log
        bystander.remove()
        bystander = None

        assert stack.deploy("p5").returncode == 0  # p2 is free now, and tried again; p3 goes too
        assert present(docker_client, repository) == ["p4", "p5", "unrelated"]

        # The rollback target is on the host: rollback needs no pull (pull = "never" here).
        rollback = stack.agent.cli("rollback", "--wait")
        assert rollback.returncode == 0, rollback.stderr
        stack.caddy.wait_serving("p4")
        assert present(docker_client, repository) == ["p4", "p5", "unrelated"]  # now p5 is the rollback target

        history = StateStore(stack.state_dir).load().history
        assert {e.tag for e in history if e.image_pruned} == {"p1", "p2", "p3"}
    finally:
        if bystander is not None:
            bystander.remove(force=True)
        stack.close()
        for image in docker_client.images.list(name=repository):
            try:
                docker_client.images.remove(image.id, force=True)
            except docker.errors.NotFound:
                pass
