"""Host settings zdd benefits from but does not own.

Caddy (2.6+) opens a new SO_REUSEPORT listening socket on every config load and closes the old one.
Linux resets the connections still queued on the closed socket unless net.ipv4.tcp_migrate_req=1
(kernel 5.14+), which moves them to the new socket. zdd's switches load no config into Caddy (they
change what zdd dns answers, docs/ARCHITECTURE.md section 3), so deploys do not depend on it; but
Caddy still loads a config when an app's snippet changes (its first version, a port change) and when
the operator reloads Caddy. The .deb sets it in sysctl.d; `zdd check` says when it is off.
"""

from pathlib import Path

TCP_MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def reload_safety_problem(path: Path = TCP_MIGRATE_REQ) -> str | None:
    """None when a Caddy reload can drop no queued connection; else what to do about it."""
    try:
        value = path.read_text().strip()
    except OSError:
        return (
            "net.ipv4.tcp_migrate_req is not available (kernel older than 5.14?): a Caddy reload (yours, or zdd's "
            "when an app's snippet changes) may reset a few new connections"
        )
    if value != "1":
        return (
            "net.ipv4.tcp_migrate_req is 0: a Caddy reload (yours, or zdd's when an app's snippet changes) may "
            "reset connections still queued on its old socket; set it to 1 (sysctl -w net.ipv4.tcp_migrate_req=1; "
            "the zdd package does so in sysctl.d). Deploys do not reload Caddy."
        )
    return None
