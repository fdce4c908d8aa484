"""Restart this machine's real dockerd, the way it runs here: under systemd (docker.service) or as the
background process `.ci/run` starts. Every container stops with it; those with a restart policy come back."""

import os
import signal
import subprocess
import time
from pathlib import Path

import docker

LOG = Path("/var/log/dockerd.log")


def _socket_of(pid: int) -> str:
    """The socket a dockerd serves: its -H/--host, else the default one."""
    args = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
    for i, arg in enumerate(args):
        if arg.startswith("--host="):
            return arg.partition("=")[2]
        if arg in ("-H", "--host") and i + 1 < len(args):
            return args[i + 1]
    return "unix:///var/run/docker.sock"


def dockerd_pid(docker_host: str = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")) -> int:
    """The dockerd the tests use (another engine may run beside it, e.g. one a benchmark uses)."""
    pids = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
    wanted = docker_host.replace("unix:///run/", "unix:///var/run/")
    ours = [int(p) for p in pids if _socket_of(int(p)).replace("unix:///run/", "unix:///var/run/") == wanted]
    if len(ours) != 1:
        raise AssertionError(f"expected one dockerd serving {docker_host}, found {ours or 'none'} (all: {pids})")
    return ours[0]


def _under_systemd(pid: int) -> bool:
    return "docker.service" in Path(f"/proc/{pid}/cgroup").read_text()


def stop_dockerd(timeout: float = 60.0) -> list[str]:
    """Stop dockerd and wait until it has exited. Returns the command line to start it again."""
    pid = dockerd_pid()
    command = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
    if _under_systemd(pid):
        subprocess.run(["systemctl", "stop", "docker.service", "docker.socket"], check=True, timeout=timeout)
        return ["systemd"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while not _exited(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"dockerd (pid {pid}) did not exit within {timeout}s of SIGTERM")
        time.sleep(0.1)
    return command


def _exited(pid: int) -> bool:
    """Gone, or a zombie its parent has not reaped yet (still a /proc entry, but no dockerd any more)."""
    try:
        os.waitpid(pid, os.WNOHANG)  # ours, when a test started it
    except ChildProcessError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def start_dockerd(command: list[str], base_url: str, timeout: float = 60.0) -> None:
    if command == ["systemd"]:
        subprocess.run(["systemctl", "start", "docker.service"], check=True, timeout=timeout)
    else:
        with open(LOG, "ab") as log:
            # setsid --fork: dockerd outlives this test run and is nobody's child here to reap.
            subprocess.run(["setsid", "--fork", *command], stdout=log, stderr=subprocess.STDOUT, check=True)
    deadline = time.monotonic() + timeout
    while True:
        try:
            docker.DockerClient(base_url=base_url, timeout=5).ping()
            return
        except Exception as err:
            if time.monotonic() > deadline:
                raise AssertionError(f"dockerd did not answer within {timeout}s of its start: {err}") from None
            time.sleep(0.2)
