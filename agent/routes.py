"""The route table: which container each app's DNS name answers. `zdd run` writes it, `zdd dns` reads it.

<state_dir>/routes.toml, replaced atomically (a switch is one rename):

    instance = "ab12cd34"
    [apps]
    web = ["172.20.0.6:8080", "172.20.0.5:8080"]   # the new container first, the old one while it drains

An app's upstream name carries its port and the agent's instance: `web.p8080.ab12cd34.zdd.internal.`.
Caddy caches lookups by name and port across config loads, and two agents may share one Caddy, so the
name must say exactly what it stands for. A name answers the FIRST address of its port in the app's
list: [new, old] sends every new request to new (what `lb_policy first` did with static upstreams),
and after a port change the old config's name still answers the old container until it has drained.
"""

import ipaddress
import logging
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from .state import write_atomically

log = logging.getLogger("zdd.routes")

DOMAIN = "zdd.internal."  # .internal is reserved for private use (ICANN, 2024); only zdd dns answers it


def upstream_name(app: str, port: int, instance: str) -> str:
    """The DNS name Caddy looks up for an app's containers listening on `port`."""
    return f"{app}.p{port}.{instance}.{DOMAIN}"


def address_port(address: str) -> int:
    return int(address.rpartition(":")[2])


def address_host(address: str) -> str:
    return address.rpartition(":")[0]


@dataclass(frozen=True)
class RouteTable:
    instance: str = ""
    apps: Mapping[str, Sequence[str]] = field(default_factory=dict)  # app -> ["ip:port", ...], first wins

    def lookup(self, name: str) -> list[str] | None:
        """The IPv4 addresses `name` stands for; None when no route has it (the answer is NXDOMAIN)."""
        app, _, rest = name.lower().partition(".")
        port_label, _, rest = rest.partition(".")
        instance, _, domain = rest.partition(".")
        if domain != DOMAIN or instance != self.instance or not port_label.startswith("p"):
            return None
        for address in self.apps.get(app, ()):
            if f"p{address_port(address)}" == port_label:
                return [address_host(address)]
        return None

    def names(self, app: str) -> dict[str, list[str]]:
        """Every name of `app` with what it answers (for logs and checks)."""
        ports = dict.fromkeys(address_port(a) for a in self.apps.get(app, ()))
        return {name: self.lookup(name) or [] for name in (upstream_name(app, p, self.instance) for p in ports)}

    def with_route(self, app: str, addresses: Sequence[str]) -> "RouteTable":
        apps = {**self.apps, app: list(addresses)}
        if not addresses:
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
            apps={str(k): [str(a) for a in v] for k, v in apps.items() if isinstance(v, list)},
        )

    def save(self, table: RouteTable) -> None:
        data = {"instance": table.instance, "apps": {k: list(v) for k, v in table.apps.items()}}
        header = b"# Written by zdd run, read by zdd dns: which container each app's upstream name answers.\n"
        write_atomically(self.path, header + tomli_w.dumps(data).encode(), mode=0o640)


class LiveRoutes:
    """The responder's view of routes.toml: re-read whenever the file was replaced (one stat per query).
    A file that cannot be read keeps the last good table: answering yesterday's route beats none."""

    def __init__(self, path: Path):
        self.file = RouteFile(path)
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


def _checked(table: RouteTable) -> RouteTable:
    """Every address is IPv4:port, or the table is refused whole (ValueError)."""
    for addresses in table.apps.values():
        for address in addresses:
            ipaddress.IPv4Address(address_host(address))
            if not 0 < address_port(address) < 65536:
                raise ValueError(f"bad port in {address!r}")
    return table


def _describe(table: RouteTable) -> str:
    return "; ".join(f"{app} -> {', '.join(addresses)}" for app, addresses in sorted(table.apps.items()))
