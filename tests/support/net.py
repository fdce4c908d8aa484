"""Loopback helpers for the integration tier."""

import http.client
import random
import socket
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_port() -> int:
    """A loopback port free for both UDP and TCP, for zdd dns, which tests stop and start again on the
    same port. Below the kernel's ephemeral range: a port the kernel hands out as a source port cannot be
    taken meanwhile by one of Caddy's lookups (a UDP socket each; CI at 56f71c1 failed a restart of zdd
    dns with "Address already in use" while Caddy kept asking under load)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            try:
                udp.bind(("127.0.0.1", port))
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def http_get(port: int, path: str = "/", timeout: float = 10) -> tuple[int, str]:
    """One GET on a new connection to 127.0.0.1:port: (status, body stripped)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode().strip()
    finally:
        conn.close()
