"""Fixtures of the integration tier: a real dockerd, real Caddy (2.6.2 and current), a real registry.

These tests do not skip when Docker or Caddy is missing: they fail, saying what is missing.
`.ci/run` installs and starts everything they need.
"""

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.support import images
from tests.support.agent_process import AgentProcess, remove_app_containers, write_config
from tests.support.caddy_server import CaddyServer
from tests.support.net import free_port, free_udp_port, wait_for_port

DOCKER_HOST = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


@pytest.fixture(scope="session")
def docker_client():
    try:
        client = docker.DockerClient(base_url=DOCKER_HOST, timeout=120)
        client.ping()
    except Exception as err:
        pytest.fail(f"integration tests need a running dockerd at {DOCKER_HOST} ({err}); .ci/run starts one")
    return client


@pytest.fixture(scope="session")
def test_images(docker_client):
    """repository:tag for every image the tests deploy, built once per run."""
    built = {}
    for tag, variant in (
        ("v1", "graceful"),
        ("v2", "graceful"),
        ("v3", "graceful"),
        ("abrupt1", "abrupt"),
        ("abrupt2", "abrupt"),
        ("sick", "sick"),
        ("crash", "crash"),
        ("ws1", "ws"),
        ("ws2", "ws"),
        ("dies", "dies"),
        ("p9090", "port9090"),
        ("hog", "hog"),
    ):
        built[tag] = images.build(docker_client, tag, variant)
    built["fat2"] = images.build(docker_client, "fat2", padding_mb=100)  # pulling it takes a while
    return built


class Stack:
    """Caddy + a config + the agent, for one test. Built by the `stack` fixture."""

    def __init__(self, workdir: Path, caddy_binary: str, docker_client):
        self.workdir = workdir
        self.docker = docker_client
        self.state_dir = workdir / "state"
        self.state_dir.mkdir()
        self.network = f"zdd-it-{secrets.token_hex(3)}"
        self.resolver = f"127.0.0.1:{free_udp_port()}"  # where this stack's zdd dns answers Caddy
        self.caddy = CaddyServer(caddy_binary, workdir, self.snippet)
        self.config_path = workdir / "zdd.toml"
        self.agent = AgentProcess(self.config_path, self.state_dir, workdir)
        self.configure()

    def configure(self, top: dict | None = None, **app_keys) -> None:
        # pull "never" unless a test says otherwise: test images are local, and a missing one must not
        # send dockerd looking for it on Docker Hub.
        app = {
            "pull": "never",
            "image": images.REPOSITORY,
            "port": 8080,
            "health_path": "/up",
            "health_interval": "100ms",
            "start_timeout": "20s",
            "drain_timeout": "20s",
            "stop_timeout": "5s",
            "probation": "0s",  # its own tests set it; the others keep their timing
            # Pruning would untag the images the other tests share; its own test uses a repository of its own.
            "keep_images": 1000,
        }
        app.update(app_keys)
        write_config(
            self.config_path,
            self.state_dir,
            self.caddy.admin,
            self.caddy.caddyfile,
            self.network,
            {"web": app},
            self.resolver,
            self.caddy.binary,
            **(top or {}),
        )

    @property
    def snippet(self) -> Path:
        """The default snippet dir: beside the state dir (a test may move the state dir)."""
        return self.state_dir.with_name(f"{self.state_dir.name}-caddy") / "web.caddy"

    def start(self, watchdog_usec: int | None = None) -> "Stack":
        # The agent first: it writes the snippet the Caddyfile imports (Caddy refuses a missing import).
        self.agent.start(wait_ready=False, watchdog_usec=watchdog_usec)
        wait_file(self.snippet)
        self.caddy.start()
        self.agent.notify.wait_for("READY=1", timeout=60)
        return self

    def deploy(self, tag: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.agent.cli("deploy", tag, "--wait", "--timeout", str(timeout), timeout=timeout + 10)

    def containers(self) -> list:
        # This stack's only (another zdd may run on this engine: a demo, a benchmark, another test session);
        # ignore_removed: the agent may remove one between the list and its inspection.
        return self.docker.containers.list(
            all=True, filters={"label": ["zdd.app=web", f"zdd.network={self.network}"]}, ignore_removed=True
        )

    def close(self) -> None:
        self.agent.close()
        self.caddy.stop()
        remove_app_containers(self.docker, self.network)


def wait_file(path: Path, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} was not created within {timeout}s")
        time.sleep(0.05)


@pytest.fixture
def stack(tmp_path, caddy_binary, docker_client, test_images, request):
    s = Stack(tmp_path, caddy_binary, docker_client)
    yield s
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(
            f"--- agent log ---\n{s.agent.log}\n--- caddy log (tail) ---\n"
            f"{s.caddy.log.read_text(errors='replace')[-3000:] if s.caddy.log.exists() else ''}"
        )
    s.close()


MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


@pytest.fixture
def packaged_sysctl():
    """net.ipv4.tcp_migrate_req=1, as the package sets it (packaging/50-zdd.conf), for the tests that walk
    a path which loads a config into Caddy under load (detach, install again): without it Linux resets
    the connections still queued on the socket each load closes (docs/caddy-reloads.md, class D).
    The machine's own value comes back afterwards."""
    before = MIGRATE_REQ.read_text()
    MIGRATE_REQ.write_text("1\n")
    yield
    MIGRATE_REQ.write_text(before)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def registry(tmp_path_factory, docker_client):
    """A real registry (Debian's docker-registry) on loopback; Docker treats 127.0.0.0/8 as insecure-ok."""
    binary = shutil.which("docker-registry")
    if not binary:
        pytest.fail("docker-registry is missing; .ci/run installs it (apt install docker-registry)")
    workdir = tmp_path_factory.mktemp("registry")
    port = free_port()
    (workdir / "config.yml").write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {workdir}/data\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    with open(workdir / "registry.log", "wb") as log:
        process = subprocess.Popen([binary, "serve", str(workdir / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(port)
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)
    # What the tests tagged and pulled under this registry's name (100 MB for "fat2") goes with it.
    for image in docker_client.images.list():
        for name in image.tags:
            if name.startswith(f"127.0.0.1:{port}/"):
                try:
                    docker_client.images.remove(name)
                except docker.errors.APIError as err:
                    print(f"registry teardown: {name} stays: {err}")


class PrivateRegistry:
    """Debian's docker-registry with htpasswd logins on loopback (Docker speaks plain HTTP to 127.0.0.0/8).
    `login(password)` restarts it with a new password for the user: a rotated credential."""

    USER = "alice"

    def __init__(self, workdir: Path, binary: str):
        self.workdir, self.binary = workdir, binary
        self.address = f"127.0.0.1:{free_port()}"
        self.process: subprocess.Popen | None = None

    def login(self, password: str) -> None:
        import warnings

        with warnings.catch_warnings():  # stdlib until 3.13 (the suite runs on Debian 12's 3.11)
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))  # the registry takes only bcrypt
        self.stop()
        (self.workdir / "htpasswd").write_text(f"{self.USER}:{hashed}\n")
        (self.workdir / "config.yml").write_text(
            f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {self.workdir}/data\n"
            f"http:\n  addr: {self.address}\n"
            f"auth:\n  htpasswd:\n    realm: zdd-test\n    path: {self.workdir}/htpasswd\n"
        )
        with open(self.workdir / "registry.log", "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "serve", str(self.workdir / "config.yml")], stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_port(int(self.address.rpartition(":")[2]))

    def stop(self) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def private_registry(tmp_path_factory, docker_client):
    binary = shutil.which("docker-registry")
    if not binary:
        pytest.fail("docker-registry is missing; .ci/run installs it (apt install docker-registry)")
    registry = PrivateRegistry(tmp_path_factory.mktemp("private-registry"), binary)
    yield registry
    registry.stop()
    for image in docker_client.images.list():
        for name in image.tags:
            if name.startswith(f"{registry.address}/"):
                docker_client.images.remove(name)
