"""A load client that records the outcome of every request, for asserting "zero failed".

Three kinds of workers run at once against Caddy:
- keep-alive: one persistent HTTP/1.1 connection, reused for every request;
- fresh: a new TCP connection for every request;
- slow: requests that take SLOW_SECONDS, so some are in flight at the moment of the switch.

A failure is any error or any status other than 200. One HTTP rule is applied, as browsers, curl and
Go's client do (RFC 9112 section 9.3.1): when the server closed an idle keep-alive connection just as
a request was sent on it (no byte of a response came back), the request is retried once on a new
connection. Such retries are counted and reported separately; nothing else is retried.
"""

import http.client
import threading
import time
from dataclasses import dataclass, field

_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


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
    fresh_workers: int = 2
    slow_workers: int = 3
    slow_path: str = "/cgi-bin/slow"
    pause: float = 0.005  # between requests of one worker: steady load without starving the agent of CPU
    stagger: float = 0.5  # slow worker i starts i*stagger later, so slow requests overlap at every moment
    results: list[Result] = field(default_factory=list)
    stale_retries: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, result: Result) -> None:
        with self._lock:
            self.results.append(result)

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def _once(self, conn: http.client.HTTPConnection, path: str, close: bool) -> tuple[int, str, bool]:
        headers = {"Connection": "close"} if close else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read().decode(errors="replace").strip()
        return response.status, body, response.will_close

    def _worker(self, kind: str, delay: float = 0.0) -> None:
        if self._stop.wait(delay):
            return
        path = self.slow_path if kind == "slow" else "/"
        fresh = kind != "keepalive"
        conn = self._connection()
        reused = False
        while not self._stop.is_set():
            if fresh:
                conn = self._connection()
            started = time.monotonic()
            try:
                try:
                    status, body, will_close = self._once(conn, path, close=fresh)
                except _STALE:
                    if not reused:
                        raise
                    with self._lock:
                        self.stale_retries += 1
                    conn.close()
                    conn = self._connection()
                    status, body, will_close = self._once(conn, path, close=fresh)
                self._record(Result(kind, started, time.monotonic(), status, body))
                reused = not will_close and not fresh
                if will_close:
                    conn.close()
                    conn = self._connection()
            except Exception as err:  # every other error is a failed request
                self._record(Result(kind, started, time.monotonic(), None, "", f"{type(err).__name__}: {err}"))
                conn.close()
                conn = self._connection()
                reused = False
            if fresh:
                conn.close()
            time.sleep(self.pause)
        conn.close()

    def start(self) -> "LoadClient":
        for kind, count in (
            ("keepalive", self.keepalive_workers),
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
        text = (
            f"{len(self.results)} requests, {len(failed)} failed, {self.stale_retries} keep-alive retries "
            f"(idle connection closed by Caddy's reload)"
        )
        if failed:
            text += "; first failures: " + "; ".join(f"{r.kind}: {r.error or r.status}" for r in failed[:5])
        return text
