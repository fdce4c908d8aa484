"""Caddy behind the swap's Router protocol: zdd owns one snippet file per app, the user owns the Caddyfile.

The user's site block imports the snippet (`import /var/lib/zdd/caddy/web.caddy`); zdd rewrites the
snippet atomically and re-loads the user's Caddyfile through the admin API (POST /load, what
`caddy reload` does). Because the route lives in a file, it survives `systemctl reload caddy` and restarts.
"""

import fnmatch
import http.client
import json
import logging
import re
import socket
from collections.abc import Sequence
from pathlib import Path

from .config import AppConfig, Config
from .errors import ConfigError, PermanentError, TemporaryError
from .state import write_atomically
from .units import format_duration

log = logging.getLogger("zdd.caddy")

ADMIN_TIMEOUT = 10.0
# Caddy 2.6.2 (Debian 12) has no stream_close_delay; 2.7+ does. Asked once, without side effects, via /adapt.
_STREAM_PROBE = ":0 {\n\treverse_proxy 127.0.0.1:9 {\n\t\tstream_close_delay 1s\n\t}\n}\n"
_IMPORT_RE = re.compile(r"^\s*import\s+(\S+)", re.MULTILINE)


def render_snippet(app: AppConfig, addresses: Sequence[str], stream_close_delay: bool) -> str:
    """The body zdd puts inside the user's site block for `app`."""
    header = f"# Managed by zdd for app {app.name}; rewritten on every deploy. Do not edit.\n"
    if not addresses:
        return header + f'respond "{app.name}: no version deployed yet" 503\n'
    lines = [f"reverse_proxy {' '.join(addresses)} {{", "\tlb_policy first"]
    if stream_close_delay:
        # Keep WebSockets of the old config open while the old container drains (Caddy 2.7+).
        lines.append(f"\tstream_close_delay {format_duration(app.drain_timeout)}")
    lines.append("}")
    return header + "\n".join(lines) + "\n"


def caddyfile_imports(caddyfile_text: str, snippet: Path) -> bool:
    """Does the Caddyfile import this snippet, by its path or by a glob that matches it?"""
    return any(fnmatch.fnmatch(str(snippet), pattern) for pattern in _IMPORT_RE.findall(caddyfile_text))


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
            raise TemporaryError(f"Caddy admin API at {self.address} unreachable: {err}") from None
        finally:
            conn.close()
        if response.status >= 400:
            raise PermanentError(f"Caddy admin API {method} {path}: HTTP {response.status}: {_error_text(data)}")
        return data

    def load_caddyfile(self, text: str) -> None:
        self.request("POST", "/load", text.encode(), "text/caddyfile")

    def adapt_caddyfile(self, text: str) -> dict:
        return json.loads(self.request("POST", "/adapt", text.encode(), "text/caddyfile") or b"{}")

    def upstreams(self) -> list[dict]:
        return json.loads(self.request("GET", "/reverse_proxy/upstreams") or b"[]") or []

    def supports_stream_close_delay(self) -> bool:
        try:
            self.adapt_caddyfile(_STREAM_PROBE)
            return True
        except PermanentError:
            return False


def _error_text(data: bytes) -> str:
    try:
        return json.loads(data).get("error", "").strip() or data.decode(errors="replace")[:300]
    except (ValueError, AttributeError):
        return data.decode(errors="replace").strip()[:300]


class CaddyRouter:
    """Implements swap.Router: rewrite the app's snippet, then have Caddy re-read the Caddyfile."""

    def __init__(self, config: Config, admin: CaddyAdmin | None = None):
        self.config = config
        self.admin = admin or CaddyAdmin(config.caddy.admin)
        self._stream_close_delay: bool | None = None

    def _has_stream_close_delay(self) -> bool:
        if self._stream_close_delay is None:
            self._stream_close_delay = self.admin.supports_stream_close_delay()
            log.info("Caddy %s stream_close_delay", "supports" if self._stream_close_delay else "lacks (2.6)")
        return self._stream_close_delay

    def write_snippet(self, app: AppConfig, addresses: Sequence[str], stream_close_delay: bool = False) -> bool:
        """Write the snippet if its content changes; True when it did. Readable by the caddy user."""
        path = self.config.snippet_path(app.name)
        text = render_snippet(app, addresses, stream_close_delay)
        try:
            if path.read_text(encoding="utf-8") == text:
                return False
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, text.encode(), mode=0o644)
        return True

    def ensure_snippets(self, routes: dict[str, Sequence[str]]) -> None:
        """Before Caddy may read the Caddyfile: every app's snippet exists (a missing import fails it)."""
        for name, app in self.config.apps.items():
            if not self.config.snippet_path(name).exists():
                self.write_snippet(app, routes.get(name, ()))

    def _write_route(self, app: AppConfig, addresses: Sequence[str]) -> bool:
        return self.write_snippet(app, addresses, bool(addresses) and self._has_stream_close_delay())

    def route(self, app: AppConfig, addresses: Sequence[str]) -> None:
        self._write_route(app, addresses)
        self.reload()

    def ensure_route(self, app: AppConfig, addresses: Sequence[str], routed: set[str]) -> None:
        """Converge without needless reloads: only when the snippet changed or Caddy lacks an address."""
        if self._write_route(app, addresses) or not set(addresses) <= routed:
            self.reload()

    def reload(self) -> None:
        """Re-read the user's Caddyfile (with zdd's snippets) into Caddy. An unchanged config is a no-op."""
        caddyfile = self.config.caddy.caddyfile
        try:
            text = caddyfile.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"Caddyfile {caddyfile}: {err.strerror}") from None
        self.admin.load_caddyfile(text)

    def in_flight(self, address: str) -> int | None:
        for upstream in self.admin.upstreams():
            if upstream.get("address") == address:
                return int(upstream.get("num_requests", 0))
        return None

    def routed_addresses(self) -> set[str]:
        return {u.get("address", "") for u in self.admin.upstreams()}


def check_caddy(config: Config) -> list[str]:
    """Problems `zdd check` reports about Caddy: admin reachable, Caddyfile imports every snippet."""
    problems = []
    try:
        CaddyAdmin(config.caddy.admin, timeout=3).request("GET", "/config/")
    except (TemporaryError, PermanentError) as err:
        problems.append(f"caddy.admin: {err}")
    try:
        text = config.caddy.caddyfile.read_text(encoding="utf-8")
    except OSError as err:
        problems.append(f"caddy.caddyfile: {config.caddy.caddyfile}: {err.strerror}")
        return problems
    for name in config.apps:
        snippet = config.snippet_path(name)
        if not caddyfile_imports(text, snippet):
            problems.append(
                f"caddy.caddyfile: {config.caddy.caddyfile} does not import app {name}'s upstream; "
                f"add `import {snippet}` inside its site block"
            )
    return problems
