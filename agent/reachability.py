"""Which of a Swarm app's routed tasks still accept connections, for zdd dns's SRV answers.

A node can fail with no word to anyone (power, kernel, network): its tasks' connections then never
open, and Swarm sees the node gone only after its heartbeat timeout, 10 to 20 s later. Until a route
change, Caddy would keep sending part of the requests there: a GET it may try on another task, but
Caddy before 2.11 cannot send a request with a body twice, so each POST that picked the dead node fails.
zdd dns therefore tries a TCP connection to every task it names, PROBE_INTERVAL apart, and leaves out
of its SRV answer a task that refused one or did not accept it within CONNECT_TIMEOUT, until it accepts
again. It
never leaves out all of them: an answer with no task would fail every request instead of some.
zdd-dns.service lets it connect to the private networks only (10/8, 172.16/12, 192.168/16), as zdd.service.
"""

import errno
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Sequence

from .routes import address_host, address_port

log = logging.getLogger("zdd.dns")

PROBE_INTERVAL = 0.5
# A node on the same network accepts in well under a millisecond, or refuses at once when nothing listens.
# A busy app may drop a SYN when its accept queue is full, and the kernel sends the next one 1 s later: a
# connection that has not opened in 1.5 s is not coming (the node is gone, or drops everything).
CONNECT_TIMEOUT = 1.5
# An address no answer named for this long is no longer probed (a site with no traffic: Caddy asks only
# when it proxies); probed again from the next answer that names it.
FORGET_AFTER = 10.0


class Reachability:
    """The routed task addresses that accept a TCP connection, probed in the background by `run()`.
    Called with the addresses an answer would name, it returns those to name."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, timeout: float = CONNECT_TIMEOUT):
        self.clock, self.timeout = clock, timeout
        self._lock = threading.Lock()
        self._named: dict[str, float] = {}  # address -> when an answer last named it
        self._down: dict[str, str] = {}  # address -> why its last probe failed
        self._app: dict[str, str] = {}  # address -> the app whose answer named it, for the log

    def __call__(self, app: str, addresses: Sequence[str]) -> list[str]:
        now = self.clock()
        with self._lock:
            # The app's previous answer's tasks that this one does not name (a switch, a retired version)
            # are no longer zdd dns's concern.
            for address in [a for a, named_for in self._app.items() if named_for == app and a not in addresses]:
                self._forget(address)
            for address in addresses:
                self._named[address] = now
                self._app[address] = app
            up = [address for address in addresses if address not in self._down]
        return up or list(addresses)

    def probe(self) -> None:
        """Try every named address once, side by side, and remember which did not accept."""
        with self._lock:
            horizon = self.clock() - FORGET_AFTER
            for address in [a for a, named in self._named.items() if named < horizon]:
                self._forget(address)
            addresses = list(self._named)
        failed = unreachable(addresses, self.timeout)
        with self._lock:
            for address in addresses:
                app = self._app.get(address, "?")
                if address in failed and address not in self._down:
                    log.warning(
                        "dns: %s: the task at %s did not accept a connection (%s); named only if no task of %s does",
                        app,
                        address,
                        failed[address],
                        app,
                    )
                elif address not in failed and address in self._down:
                    log.info("dns: %s: the task at %s accepts connections again; back in the answer", app, address)
            self._down = {a: why for a, why in failed.items() if a in self._named}

    def _forget(self, address: str) -> None:
        del self._named[address], self._app[address]
        self._down.pop(address, None)

    def run(self, interval: float = PROBE_INTERVAL) -> None:
        while True:
            started = self.clock()
            try:
                self.probe()
            except Exception:  # the answers go on with what was last known
                log.exception("dns: cannot probe the routed tasks")
            time.sleep(max(0.0, started + interval - self.clock()))

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="zdd-dns-probe", daemon=True)
        thread.start()
        return thread


def unreachable(addresses: Sequence[str], timeout: float) -> dict[str, str]:
    """The addresses (ip:port) where a TCP connection did not open within `timeout`, with why; all tried
    at once, so a dead node costs one timeout, not one per task."""
    failed: dict[str, str] = {}
    selector = selectors.DefaultSelector()
    try:
        for address in addresses:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex((address_host(address), address_port(address)))
            if code in (0, errno.EINPROGRESS):
                selector.register(sock, selectors.EVENT_WRITE, address)
            else:
                failed[address] = os.strerror(code)
                sock.close()
        deadline = time.monotonic() + timeout
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in selector.select(left):
                code = key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    failed[key.data] = os.strerror(code)
                selector.unregister(key.fileobj)
                key.fileobj.close()
        for key in list(selector.get_map().values()):
            failed[key.data] = f"no answer within {timeout * 1000:.0f}ms"
            key.fileobj.close()
    finally:
        selector.close()
    return failed
