"""A real Docker Swarm of three nodes on this one machine, started by one call and removed after it.

Each node is a container of an imported Debian 12 root with Debian's docker.io, running its own dockerd.
What makes a dockerd run inside a container on these machines (checked by trying, issue 15):
- `--privileged` fails here (the VM's bounding set lacks CAP_SYS_RESOURCE), so the node gets every other
  capability, no seccomp or masked paths, and every device; its entrypoint remounts /sys and the cgroup
  v1 hierarchies read-write;
- a host directory as the node's /var/lib/docker, so overlay2 works inside (not overlay on overlay);
- Swarm's routing mesh needs IPVS, which the kernel here lacks: services publish host-mode ports.
Each node's dockerd listens on a unix socket in a host directory, so the tests (and zdd, as on a
manager node) reach it without TCP. Images come from Debian's docker-registry on the nodes' bridge.
"""

import contextlib
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker

from tests.support.machine import DEBOOTSTRAP_CACHE, cached_rootfs
from tests.support.net import free_port, wait_for_port

NODE_ROOTFS = DEBOOTSTRAP_CACHE.parent / "swarm-node"
# The nodes' bridge: gateway .1 (this host, the registry), nodes .11, .12, ... Two Swarms on two engines
# of one host need two subnets (a development run beside CI's): SWARM_TEST_SUBNET=10.217.0 for the second.
SUBNET = os.environ.get("SWARM_TEST_SUBNET", "10.216.0")
NETWORK = f"zdd-swarm-{SUBNET.split('.')[1]}"
NODE_RUN = "/run/zdd-node"  # where a node's dockerd puts its socket: a host directory

ENTRYPOINT = f"""#!/bin/sh
# A Swarm node: its own dockerd, in a container that is not --privileged (see tests/support/swarm.py).
set -e
# Docker mounts /sys and each cgroup v1 hierarchy read-only; the bind remount lifts it for this mount only.
mount -o remount,bind,rw /sys
for h in /sys/fs/cgroup /sys/fs/cgroup/*/; do if mountpoint -q "$h"; then mount -o remount,bind,rw "$h"; fi; done
# A node started again after a kill must not find its last run's pid files: their pids now name other
# processes, and dockerd would wait for a containerd that is not there.
rm -rf {NODE_RUN}/docker.sock /var/run/docker.pid /var/run/docker
exec dockerd --host unix://{NODE_RUN}/docker.sock --insecure-registry "$REGISTRY" --storage-driver overlay2 \\
  --log-level warn
"""

# Tagged by its entrypoint, so a changed entrypoint makes a new image.
NODE_IMAGE = "zdd-it/swarm-node:" + hashlib.sha256(ENTRYPOINT.encode()).hexdigest()[:12]


def node_rootfs() -> Path:
    """The e2e tier's cached Debian 12 root with docker.io (and iproute2, ca-certificates) added, cached."""
    marker = NODE_ROOTFS / ".zdd-complete"
    if marker.exists():
        return NODE_ROOTFS
    shutil.rmtree(NODE_ROOTFS, ignore_errors=True)
    subprocess.run(["cp", "-a", str(cached_rootfs()), str(NODE_ROOTFS)], check=True)
    shutil.copy("/etc/resolv.conf", NODE_ROOTFS / "etc" / "resolv.conf")
    # No service starts while apt installs into a root that is not booted.
    policy = NODE_ROOTFS / "usr" / "sbin" / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    # chroot in a mount namespace of its own: the mounts go with it (systemd-nspawn needs a booted host).
    script = (
        f"mount -t proc proc {NODE_ROOTFS}/proc && "
        f"chroot {NODE_ROOTFS} sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive "
        "apt-get install -y -q --no-install-recommends docker.io iproute2 ca-certificates iptables && apt-get clean'"
    )
    result = subprocess.run(
        ["unshare", "--mount", "--fork", "sh", "-c", script], capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"installing docker.io into the node root failed: {result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    marker.touch()
    return NODE_ROOTFS


def node_image(client: docker.DockerClient) -> str:
    """The node image on `client`'s engine, imported from node_rootfs() once."""
    try:
        client.images.get(NODE_IMAGE)
        return NODE_IMAGE
    except docker.errors.ImageNotFound:
        pass
    root = node_rootfs()
    entry = root / "usr" / "local" / "bin" / "swarm-node"
    entry.write_text(ENTRYPOINT)
    entry.chmod(0o755)
    tar = subprocess.Popen(
        ["tar", "-C", str(root), "--exclude=./.zdd-complete", "--exclude=./var/cache/apt/archives", "-c", "."],
        stdout=subprocess.PIPE,
    )
    assert tar.stdout is not None
    client.api.import_image_from_stream(
        tar.stdout,
        repository=NODE_IMAGE.split(":")[0],
        tag=NODE_IMAGE.split(":")[1],
        changes=['ENTRYPOINT ["/usr/local/bin/swarm-node"]'],
    )
    if tar.wait() != 0:
        raise RuntimeError("tar of the node root failed")
    return NODE_IMAGE


@dataclass
class Node:
    name: str
    address: str
    socket: Path
    container: str

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.docker_host, timeout=120)


class Registry:
    """Debian's docker-registry on every address of this host: the host pushes to 127.0.0.1 (an address
    Docker takes as plain HTTP), the nodes pull from the bridge's gateway (declared insecure to them)."""

    def __init__(self, workdir: Path, login: tuple[str, str] | None = None):
        binary = shutil.which("docker-registry")
        if not binary:
            raise RuntimeError("docker-registry is missing; .ci/run installs it (apt install docker-registry)")
        self.port = free_port()
        self.login = login  # (user, password) it asks for, as a private registry does; None: open to all
        config = (
            f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {workdir}/registry\n"
            f"http:\n  addr: 0.0.0.0:{self.port}\n"
        )
        if login:
            (workdir / "htpasswd").write_text(f"{login[0]}:{_bcrypt(login[1])}\n")
            config += f"auth:\n  htpasswd:\n    realm: zdd-test\n    path: {workdir}/htpasswd\n"
        (workdir / "registry.yml").write_text(config)
        with open(workdir / "registry.log", "ab") as log:
            self.process = subprocess.Popen(
                [binary, "serve", str(workdir / "registry.yml")], stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_for_port(self.port)
        except BaseException:
            self.stop()
            raise
        self.for_host = f"127.0.0.1:{self.port}"
        self.for_nodes = f"{SUBNET}.1:{self.port}"

    def push(self, client: docker.DockerClient, image: str) -> str:
        """Push `repository:tag`, a local image of the host's engine; returns its name as the nodes pull it."""
        repository, _, tag = image.rpartition(":")
        client.images.get(image).tag(f"{self.for_host}/{repository}", tag)
        auth = {"username": self.login[0], "password": self.login[1]} if self.login else None
        pushed = client.images.push(f"{self.for_host}/{repository}", tag, stream=True, decode=True, auth_config=auth)
        for line in pushed:
            if "error" in line:
                raise RuntimeError(f"push of {image}: {line['error']}")
        client.images.remove(f"{self.for_host}/{repository}:{tag}")
        return f"{self.for_nodes}/{repository}:{tag}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _bcrypt(password: str) -> str:
    """The hash docker-registry's htpasswd file wants (Debian 12's libcrypt makes bcrypt)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # crypt leaves Python in 3.13; the tests run 3.11
        import crypt
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))


@dataclass
class Swarm:
    nodes: list[Node]
    registry: Registry
    host: docker.DockerClient  # the engine the nodes run on
    images: dict[str, str] = field(default_factory=dict)  # tag -> the name the nodes pull it by

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    def stop_node(self, node: Node) -> None:
        """A node failure: its container (and so its dockerd and every task on it) is killed."""
        self.host.containers.get(node.container).kill()

    def start_node(self, node: Node) -> None:
        """The node back after a failure: its dockerd starts again and rejoins the Swarm (its state is kept)."""
        self.host.containers.get(node.container).start()
        _wait_for_engine(node, self.host)


def _wait_for_engine(node: Node, host: docker.DockerClient, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.socket.exists():
            with contextlib.suppress(Exception):
                node.client().ping()
                return
        container = host.containers.get(node.container)
        if container.status == "exited":
            raise RuntimeError(f"{node.name} exited: {container.logs(tail=30).decode(errors='replace')}")
        time.sleep(0.3)
    raise TimeoutError(f"{node.name}'s dockerd did not answer in {timeout}s")


@contextlib.contextmanager
def swarm(host: docker.DockerClient, workdir: Path, nodes: int = 3) -> Iterator[Swarm]:
    """`nodes` Docker engines in a Swarm (the first is the manager, the others workers), and a registry
    they pull from; everything removed afterwards, the node's state directories too."""
    image = node_image(host)
    for stale in host.containers.list(all=True, filters={"label": "zdd-it.swarm"}):
        stale.remove(force=True)
    with contextlib.suppress(docker.errors.NotFound):
        host.networks.get(NETWORK).remove()
    network = host.networks.create(
        NETWORK,
        driver="bridge",
        ipam=docker.types.IPAMConfig(
            pool_configs=[docker.types.IPAMPool(subnet=f"{SUBNET}.0/24", gateway=f"{SUBNET}.1")]
        ),
    )
    started: list[Node] = []
    registry: Registry | None = None
    try:
        registry = Registry(workdir)
        for number in range(1, nodes + 1):
            node = _start_node_at(host, image, workdir, number, f"{SUBNET}.0/24", network)
            started.append(node)
        for node in started:
            _wait_for_engine(node, host)
        manager = started[0].client()
        manager.swarm.init(advertise_addr=started[0].address, listen_addr=f"{started[0].address}:2377")
        token = manager.swarm.attrs["JoinTokens"]["Worker"]
        for node in started[1:]:
            node.client().swarm.join(
                remote_addrs=[f"{started[0].address}:2377"],
                join_token=token,
                advertise_addr=node.address,
                listen_addr=f"{node.address}:2377",
            )
        wait_for_nodes(manager, nodes)
        yield Swarm(started, registry, host)
    finally:
        try:
            # By label: a node created but not started (a failed connect) goes too.
            for container in host.containers.list(all=True, filters={"label": "zdd-it.swarm"}):
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True)
            if registry is not None:
                registry.stop()
        finally:
            with contextlib.suppress(docker.errors.APIError):
                network.remove()
            for number in range(1, nodes + 1):
                shutil.rmtree(workdir / f"node{number}", ignore_errors=True)  # the nodes' images and containers


def _start_node_at(host: docker.DockerClient, image: str, workdir: Path, number: int, insecure: str, network) -> Node:
    """A node on the bridge at its fixed address (docker-py's run() cannot give one, so create, connect, start)."""
    name = f"zdd-swarm-node{number}"
    state = workdir / f"node{number}"
    (state / "docker").mkdir(parents=True, exist_ok=True)
    (state / "run").mkdir(exist_ok=True)
    address = f"{SUBNET}.{10 + number}"
    host_config = host.api.create_host_config(
        cap_add=["ALL"],
        cap_drop=["SYS_RESOURCE"],
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        device_cgroup_rules=["a *:* rwm"],
        binds=[f"{state / 'docker'}:/var/lib/docker", f"{state / 'run'}:{NODE_RUN}"],
    )
    # `docker run --security-opt systempaths=unconfined` is the client's word for these two (the engine
    # does not take it): nothing in /proc masked or read-only, so the node's dockerd can set its sysctls.
    host_config["MaskedPaths"] = []
    host_config["ReadonlyPaths"] = []
    created = host.api.create_container(
        image,
        name=name,
        hostname=f"node{number}",
        environment={"REGISTRY": insecure},  # every registry on the bridge is plain HTTP
        host_config=host_config,
        labels={"zdd-it.swarm": "node"},
    )
    container = host.containers.get(created["Id"])
    network.connect(container, ipv4_address=address)
    with contextlib.suppress(docker.errors.APIError):
        host.networks.get("bridge").disconnect(container)
    container.start()
    return Node(name, address, state / "run" / "docker.sock", name)


def wait_for_nodes(manager: docker.DockerClient, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = [n for n in manager.nodes.list() if n.attrs["Status"]["State"] == "ready"]
        if len(ready) == count:
            return
        time.sleep(0.3)
    raise TimeoutError(f"the Swarm has not {count} ready nodes after {timeout}s")


PORT = 18301  # blue's published port in the tests; green's is PORT + 1


def wait_serving(runtime, app: str, colour: str, image: str, replicas: int, timeout: float = 90) -> list:
    """The colour's tasks once Swarm runs `replicas` of `image`, one per node (SwarmRuntime.tasks)."""
    from zdd.swarm_runtime import serving

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = serving(runtime.tasks(app, colour), image, replicas)
        if ready is not None:
            return ready
        time.sleep(0.3)
    raise AssertionError(
        f"{colour} not serving after {timeout}s: {runtime.tasks(app, colour)} {runtime.failed_tasks(app, colour)}"
    )


def get(address: str, path: str = "/", timeout: float = 5) -> str:
    """The answer at address, retried while the node's port is being published (a task that has just started)."""
    import urllib.request

    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://{address}{path}", timeout=timeout) as answer:
                return answer.read().decode().strip()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@dataclass
class ZddOnSwarm:
    """zdd's swap on a Swarm, as the agent builds it: SwarmRuntime, CaddyRouter over a real Caddy and a
    real `zdd dns`, the state journal. `deploy(tag, current, number)` runs one deploy of the app."""

    swap: object
    app: object
    caddy: object
    state: object
    repository: str
    dns: object  # the ResolverProcess: its log says which tasks it left out

    def deploy(self, tag: str, current, number: int):
        from zdd.reference import parse_reference

        return self.swap.deploy(self.app, parse_reference(tag, self.repository), current, f"d{number}").running


@contextlib.contextmanager
def zdd_on_swarm(
    cluster: Swarm,
    workdir: Path,
    caddy_binary: str,
    repository: str,
    replicas: int = 2,
    ports=(PORT, PORT + 1),
    registry_auth: Path | None = None,
    **app,
) -> Iterator[ZddOnSwarm]:
    """An app `web` on the Swarm (image `repository`, which the nodes pull, with the logins of
    `registry_auth` if given), behind Caddy; its two services are removed afterwards."""
    import dataclasses

    from tests.support.agent_process import ResolverProcess, write_config
    from tests.support.caddy_server import CaddyServer
    from tests.support.net import free_udp_port
    from zdd.caddy import CaddyRouter
    from zdd.clock import SystemClock
    from zdd.config import load_config
    from zdd.daemon import StateJournal
    from zdd.failed_output import FailedOutput
    from zdd.health import HttpProber
    from zdd.state import State, StateStore
    from zdd.swap import Swap
    from zdd.swarm_runtime import SwarmRuntime

    instance = "6b5c4d3e"
    state_dir = workdir / "state"
    state_dir.mkdir()
    config_path = workdir / "zdd.toml"
    caddy = CaddyServer(caddy_binary, workdir, state_dir.with_name("state-caddy") / "web.caddy")
    table = {"image": repository, "port": 8080, "health_path": "/up", "health_interval": "100ms", "probation": "0s"}
    table.update(app)
    resolver = f"127.0.0.1:{free_udp_port()}"
    write_config(config_path, state_dir, caddy.admin, caddy.caddyfile, "zdd-swarm", {"web": table}, resolver)
    config = load_config(config_path)
    app_config = dataclasses.replace(config.apps["web"], engine="swarm", replicas=replicas, swarm_ports=tuple(ports))
    router = CaddyRouter(config, instance)
    dns = ResolverProcess(config_path, workdir)
    runtime = SwarmRuntime(cluster.manager.client(), registry_auth=registry_auth)
    state = State(instance=instance)
    journal = StateJournal(StateStore(state_dir), state, FailedOutput(state_dir))
    dns.start()
    try:
        router.ensure_snippets({})
        caddy.start()
        yield ZddOnSwarm(
            Swap(runtime, router, HttpProber(), SystemClock(), journal), app_config, caddy, state, repository, dns
        )
    finally:
        caddy.stop()
        dns.stop()
        for colour in ("blue", "green"):
            runtime.remove_service("web", colour)


if __name__ == "__main__":  # a Swarm to try things by hand: python -m tests.support.swarm
    import signal
    import tempfile

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` removes it as Ctrl-C does

    workdir = Path(tempfile.mkdtemp(prefix="zdd-swarm-"))
    with swarm(docker.from_env(), workdir) as cluster:
        for node in cluster.nodes:
            print(f"{node.name} {node.address} DOCKER_HOST={node.docker_host}")
        print(f"registry: push to {cluster.registry.for_host}, nodes pull from {cluster.registry.for_nodes}")
        print(f"Ctrl-C or kill {os.getpid()} removes it")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    os.rmdir(workdir) if not any(workdir.iterdir()) else None
