"""Caddy behind the swap's Router protocol: zdd owns one snippet file per app, the user owns the Caddyfile.

The user's site block imports the snippet (`import /var/lib/zdd-caddy/web.caddy`). For an app that
runs, the snippet names a dynamic upstream that Caddy resolves through `zdd dns` (agent/dns.py), and
the route itself lives in routes.toml (agent/routes.py): a switch rewrites that table and never loads a
new config into Caddy, because every config load closes the idle client connections of Caddy's old
server (docs/ARCHITECTURE.md). The snippet changes, and Caddy re-reads the Caddyfile, only when what
the snippet says changes: an app's first version, a port change, a new resolver address.
"""

import fnmatch
import http.client
import json
import logging
import re
import socket
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from . import dns
from .config import AppConfig, CaddyConfig, Config
from .errors import ConfigError, PermanentError, TemporaryError
from .routes import DOMAIN, RouteFile, RouteTable, Sets, address_port, node_host, srv_name, upstream_name
from .state import write_atomically
from .units import format_duration

log = logging.getLogger("zdd.caddy")

ADMIN_TIMEOUT = 10.0
# How long Caddy keeps an answer of zdd dns before it asks again: the longest a switch takes to reach
# every new request, and what a drain waits before it trusts a zero count. Each app costs Caddy one
# lookup per period while it has traffic: about 0.5 % of a core in zdd dns per busy app at 100 ms.
REFRESH = 0.1
UPSTREAM_IDLE = 1.0  # Caddy's keep-alive to upstreams (Go's IdleConnTimeout); Caddy's default is 2 minutes
# A Swarm app's tasks are on other machines: how long Caddy waits for a connection to one (a node on
# the same network answers in well under a millisecond), and how long it tries other tasks for one request.
NODE_DIAL = 1.0
NODE_TRY = 5.0
SWITCH_MARGIN = 0.25  # on top of REFRESH: the lookup itself, and a request that had just picked the old one
_IMPORT_RE = re.compile(r"^\s*import\s+(\S+)", re.MULTILINE)


def render_snippet(app: AppConfig, name: str | None, port: int, resolver: str) -> str:
    """The body zdd puts inside the user's site block for `app`: the dynamic upstream `name` on `port`,
    or, before the app's first version, a 503 that says so."""
    header = f"# Managed by zdd for app {app.name}; rewritten when its upstream changes. Do not edit.\n"
    if name is None:
        return header + f'respond "{app.name}: no version deployed yet" 503\n'
    return header + (
        "# Caddy asks zdd dns which container serves; a deploy changes that answer, not this file.\n"
        "reverse_proxy {\n"
        f"\tdynamic a {name} {port} {{\n"
        f"\t\tresolvers udp/{resolver}\n"
        f"\t\trefresh {format_duration(REFRESH)}\n"
        "\t}\n"
        "\t# Idle connections to a container close this soon: one that was switched away from and drained\n"
        "\t# holds none open, so an app that waits for its idle connections on SIGTERM ends promptly.\n"
        "\ttransport http {\n"
        f"\t\tkeepalive {format_duration(UPSTREAM_IDLE)}\n"
        # Caddy before 2.11 drops its other keep-alive defaults once one is set: restate them.
        "\t\tkeepalive_interval 30s\n"
        "\t\tkeepalive_idle_conns_per_host 32\n"
        "\t}\n"
        "}\n"
    )


def render_srv_snippet(app: AppConfig, name: str, resolver: str) -> str:
    """The snippet of an app on a Swarm: its tasks by SRV (each its node's name and its colour's port),
    and the transport resolves those node names through zdd dns too (Go refuses an IP as SRV target)."""
    return (
        f"# Managed by zdd for app {app.name}; rewritten when its upstream changes. Do not edit.\n"
        "# Caddy asks zdd dns which Swarm tasks serve; a deploy changes that answer, not this file.\n"
        "reverse_proxy {\n"
        f"\tdynamic srv {name} {{\n"
        f"\t\tresolvers udp/{resolver}\n"
        f"\t\trefresh {format_duration(REFRESH)}\n"
        "\t}\n"
        "\t# A node can fail with no word to anyone: a connection to its tasks then never opens. Caddy gives up\n"
        "\t# on it within dial_timeout and tries another task (nothing was sent yet), while zdd dns leaves the\n"
        "\t# node out of its answer. No passive health checks: Caddy 2.6 would count its own failed retry\n"
        "\t# of a request with a body against the good task, and then refuse every POST for a while.\n"
        f"\tlb_try_duration {format_duration(NODE_TRY)}\n"
        "\ttransport http {\n"
        f"\t\tresolvers udp/{resolver}\n"
        f"\t\tdial_timeout {format_duration(NODE_DIAL)}\n"
        f"\t\tkeepalive {format_duration(UPSTREAM_IDLE)}\n"
        "\t\tkeepalive_interval 30s\n"
        "\t\tkeepalive_idle_conns_per_host 32\n"
        "\t}\n"
        "}\n"
    )


# `dynamic a web.p8080.<instance>.` for a local app, `dynamic srv web.srv.<instance>.` for one on a Swarm.
_DYNAMIC_NAME_RE = re.compile(
    r"^\s*dynamic (?:a|srv) ([a-z0-9_-]+)\.(?:p\d+|srv)\.([0-9a-f]+)\." + re.escape(DOMAIN), re.MULTILINE
)
_FIXED_RE = re.compile(r"^reverse_proxy ((?:\S+:\d+ ?)+)$", re.MULTILINE)


def snippet_instance(text: str) -> str | None:
    """The agent instance a snippet's dynamic upstream names (to adopt it after lost state)."""
    match = _DYNAMIC_NAME_RE.search(text)
    return match.group(2) if match else None


def snippet_fixed_addresses(text: str) -> list[str]:
    """The upstreams of a snippet `zdd detach` wrote."""
    match = _FIXED_RE.search(text)
    return match.group(1).split() if match else []


def caddyfile_imports(caddyfile_text: str, snippet: Path) -> bool:
    """Does the Caddyfile import this snippet, by its path or by a glob that matches it?"""
    return any(fnmatch.fnmatch(str(snippet), pattern) for pattern in _IMPORT_RE.findall(caddyfile_text))


def render_fixed_snippet(app: AppConfig, addresses: Sequence[str]) -> str:
    """`zdd detach`: the live containers as plain upstreams, for a Caddy that runs on without zdd."""
    if not addresses:
        return render_snippet(app, None, 0, "")
    return (
        f"# Written by `zdd detach` for app {app.name}: a fixed upstream per live container, not updated by zdd.\n"
        f"reverse_proxy {' '.join(addresses)}\n"
    )


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class CaddyAdmin:
    """Caddy's admin API over stdlib HTTP on loopback or a unix socket. No proxy is ever consulted."""

    def __init__(self, address: str, timeout: float = ADMIN_TIMEOUT):
        self.address, self.timeout = address, timeout

    def _connection(self) -> http.client.HTTPConnection:
        if self.address.startswith("unix/"):
            return _UnixConnection(self.address[len("unix/") :], self.timeout)
        host, _, port = self.address.rpartition(":")
        return http.client.HTTPConnection(host.strip("[]"), int(port), timeout=self.timeout)

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "") -> bytes:
        # http.client, not urllib: urllib would honour http_proxy for this loopback address.
        conn = self._connection()
        # Caddy checks the Host header against its admin address; on a unix socket 2.6.2 wants it empty.
        headers = {"Host": "" if self.address.startswith("unix/") else self.address, "Connection": "close"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as err:
            raise TemporaryError(f"Caddy admin API at {self.address} unreachable: {err}") from err
        finally:
            conn.close()
        if response.status >= 400:
            raise PermanentError(f"Caddy admin API {method} {path}: HTTP {response.status}: {_error_text(data)}")
        return data

    def upstreams(self) -> list[dict]:
        return json.loads(self.request("GET", "/reverse_proxy/upstreams") or b"[]") or []


def adapt_caddyfile(caddy: CaddyConfig) -> bytes:
    """The Caddyfile as Caddy's JSON config, adapted by the caddy binary with the file's own path."""
    command = [caddy.command, "adapt", "--config", str(caddy.caddyfile), "--adapter", "caddyfile"]
    try:
        done = subprocess.run(command, capture_output=True, timeout=ADMIN_TIMEOUT, check=False)
    except FileNotFoundError:
        raise ConfigError(f"caddy.command: {caddy.command} not found (zdd adapts the Caddyfile with it)") from None
    except subprocess.TimeoutExpired:
        raise TemporaryError(f"caddy adapt --config {caddy.caddyfile} did not finish in {ADMIN_TIMEOUT:g}s") from None
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines() or [f"exit {done.returncode}"]
        raise PermanentError(f"Caddyfile {caddy.caddyfile} cannot be loaded: {lines[-1].strip()}")
    return done.stdout


def _error_text(data: bytes) -> str:
    try:
        return json.loads(data).get("error", "").strip() or data.decode(errors="replace")[:300]
    except (ValueError, AttributeError):
        return data.decode(errors="replace").strip()[:300]


class CaddyRouter:
    """Implements swap.Router over routes.toml (answered by zdd dns) and the app's snippet."""

    switch_delay = REFRESH + SWITCH_MARGIN

    def __init__(self, config: Config, instance: str, admin: CaddyAdmin | None = None):
        self.config, self.instance = config, instance
        self.admin = admin or CaddyAdmin(config.caddy.admin)
        self.routes = RouteFile(config.routes_path)
        self._unhelpful_reload: tuple[str, str] | None = None  # (Caddyfile, snippet) a reload did not fix

    # --- the route table --------------------------------------------------------------------------
    def table(self) -> RouteTable:
        table = self.routes.load()
        return table if table.instance == self.instance else RouteTable(self.instance, {})

    def routed(self, app: str) -> list[list[str]]:
        """The sets of addresses zdd dns answers for `app`, newest version first."""
        return [list(addresses) for addresses in self.table().apps.get(app, ())]

    def _save_route(self, app: AppConfig, sets: Sets) -> bool:
        table = self.table()
        if self.routed(app.name) == [list(addresses) for addresses in sets if addresses]:
            return False
        self.routes.save(table.with_route(app.name, sets))
        return True

    # --- the snippet ------------------------------------------------------------------------------
    def _snippet_port(self, app: AppConfig) -> int | None:
        return _first_port(self.routed(app.name))

    def _snippet_text(self, app: AppConfig, sets: Sets) -> str:
        port = _first_port(sets)
        if port is None:
            return render_snippet(app, None, 0, self.config.caddy.resolver)
        if app.engine == "swarm":
            return render_srv_snippet(app, srv_name(app.name, self.instance), self.config.caddy.resolver)
        return render_snippet(app, upstream_name(app.name, port, self.instance), port, self.config.caddy.resolver)

    def write_snippet(self, app: AppConfig, sets: Sets) -> bool:
        """Write the snippet if its content changes; True when it did. Readable by the caddy user."""
        path = self.config.snippet_path(app.name)
        text = self._snippet_text(app, sets)
        try:
            if path.read_text(encoding="utf-8") == text:
                return False
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, text.encode(), mode=0o644)
        return True

    def detach(self, app: AppConfig, addresses: Sequence[str]) -> None:
        """Give the app's snippet fixed upstreams (its live containers), so Caddy no longer needs zdd dns.
        The caller reloads Caddy once for all apps."""
        path = self.config.snippet_path(app.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, render_fixed_snippet(app, addresses).encode(), mode=0o644)

    def ensure_snippets(self, routes: dict[str, Sets]) -> None:
        """Before Caddy may read the Caddyfile: every app's snippet exists (a missing import fails it)."""
        for name, app in self.config.apps.items():
            if not self.config.snippet_path(name).exists():
                self.write_snippet(app, routes.get(name, ()))

    # --- swap.Router --------------------------------------------------------------------------------
    def route(self, app: AppConfig, sets: Sets) -> None:
        """Make `app`'s name answer the first set (per port: see agent/routes.py). A new table is a
        switch without a reload; only a snippet that must change (first version, new port) is loaded.
        A switch Caddy would not see (its running config lacks the app's upstream) is refused: the
        caller must not then stop the container Caddy really sends requests to."""
        reloaded = self._apply(app, sets)
        if _first_port(sets) is None:
            return
        try:
            if self.caddy_uses_snippet(app, sets):
                return
            if not reloaded:
                self._reload_for_missing(app)
                if self.caddy_uses_snippet(app, sets):
                    return
        except TemporaryError as err:
            log.warning("%s: cannot ask Caddy whether it uses the app's upstream (%s); going on", app.name, err)
            return
        raise PermanentError(
            f"{app.name}: Caddy's running config does not use the app's upstream, so a switch would reach no "
            f"one; does {self.config.caddy.caddyfile} import {self.config.snippet_path(app.name)}? (zdd check)"
        )

    def _apply(self, app: AppConfig, sets: Sets) -> bool:
        """Table first (zdd dns answers it, checked), then the snippet; True when Caddy was reloaded."""
        self._save_route(app, sets)
        if _first_port(sets) is not None:
            self.verify(app)
        if not self.write_snippet(app, sets):
            return False
        log.info("%s: Caddy re-reads the Caddyfile: the app's snippet changed", app.name)
        self.reload()
        return True

    def verify(self, app: AppConfig) -> None:
        """Ask zdd dns what Caddy will be told. It re-reads routes.toml on every query, so a wrong
        answer means another responder (or none) listens at caddy.resolver."""
        resolver = self.config.caddy.resolver
        table = self.table()
        if app.engine == "swarm":  # one SRV name, whatever the ports
            name = srv_name(app.name, self.instance)
            asked = [(name, table.lookup_srv(name), dns.resolve_srv)]
        else:
            asked = [(name, hosts, dns.resolve) for name, hosts in table.names(app.name).items()]
        for name, expected, resolve in asked:
            try:
                answered = resolve(resolver, name)
            except OSError as err:
                raise TemporaryError(
                    f"{app.name}: zdd dns at {resolver} does not answer ({err or type(err).__name__}); Caddy "
                    f"cannot find the app's container: is zdd-dns.socket running?"
                ) from err
            # For a Swarm app zdd dns names only the tasks that accept connections (agent/reachability.py).
            subset = app.engine == "swarm" and bool(answered) and set(answered) <= set(expected or [])
            if answered != expected and not subset:
                raise TemporaryError(
                    f"{app.name}: zdd dns at {resolver} answers {answered} for {name}, routes.toml says {expected}: "
                    f"is another zdd dns (another state dir) listening there?"
                )

    def ensure_route(self, app: AppConfig, sets: Sets) -> None:
        """Converge without needless reloads: the table and the snippet say `sets`, zdd dns answers
        it, and Caddy runs a config that uses the snippet (re-read only if it does not)."""
        if not self._apply(app, sets) and _first_port(sets) is not None and not self.caddy_uses_snippet(app, sets):
            self._reload_for_missing(app)

    def _reload_for_missing(self, app: AppConfig) -> None:
        """Caddy runs a config without the app's upstream (restarted on an older Caddyfile, or loaded
        by hand). Re-read the Caddyfile once per distinct (Caddyfile, snippet): if it does not import
        the snippet, a reload every reconcile_interval would only reset clients' connections."""
        caddyfile = self.config.caddy.caddyfile
        snippet = self.config.snippet_path(app.name)
        try:
            cause = (caddyfile.read_text(encoding="utf-8"), snippet.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"Caddyfile {caddyfile}: {err.strerror}") from err
        if cause == self._unhelpful_reload:
            return
        if not caddyfile_imports(cause[0], snippet):
            self._unhelpful_reload = cause
            log.warning(
                "%s: %s does not import %s: Caddy does not route to the app (zdd check says how)",
                app.name,
                caddyfile,
                snippet,
            )
            return
        log.warning("%s: Caddy's running config lacks the app's upstream; re-reading %s", app.name, caddyfile)
        self.reload()
        # Remembered only when the reload did not help: if Caddy loses it again later, it is re-read again.
        self._unhelpful_reload = None if self.caddy_uses_snippet(app) else cause

    def caddy_uses_snippet(self, app: AppConfig, sets: Sets = ()) -> bool:
        """Does Caddy's running config use the upstream name the app's snippet names now?"""
        port = _first_port(sets) if sets else self._snippet_port(app)
        if port is None:
            return True  # no version yet: the snippet answers 503, nothing to look for
        if app.engine == "swarm":
            source, name = "srv", srv_name(app.name, self.instance)
        else:
            source, name = "a", upstream_name(app.name, port, self.instance)
        config = json.loads(self.admin.request("GET", "/config/") or b"null")
        return any(item.get("name") == name for item in json_objects(config) if item.get("source") == source)

    def reload(self) -> None:
        """Load the user's Caddyfile (with zdd's snippets) into Caddy exactly as `caddy reload --config
        FILE` does: adapted by Caddy's own adapter, given the file's path, so that relative imports
        resolve against the Caddyfile's directory (a POST of the text to /load would resolve them
        against Caddy's working directory), then POSTed as JSON. An unchanged config is a no-op."""
        self.admin.request("POST", "/load", adapt_caddyfile(self.config.caddy), "application/json")

    def in_flight(self, addresses: Sequence[str]) -> int | None:
        """Requests Caddy has in flight to any of `addresses` (one read of its upstreams); None when Caddy
        lists none of them (2.6 lists a dynamic upstream only while a request uses it; 2.11 may list an
        address twice: the larger count is the live one)."""
        counts: dict[str, int] = {}
        for upstream in self.admin.upstreams():
            address = dialed(str(upstream.get("address")), self.instance)
            if address in addresses:
                counts[address] = max(counts.get(address, 0), int(upstream.get("num_requests", 0)))
        return sum(counts.values()) if counts else None


def dialed(address: str, instance: str) -> str:
    """An upstream as Caddy lists it, as zdd names it: a task found by SRV, `ip-10-216-0-12.<instance>.zdd.
    internal.:18302`, is `10.216.0.12:18302`; any other address stays as it is."""
    host, _, port = address.rpartition(":")
    ip = node_host(host, instance)
    return f"{ip}:{port}" if ip else address


def _first_port(sets: Sets) -> int | None:
    """The port of the newest version's containers (the snippet's), None when nothing is routed."""
    return next((address_port(addresses[0]) for addresses in sets if addresses), None)


def json_objects(value: object) -> Iterator[dict]:
    """Every JSON object inside a JSON value, depth first."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from json_objects(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_objects(item)
