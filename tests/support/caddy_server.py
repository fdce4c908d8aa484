"""A real Caddy process on free loopback ports, running a user-style Caddyfile that imports zdd's snippet."""

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

from zdd import dns
from zdd.caddy import json_objects

from .net import free_port, http_get, wait_for_port

CADDYFILE = """{{
	admin 127.0.0.1:{admin}
	auto_https off
}}

:{port} {{
	header X-Site "user-owned"
	import {snippet}
}}
"""


class CaddyServer:
    def __init__(self, binary: str, workdir: Path, snippet: Path, cwd: Path | None = None):
        self.binary, self.workdir = binary, workdir
        self.cwd = cwd or workdir  # Debian's caddy.service runs in /: relative imports must not depend on it
        self.port, self.admin_port = free_port(), free_port()
        self.caddyfile = workdir / "Caddyfile"
        self.caddyfile.write_text(CADDYFILE.format(admin=self.admin_port, port=self.port, snippet=snippet))
        self.process: subprocess.Popen | None = None
        self.log = workdir / "caddy.log"

    @property
    def admin(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        # Caddy's autosave and data go to the test's directory, not root's home.
        env = {**os.environ, "XDG_CONFIG_HOME": str(self.workdir / "xdg"), "XDG_DATA_HOME": str(self.workdir / "xdg")}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "run", "--config", str(self.caddyfile)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=env,
            )
        wait_for_port(self.admin_port)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        """What `systemctl reload caddy` does on Debian: push the Caddyfile from disk."""
        subprocess.run(
            [self.binary, "reload", "--config", str(self.caddyfile), "--adapter", "caddyfile"],
            check=True,
            capture_output=True,
            cwd=self.workdir,
            timeout=30,
            env={**os.environ, "XDG_CONFIG_HOME": str(self.workdir / "xdg")},
        )

    def get(self, path: str = "/") -> tuple[int, str]:
        return http_get(self.port, path)

    def routed(self) -> set[str]:
        """The addresses Caddy's running config proxies to: static upstreams as they are, and dynamic
        `a` upstreams as the resolver named in that config answers them now (what Caddy will dial)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{self.admin}/config/", timeout=5) as response:
            config = json.loads(response.read())
        addresses = set()
        for handler in json_objects(config):
            if handler.get("handler") != "reverse_proxy":
                continue
            addresses |= {upstream["dial"] for upstream in handler.get("upstreams", [])}
            source = handler.get("dynamic_upstreams")
            if source and source.get("source") == "a":
                resolver = source["resolver"]["addresses"][0].removeprefix("udp/")
                for ip in dns.resolve(resolver, source["name"]) or []:
                    addresses.add(f"{ip}:{source['port']}")
        return addresses

    def version(self) -> str:
        out = subprocess.run([self.binary, "version"], capture_output=True, text=True, check=True).stdout
        return out.split()[0]

    def version_tuple(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.version().lstrip("v").split(".")[:2])

    def reload_times(self) -> list[float]:
        """Epoch seconds of every config load Caddy completed, from its JSON log."""
        times = []
        for line in self.log.read_text(errors="replace").splitlines():
            if '"load complete"' in line:
                times.append(json.loads(line)["ts"])
        return times

    def wait_serving(self, body: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.get()
            if last == (200, body):
                return
            time.sleep(0.1)
        raise AssertionError(f"Caddy does not serve {body!r} after {timeout}s; last answer {last}")
