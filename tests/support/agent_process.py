"""A real `zdd run` in a child process, as systemd would start it, with a real notify socket."""

import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors
import tomli_w

from zdd import dns

from .notify import NotifySocket


def write_config(
    path: Path,
    state_dir: Path,
    caddy_admin: str,
    caddyfile: Path,
    network: str,
    apps: dict[str, dict],
    resolver: str,
    caddy_command: str = "caddy",
    **top: object,
) -> Path:
    path.write_text(
        tomli_w.dumps(
            {
                "state_dir": str(state_dir),
                "network": network,
                **top,
                "caddy": {
                    "admin": caddy_admin,
                    "caddyfile": str(caddyfile),
                    "resolver": resolver,
                    "command": caddy_command,
                },
                "apps": apps,
            }
        )
    )
    return path


class ResolverProcess:
    """A real `zdd dns`, as zdd-dns.service runs it: it outlives restarts and kills of the agent."""

    def __init__(self, config: Path, workdir: Path):
        self.config, self.workdir = config, workdir
        self.process: subprocess.Popen | None = None
        self.log_path = workdir / "dns.log"

    @property
    def address(self) -> str:
        return tomllib.loads(self.config.read_text())["caddy"]["resolver"]

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET")}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "zdd", "--config", str(self.config), "dns"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                dns.resolve(self.address, "probe.zdd.internal.", timeout=0.2)
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"zdd dns did not answer at {self.address}: {self.log}") from None

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class AgentProcess:
    def __init__(self, config: Path, state_dir: Path, workdir: Path):
        self.config, self.state_dir, self.workdir = config, state_dir, workdir
        self.process: subprocess.Popen | None = None
        self.notify: NotifySocket | None = None
        self.log_path = workdir / "agent.log"
        self.starts = 0
        self.resolver = ResolverProcess(config, workdir)  # started with the agent, stopped by close()

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "zdd", "--config", str(self.config), *args]

    def start(self, wait_ready: bool = True, watchdog_usec: int | None = None) -> None:
        if self.resolver.process is None:
            self.resolver.start()
        self.starts += 1
        if self.notify:
            self.notify.close()
        socket_path = self.workdir / f"notify-{self.starts}.sock"
        self.notify = NotifySocket(socket_path)
        env = {**os.environ, "NOTIFY_SOCKET": str(socket_path)}
        env.pop("JOURNAL_STREAM", None)
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command("run"), stdout=log, stderr=subprocess.STDOUT, env=env)
        if wait_ready:
            self.notify.wait_for("READY=1", timeout=60)

    def signal(self, signum: int) -> None:
        assert self.process
        self.process.send_signal(signum)

    def stop(self) -> int | None:
        if not self.process:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def kill(self) -> None:
        assert self.process
        self.process.kill()
        self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        self.resolver.stop()
        if self.notify:
            self.notify.close()

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout)

    def echo(self, line: str) -> None:
        """`echo LINE > queue`, exactly as a user types it."""
        subprocess.run(["sh", "-c", f"echo '{line}' > {self.state_dir / 'queue'}"], check=True)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def logs_followed(self, meanwhile: Callable[[], None], settle: float) -> tuple[str, str]:
        """What `zdd logs web -f` prints (stdout, stderr) while `meanwhile()` runs, and `settle` s after."""
        follower = subprocess.Popen(self.command("logs", "web", "-f"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            time.sleep(1)
            meanwhile()
            time.sleep(settle)
        finally:
            follower.terminate()
            out, err = follower.communicate(timeout=10)
        return out.decode(), err.decode()


def remove_app_containers(client: docker.DockerClient, network: str, app: str | None = None) -> None:
    """After a test, demo or benchmark: the apps' containers (or one app's) on its own network, and the
    network, go. Only that network's: a demo, a benchmark or another test may run its own zdd on this engine."""
    label = f"zdd.app={app}" if app else "zdd.app"
    labels = {"label": [label, f"zdd.network={network}"]}
    found = client.containers.list(all=True, filters=labels, ignore_removed=True)
    found += client.containers.list(all=True, filters={"label": label, "network": network})
    for container in {c.id: c for c in found}.values():
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
    for net in client.networks.list(names=[network]):
        net.remove()
