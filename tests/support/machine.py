"""A booted Debian 12 with a real systemd, in systemd-nspawn, sharing this host's network and dockerd.

The root file system is debootstrapped once and cached (DEBOOTSTRAP_CACHE); each run boots a copy.
"""

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

DEBOOTSTRAP_CACHE = Path(os.environ.get("ZDD_E2E_CACHE", "/var/cache/zdd-e2e/bookworm"))
APT_CACHE = DEBOOTSTRAP_CACHE.parent / "apt-archives"  # .debs downloaded inside, kept between runs
# The host's engine the machine uses, bound as its /run/docker.sock: DOCKER_HOST's socket when it names one
# (a second dockerd, so a run does not share images and containers with another), else the default.
_DOCKER_HOST = os.environ.get("DOCKER_HOST", "")
HOST_DOCKER_SOCKET = Path(_DOCKER_HOST[7:] if _DOCKER_HOST.startswith("unix://") else "/run/docker.sock")


def host_docker_client():
    import docker

    return docker.DockerClient(base_url=f"unix://{HOST_DOCKER_SOCKET}")


def cached_rootfs() -> Path:
    marker = DEBOOTSTRAP_CACHE / ".zdd-complete"
    if not marker.exists():
        shutil.rmtree(DEBOOTSTRAP_CACHE, ignore_errors=True)
        DEBOOTSTRAP_CACHE.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=systemd,systemd-sysv,dbus,procps",
                "bookworm",
                str(DEBOOTSTRAP_CACHE),
            ],
            check=True,
            capture_output=True,
            timeout=900,
        )
        marker.touch()
    return DEBOOTSTRAP_CACHE


class Machine:
    # Every machine shares this host's network: two booted at once would fight over Caddy's admin
    # (127.0.0.1:2019) and zdd-dns.socket (127.0.0.1:5354). So one at a time (fixtures are module-scoped).
    booted: "Machine | None" = None

    def __init__(self, root: Path, log: Path):
        self.root, self.log = root, log
        self.process: subprocess.Popen | None = None
        self.leader = 0

    @classmethod
    def from_cache(cls, workdir: Path) -> "Machine":
        root = workdir / "root"
        subprocess.run(["cp", "-a", str(cached_rootfs()), str(root)], check=True)
        # minbase has no /etc/hosts: without it Caddy's admin cannot resolve localhost.
        (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
        (root / "etc" / "hostname").write_text("zdd-e2e\n")
        shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
        return cls(root, workdir / "machine.log")

    def boot(self, timeout: float = 120) -> None:
        if Machine.booted is not None:
            raise RuntimeError(f"a machine is still booted ({Machine.booted.root}): they share this host's network")
        Machine.booted = self
        (APT_CACHE / "partial").mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "-D",
                    str(self.root),
                    "--boot",
                    "--register=no",
                    "--keep-unit",
                    "--console=passive",
                    f"--bind={HOST_DOCKER_SOCKET}:/run/docker.sock",
                    f"--bind={APT_CACHE}:/var/cache/apt/archives",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            children = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
            pids = children.stdout.split()
            if pids:
                self.leader = int(pids[0])
                state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return
            if self.process.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.5)
        raise TimeoutError(f"the machine did not finish booting in {timeout}s")

    def run(
        self, *command: str, check: bool = True, timeout: float = 600, input: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run a command inside, in all of the machine's namespaces, as root."""
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "DEBIAN_FRONTEND": "noninteractive",
            "SYSTEMD_PAGER": "",
            "SYSTEMD_COLORS": "0",
        }
        result = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p", "--", *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def install_zdd(self, deb: Path) -> None:
        """`apt-get install ./zdd_*.deb`, as an operator would, on a machine that uses this host's dockerd."""
        self.before_zdd()
        (self.root / "opt" / deb.name).write_bytes(deb.read_bytes())  # /tmp is a tmpfs once booted
        self.run("apt-get", "update", "-q", timeout=600)
        self.run("apt-get", "install", "-y", "-q", f"/opt/{deb.name}", timeout=900)
        self.after_zdd()

    def before_zdd(self) -> None:
        """Docker: the machine uses the host's dockerd through the bound /run/docker.sock. apt installs
        docker.io inside too (zdd depends on an engine), but its units are masked before the install so
        only the host's engine ever runs."""
        self.run("systemctl", "mask", "docker.service", "docker.socket", "containerd.service")

    def after_zdd(self) -> None:
        """The machine's docker group gets the socket's gid, and zdd is restarted to run with it, as on a
        host where group docker is the socket's group."""
        self.run("groupmod", "-o", "-g", str(HOST_DOCKER_SOCKET.stat().st_gid), "docker")
        self.run("systemctl", "restart", "zdd")

    def sh(self, script: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return self.run("sh", "-c", script, check=check, timeout=timeout)

    def write(self, path: str, text: str) -> None:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def shutdown(self) -> None:
        if not self.process:
            Machine.booted = None if Machine.booted is self else Machine.booted
            return
        if self.process.poll() is None:
            self.run("systemctl", "poweroff", "--no-block", check=False)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        Machine.booted = None


@contextlib.contextmanager
def booted_machine(workdir: Path, network: str) -> Iterator[Machine]:
    """A module's machine: the test images v1-v3 built on the host's engine, a booted copy of the cached
    root; afterwards the journal of zdd and Caddy printed (pytest shows it for a failure), the machine
    powered off, and the apps' containers on `network` removed."""
    from tests.support import images
    from tests.support.agent_process import remove_app_containers

    client = host_docker_client()
    for tag in ("v1", "v2", "v3"):
        images.build(client, tag)
    m = Machine.from_cache(workdir)
    try:
        m.boot()
        yield m
    finally:
        print(m.run("journalctl", "-u", "zdd", "-u", "caddy", "--no-pager", "-n", "150", check=False).stdout)
        m.shutdown()
        remove_app_containers(client, network)
