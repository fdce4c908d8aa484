"""The route table: which container each app's DNS name answers. `zdd run` writes it, `zdd dns` reads it.

<state_dir>/routes.toml, replaced atomically (a switch is one rename):

    instance = "ab12cd34"
    [apps]
    web = ["172.20.0.6:8080", "172.20.0.5:8080"]   # the new container first, the old one while it drains
    api = [["172.20.0.8:3000", "172.20.0.9:3000"], ["172.20.0.3:3000", "172.20.0.4:3000"]]   # replicas

Each item is a version's set of containers: a string for one, a list for several (`replicas = N`).

An app's upstream name carries its port and the agent's instance: `web.p8080.ab12cd34.zdd.internal.`.
Caddy caches lookups by name and port across config loads, and two agents may share one Caddy, so the
name must say exactly what it stands for. A name answers the FIRST set that has its port, every
address of that port in it (Caddy spreads requests over them): [new, old] sends every new request to
new, and after a port change the old config's name still answers the old set until it has drained.

An app on a Swarm (docs/swarm.md) has its two colours on two ports, so its name carries no port:
`web.srv.ab12cd34.zdd.internal.` answers SRV records, one per address of the first set, each with its
own port and a target that names the node's address (`ip-10-216-0-12.ab12cd34.zdd.internal.`, which
answers A): Go's resolver refuses an SRV target that is an IP address.
"""

import ipaddress
import logging
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from .state import write_atomically

log = logging.getLogger("zdd.routes")

DOMAIN = "zdd.internal."  # .internal is reserved for private use (ICANN, 2024); only zdd dns answers it


def upstream_name(app: str, port: int, instance: str) -> str:
    """The DNS name Caddy looks up for an app's containers listening on `port`."""
    return f"{app}.p{port}.{instance}.{DOMAIN}"


def srv_name(app: str, instance: str) -> str:
    """The DNS name Caddy looks up (SRV) for an app on a Swarm: every task of the live set, with its port."""
    return f"{app}.srv.{instance}.{DOMAIN}"


def node_name(host: str, instance: str) -> str:
    """An SRV target: the name of a node's IPv4 address (`ip-10-216-0-12.ab12cd34.zdd.internal.`)."""
    return f"ip-{host.replace('.', '-')}.{instance}.{DOMAIN}"


def node_host(name: str, instance: str) -> str | None:
    """The address a node name of this instance stands for; None for any other name (another site's
    `ip-10-0-0-5.eu-west-1.compute.internal` is not one). With or without the trailing dot: Caddy lists
    upstreams as `target.:port`."""
    label, _, rest = name.lower().partition(".")
    if rest.rstrip(".") != f"{instance}.{DOMAIN}".rstrip(".") or not label.startswith("ip-"):
        return None
    parts = label[3:].split("-")
    if len(parts) != 4 or not all(part.isdigit() and len(part) <= 3 for part in parts):
        return None
    try:
        return str(ipaddress.IPv4Address(".".join(parts)))
    except ValueError:
        return None


def address_port(address: str) -> int:
    return int(address.rpartition(":")[2])


def address_host(address: str) -> str:
    return address.rpartition(":")[0]


Sets = Sequence[Sequence[str]]  # a version's "ip:port"s, newest version first


# Which of an app's task addresses its SRV answer names (agent/reachability.py): (app, addresses) -> addresses.
Reachable = Callable[[str, list[str]], list[str]]


def every_address(app: str, addresses: list[str]) -> list[str]:
    """The default Reachable: no task left out."""
    return addresses


@dataclass(frozen=True)
class RouteTable:
    instance: str = ""
    apps: Mapping[str, Sets] = field(default_factory=dict)  # app -> sets, the first one of a port wins

    def _labels(self, name: str) -> list[str] | None:
        """The labels of a name of this instance, before it and the domain; None for any other name."""
        head, dot, domain = name.lower().partition(".")
        labels = [head]
        while dot and domain != DOMAIN:
            head, dot, domain = domain.partition(".")
            labels.append(head)
        if domain != DOMAIN or len(labels) < 2 or labels[-1] != self.instance:
            return None
        return labels[:-1]

    def lookup(self, name: str) -> list[str] | None:
        """The IPv4 addresses `name` stands for; None when no route has it (the answer is NXDOMAIN)."""
        labels = self._labels(name)
        if labels is None:
            return None
        if len(labels) == 1:
            # A node name (an SRV target) answers the address it spells, routed or not: Caddy may dial a
            # target of the SRV answer it had a moment before a route back (rollback) dropped that node.
            host = node_host(name, self.instance)
            return [host] if host else None
        if len(labels) != 2 or not labels[1].startswith("p"):
            return None
        app, port_label = labels
        for addresses in self.apps.get(app, ()):
            hosts = [address_host(a) for a in addresses if f"p{address_port(a)}" == port_label]
            if hosts:
                return hosts
        return None

    def lookup_srv(self, name: str, reachable: Reachable = every_address) -> list[tuple[str, int]] | None:
        """The SRV records (node name, port) of an app's SRV name: the first set, or those of its tasks
        `reachable` keeps (agent/reachability.py); None for another name."""
        labels = self._labels(name)
        if labels is None or len(labels) != 2 or labels[1] != "srv" or labels[0] not in self.apps:
            return None
        first = next((addresses for addresses in self.apps[labels[0]] if addresses), [])
        return [(node_name(address_host(a), self.instance), address_port(a)) for a in reachable(labels[0], first)]

    def addresses(self, app: str) -> list[str]:
        """Every address of every set of `app`."""
        return [address for addresses in self.apps.get(app, ()) for address in addresses]

    def names(self, app: str) -> dict[str, list[str]]:
        """Every name of `app` with what it answers (for logs and checks)."""
        ports = dict.fromkeys(address_port(a) for a in self.addresses(app))
        return {name: self.lookup(name) or [] for name in (upstream_name(app, p, self.instance) for p in ports)}

    def with_route(self, app: str, sets: Sets) -> "RouteTable":
        apps = {**self.apps, app: [list(addresses) for addresses in sets if addresses]}
        if not apps[app]:
            del apps[app]
        return RouteTable(self.instance, apps)


class RouteFile:
    """routes.toml on disk. Readable by group zdd (the responder runs as the zdd user)."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> RouteTable:
        try:
            data = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return RouteTable()
        apps = data.get("apps", {})
        return RouteTable(
            instance=str(data.get("instance", "")),
            apps={str(k): [_set(item) for item in v] for k, v in apps.items() if isinstance(v, list)},
        )

    def save(self, table: RouteTable) -> None:
        # A set of one stays a plain string: the file reads as it did before replicas.
        apps = {k: [s[0] if len(s) == 1 else list(s) for s in sets] for k, sets in table.apps.items()}
        data = {"instance": table.instance, "apps": apps}
        header = b"# Written by zdd run, read by zdd dns: which container each app's upstream name answers.\n"
        write_atomically(self.path, header + tomli_w.dumps(data).encode(), mode=0o640)


def _set(item: object) -> list[str]:
    return [str(a) for a in item] if isinstance(item, list) else [str(item)]


class LiveRoutes:
    """The responder's view of routes.toml: re-read whenever the file was replaced (one stat per query).
    A file that cannot be read keeps the last good table: answering yesterday's route beats none."""

    def __init__(self, path: Path, reachable: Reachable = every_address):
        self.file = RouteFile(path)
        self.reachable = reachable  # which of a Swarm app's tasks its SRV answer names
        self._seen: tuple[int, int, int] | None = None
        self.table = RouteTable()

    def current(self) -> RouteTable:
        try:
            st = os.stat(self.file.path)
            seen: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = None
        except OSError as err:  # e.g. the state dir's permissions: keep answering what we know
            log.error("dns: cannot stat %s (%s); answering from the last good table", self.file.path, err)
            return self.table
        if seen != self._seen:
            self._seen = seen  # a bad file is reported once, and read again once it is replaced
            try:
                self.table = _checked(self.file.load())
            except Exception as err:  # whatever is wrong with the file, the answers go on
                log.error("dns: cannot read %s (%s); answering from the last good table", self.file.path, err)
            else:
                log.info("dns: routes %s", _describe(self.table) or "none")
        return self.table

    def lookup(self, name: str) -> list[str] | None:
        return self.current().lookup(name)

    def lookup_srv(self, name: str) -> list[tuple[str, int]] | None:
        return self.current().lookup_srv(name, self.reachable)


def _checked(table: RouteTable) -> RouteTable:
    """Every address is IPv4:port, or the table is refused whole (ValueError)."""
    for sets in table.apps.values():
        for address in (a for addresses in sets for a in addresses):
            ipaddress.IPv4Address(address_host(address))
            if not 0 < address_port(address) < 65536:
                raise ValueError(f"bad port in {address!r}")
    return table


def _describe(table: RouteTable) -> str:
    return "; ".join(f"{app} -> {describe_sets(sets)}" for app, sets in sorted(table.apps.items()))


def describe_sets(sets: Sets) -> str:
    """`172.20.0.6:8080, 172.20.0.5:8080`, or with replicas `[172.20.0.6:8080 172.20.0.7:8080], [...]`."""
    return ", ".join(s[0] if len(s) == 1 else f"[{' '.join(s)}]" for s in sets)
