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
# What a task's last probe found is kept this long after: a quiet site's next burst of requests does not
# send a share of them to a node known dead while the first probe runs.
REMEMBER_DOWN = 600.0
# A connection this host's own rules refuse (zdd-dns.service's IPAddressAllow): it says nothing of the task.
_BLOCKED = (errno.EPERM, errno.EACCES)


class Reachability:
    """The routed task addresses that accept a TCP connection, probed in the background by `run()`.
    Called with the addresses an answer would name (app, addresses), it returns those to name."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, timeout: float = CONNECT_TIMEOUT):
        self.clock, self.timeout = clock, timeout
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[float, list[str]]] = {}  # app -> when last asked, its answer's tasks
        self._down: dict[str, tuple[str, float]] = {}  # address -> why its last probe failed, and when
        self._blocked: set[str] = set()  # addresses already told as not probed (this host's rules)

    def __call__(self, app: str, addresses: Sequence[str]) -> list[str]:
        with self._lock:
            self._answers[app] = (self.clock(), list(addresses))
            up = [address for address in addresses if address not in self._down]
        return up or list(addresses)

    def probe(self) -> None:
        """Try each task that an answer asked for lately names, side by side, and remember which did not
        accept a connection."""
        with self._lock:
            now = self.clock()
            targets = {
                address: app
                for app, (asked, addresses) in self._answers.items()
                if asked >= now - FORGET_AFTER
                for address in addresses
            }
            for address in [a for a, (_, since) in self._down.items() if since < now - REMEMBER_DOWN]:
                del self._down[address]
        failed = unreachable(list(targets), self.timeout)
        with self._lock:
            for address, app in targets.items():
                code, why = failed.get(address, (0, ""))
                if code in _BLOCKED:
                    if address not in self._blocked:
                        self._blocked.add(address)
                        log.warning(
                            "dns: %s: cannot probe the task at %s (%s): zdd-dns.service's IPAddressAllow does "
                            "not include it; named as routed",
                            app,
                            address,
                            why,
                        )
                elif why and address not in self._down:
                    log.warning(
                        "dns: %s: the task at %s did not accept a connection (%s); named only if no task of %s does",
                        app,
                        address,
                        why,
                        app,
                    )
                    self._down[address] = (why, self.clock())
                elif why:
                    self._down[address] = (why, self.clock())
                elif address in self._down:
                    del self._down[address]
                    log.info("dns: %s: the task at %s accepts connections again; back in the answer", app, address)

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


def unreachable(addresses: Sequence[str], timeout: float) -> dict[str, tuple[int, str]]:
    """The addresses (ip:port) where a TCP connection did not open within `timeout`, with the error number
    (0 for no answer) and why; all tried at once, so a dead node costs one timeout, not one per task."""
    failed: dict[str, tuple[int, str]] = {}
    selector = selectors.DefaultSelector()
    opened: list[socket.socket] = []
    try:
        for address in addresses:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            opened.append(sock)
            sock.setblocking(False)
            code = sock.connect_ex((address_host(address), address_port(address)))
            if code in (0, errno.EINPROGRESS):
                selector.register(sock, selectors.EVENT_WRITE, address)
            else:
                failed[address] = (code, os.strerror(code))
        deadline = time.monotonic() + timeout
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in selector.select(left):
                code = key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    failed[key.data] = (code, os.strerror(code))
                selector.unregister(key.fileobj)
        for key in selector.get_map().values():
            failed[key.data] = (0, f"no answer within {timeout * 1000:.0f}ms")
    finally:
        selector.close()
        for sock in opened:
            sock.close()
    return failed
