"""The release command against a real PostgreSQL 15 in a container on a user network, reached by name:
the migration of each deploy runs once, in the new image, before it takes traffic; the new version reads
what it created; a failing migration leaves the old version serving; a SIGKILL of the agent mid-release
neither skips it nor runs it twice."""

import json
import time

import pytest

from tests.integration.test_app_settings import reconfigure
from tests.integration.test_deploy import assert_no_failures, wait_until
from tests.support import postgres
from tests.support.accessory import accessory
from tests.support.load import LoadClient

ONLY_DEBIAN_CADDY = pytest.mark.parametrize("caddy_binary", ["caddy2.6"], indirect=True)


@pytest.fixture(scope="session")
def pg_images(docker_client):
    return postgres.build(docker_client)


@pytest.fixture
def database(docker_client, pg_images):
    """A fresh PostgreSQL server, `db` on a network of its own; yields the network's name."""
    with accessory(docker_client, pg_images["server"], "db") as (network, server):

        def ready() -> bool:  # on its network address: the set-up's own start listens on loopback only
            return server.exec_run(["sh", "-c", 'pg_isready -q -h "$(hostname -i)"']).exit_code == 0

        wait_until(ready, 60, "PostgreSQL accepting connections")
        yield network


def configure(stack, database: str, **keys) -> dict:
    app = {
        "image": postgres.APP_REPOSITORY,
        "networks": [database],
        "env": postgres.ENV,
        "release_command": postgres.RELEASE,
        "release_timeout": "60s",
        **keys,
    }
    stack.configure(**app)
    return app


@ONLY_DEBIAN_CADDY
def test_the_release_migrates_postgres_before_the_new_version_serves_and_a_failed_one_changes_nothing(database, stack):
    app = configure(stack, database)
    stack.start()
    first = stack.deploy("pg1")
    assert first.returncode == 0, first.stderr
    assert stack.caddy.get("/cgi-bin/items") == (200, "pg1")  # the table exists: pg1's release made it

    with LoadClient(stack.caddy.port) as load:
        time.sleep(1)
        started = time.monotonic()
        second = stack.deploy("pg2")
        took = time.monotonic() - started
        time.sleep(1)
    assert second.returncode == 0, second.stderr
    assert_no_failures(stack, load)
    assert stack.caddy.get("/cgi-bin/items") == (200, "pg1,pg2")  # each release ran exactly once
    assert "web: pg1 -> pg2: release command finished in" in stack.agent.log
    print(f"deploy with a release command: {took:.2f}s; {load.summary()}")

    reconfigure(stack, **{**app, "release_command": "psql -v ON_ERROR_STOP=1 -c 'SELECT * FROM missing_table'"})
    with LoadClient(stack.caddy.port, slow_workers=1) as load:
        failed = stack.deploy("pg3")
        time.sleep(0.5)
    assert failed.returncode == 1
    assert "web: pg2 -> pg3: release command exited with code 1; last output: " in failed.stderr
    assert 'relation "missing_table" does not exist' in failed.stderr
    assert_no_failures(stack, load)
    assert load.bodies_after(0) == {"pg2"}
    assert [c.labels["zdd.tag"] for c in stack.containers()] == ["pg2"]
    assert not stack.docker.containers.list(all=True, filters={"label": "zdd.release"}), "the release container stays"
    kept = stack.agent.cli("logs", "--failed").stdout
    assert "release command exited with code 1" in kept and "missing_table" in kept
    history = json.loads(stack.agent.cli("history", "--json").stdout)
    assert history[-1]["result"] == "failed" and "missing_table" in history[-1]["reason"]


@ONLY_DEBIAN_CADDY
def test_a_sigkill_in_the_middle_of_the_release_neither_skips_it_nor_runs_it_twice(database, stack, docker_client):
    app = configure(stack, database)
    stack.start()
    assert stack.deploy("pg1").returncode == 0
    reconfigure(stack, **{**app, "release_command": f"sleep 3; {postgres.RELEASE}"})

    def release_running() -> bool:
        return bool(docker_client.containers.list(filters={"label": "zdd.release", "status": "running"}))

    stack.agent.echo("pg2")
    wait_until(release_running, 60, "the release container running")
    stack.agent.kill()  # SIGKILL: no clean-up, the phase journal says "releasing"
    stack.agent.start()
    wait_until(lambda: stack.caddy.get("/cgi-bin/items") == (200, "pg1,pg2"), 90, "pg2 live with its migration")
    assert "the release command already ran or runs in zdd-web-" in stack.agent.log
    assert "not run again" in stack.agent.log

    def last_deploy() -> tuple[str, str]:
        entry = json.loads(stack.agent.cli("history", "--json").stdout)[-1]
        return entry["tag"], entry["result"]

    wait_until(lambda: last_deploy() == ("pg2", "succeeded"), 60, "the deploy recorded as succeeded")
    releases = {"label": "zdd.release"}
    wait_until(lambda: not docker_client.containers.list(all=True, filters=releases), 10, "the release container gone")
