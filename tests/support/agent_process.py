"""A real `zdd run` in a child process, as systemd would start it, with a real notify socket."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import docker
import tomli_w

from .notify import NotifySocket


def write_config(
    path: Path, state_dir: Path, caddy_admin: str, caddyfile: Path, network: str, apps: dict[str, dict], **top: object
) -> Path:
    path.write_text(
        tomli_w.dumps(
            {
                "state_dir": str(state_dir),
                "network": network,
                **top,
                "caddy": {"admin": caddy_admin, "caddyfile": str(caddyfile)},
                "apps": apps,
            }
        )
    )
    return path


class AgentProcess:
    def __init__(self, config: Path, state_dir: Path, workdir: Path):
        self.config, self.state_dir, self.workdir = config, state_dir, workdir
        self.process: subprocess.Popen | None = None
        self.notify: NotifySocket | None = None
        self.log_path = workdir / "agent.log"
        self.starts = 0

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "zdd", "--config", str(self.config), *args]

    def start(self, wait_ready: bool = True, watchdog_usec: int | None = None) -> None:
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


def remove_app_containers(client: docker.DockerClient, network: str, app: str = "web") -> None:
    """After a test, demo or benchmark: the app's containers and zdd's network go."""
    for container in client.containers.list(all=True, filters={"label": f"zdd.app={app}"}):
        container.remove(force=True)
    for net in client.networks.list(names=[network]):
        net.remove()
