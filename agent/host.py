"""Host settings zdd depends on but does not own.

Caddy (2.6+) opens a new SO_REUSEPORT listening socket on every config load and closes the old one.
Linux resets the connections still queued on the closed socket unless net.ipv4.tcp_migrate_req=1
(kernel 5.14+), which moves them to the new socket. Measured with Caddy 2.6.2 under 4 clients
opening new connections during 40 reloads: 10 resets with 0, none with 1. zdd reloads Caddy twice
per deploy, so it asks for the setting; the .deb ships it in sysctl.d.
"""

from pathlib import Path

TCP_MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def reload_safety_problem(path: Path = TCP_MIGRATE_REQ) -> str | None:
    """None when Caddy's reloads can drop no queued connection; else what to do about it."""
    try:
        value = path.read_text().strip()
    except OSError:
        return (
            "net.ipv4.tcp_migrate_req is not available (kernel older than 5.14?): Caddy reloads may reset "
            "a few new connections"
        )
    if value != "1":
        return (
            "net.ipv4.tcp_migrate_req is 0: each Caddy reload may reset connections still queued on its old "
            "socket; set it to 1 (sysctl -w net.ipv4.tcp_migrate_req=1; the zdd package does so in sysctl.d)"
        )
    return None
