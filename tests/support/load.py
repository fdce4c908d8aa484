"""A load client that records the outcome of every request, for asserting "zero failed".

Four kinds of workers run at once against Caddy:
- keepalive: GETs on one persistent HTTP/1.1 connection;
- post: POSTs with a body on one persistent connection, as API clients and webhooks send them;
- fresh: a GET on a new TCP connection each time;
- slow: GETs that take SLOW_SECONDS on new connections, so some are in flight at the moment of the switch.

A failure is any error or any status other than 200, and nothing is ever retried or replayed: a client
may not replay a POST (RFC 9110 section 9.2.2), and zdd must not need a client to replay a GET either.
"""

import http.client
import threading
import time
from dataclasses import dataclass, field

KINDS = ("keepalive", "post", "fresh", "slow")


@dataclass
class Result:
    kind: str
    started: float  # monotonic
    ended: float
    status: int | None
    body: str
    error: str = ""
    wall: float = field(default_factory=time.time)  # epoch seconds at the end, to compare with Caddy's log

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error


@dataclass
class LoadClient:
    port: int
    keepalive_workers: int = 2
    post_workers: int = 2
    fresh_workers: int = 2
    slow_workers: int = 3
    slow_path: str = "/cgi-bin/slow"
    post_path: str = "/cgi-bin/post"
    pause: float = 0.005  # between requests of one worker: steady load without starving the agent of CPU
    stagger: float = 0.5  # slow worker i starts i*stagger later, so slow requests overlap at every moment
    results: list[Result] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, result: Result) -> None:
        with self._lock:
            self.results.append(result)

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def _once(self, conn: http.client.HTTPConnection, kind: str, number: int) -> tuple[int, str, bool]:
        if kind == "post":
            body = f"order={number}&note=zero-downtime".encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            conn.request("POST", self.post_path, body=body, headers=headers)
        else:
            headers = {"Connection": "close"} if kind in ("fresh", "slow") else {}
            conn.request("GET", self.slow_path if kind == "slow" else "/", headers=headers)
        response = conn.getresponse()
        body_text = response.read().decode(errors="replace").strip()
        return response.status, body_text, response.will_close

    def _worker(self, kind: str, delay: float = 0.0) -> None:
        if self._stop.wait(delay):
            return
        persistent = kind in ("keepalive", "post")
        conn = self._connection()
        number = 0
        while not self._stop.is_set():
            number += 1
            if not persistent:
                conn = self._connection()
            started = time.monotonic()
            try:
                status, body, will_close = self._once(conn, kind, number)
                self._record(Result(kind, started, time.monotonic(), status, body))
                if will_close and persistent:  # the server said so in its response: not a failure
                    conn.close()
                    conn = self._connection()
            except Exception as err:  # a failed request, whatever the cause; never sent again
                self._record(Result(kind, started, time.monotonic(), None, "", f"{type(err).__name__}: {err}"))
                conn.close()
                conn = self._connection()
            if not persistent:
                conn.close()
            time.sleep(self.pause)
        conn.close()

    def start(self) -> "LoadClient":
        for kind, count in (
            ("keepalive", self.keepalive_workers),
            ("post", self.post_workers),
            ("fresh", self.fresh_workers),
            ("slow", self.slow_workers),
        ):
            for i in range(count):
                delay = i * self.stagger if kind == "slow" else 0.0
                thread = threading.Thread(target=self._worker, args=(kind, delay), daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def __enter__(self) -> "LoadClient":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what happened ------------------------------------------------------------------------
    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if not r.ok]

    def bodies_after(self, moment: float) -> set[str]:
        return {r.body for r in self.results if r.started > moment and r.ok}

    def in_flight_at(self, moment: float, kind: str = "slow") -> list[Result]:
        return [r for r in self.results if r.kind == kind and r.started < moment < r.ended]

    def summary(self) -> str:
        failed = self.failures
        counts = ", ".join(f"{sum(r.kind == k for r in self.results)} {k}" for k in KINDS)
        text = f"{len(self.results)} requests ({counts}), {len(failed)} failed"
        if failed:
            text += "; first failures: " + "; ".join(f"{r.kind}: {r.error or r.status}" for r in failed[:5])
        return text
