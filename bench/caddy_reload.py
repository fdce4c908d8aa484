"""Caddy alone, no zdd: which client requests does a config load break, and when?

    .venv/bin/python -m bench.caddy_reload [--caddy BINARY] [--reloads 200] [--no-reload]
        [--global 'grace_period 5s'] [--debug-log FILE] [--failures]

Caddy proxies to one of two local HTTP servers. Four kinds of clients run at once, and nothing is ever retried:
  fresh   a GET on a new connection each time
  ka-get  GETs on one persistent connection (after any error: count it, reconnect)
  ka-post small POSTs on one persistent connection (same)
  slow    a GET the backend answers after ~1 s, on a new connection each time
Meanwhile the script POSTs the Caddyfile to /load `--reloads` times (~100 ms apart), switching the upstream each
time. `--no-reload` is the control: same load and duration, GET /config/ instead of POST /load. Every failure is
classified and timed relative to the nearest /load (send = 0 ms; the load's response came back `took` ms later).
A keep-alive failure is marked "(closed while idle)" when the server's FIN or RST was already waiting before the
request went out: a client that checks a pooled connection before reusing it (urllib3, Go) would have reconnected.
"""

import argparse
import bisect
import collections
import contextlib
import http.client
import http.server
import os
import select
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from tests.support.net import free_port, wait_for_port

CLIENTS = {"fresh": 4, "ka-get": 4, "ka-post": 4, "slow": 8}  # threads per client kind


class _Backend(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive towards Caddy
    wbufsize, disable_nagle_algorithm = -1, True  # one segment per response: no Nagle/delayed-ACK 40 ms stalls

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/slow":
            time.sleep(1)
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    do_GET = do_POST = _answer  # http.server calls do_<METHOD>

    def log_message(self, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 256  # the default 5 would make the backend, not Caddy, drop connections
    daemon_threads = True
    lost = 0  # responses the backend could not write: Caddy gave up the proxied request

    def handle_error(self, request: object, client_address: object) -> None:
        type(self).lost += 1


def classify(err: BaseException, sending: bool) -> str:
    """What happened to a request, from the client's side."""
    if isinstance(err, TimeoutError):  # socket.timeout is TimeoutError
        return "timeout"
    if isinstance(err, ConnectionRefusedError):
        return "refused on connect"
    if sending:
        if isinstance(err, BrokenPipeError):
            return "BrokenPipe while sending"
        if isinstance(err, ConnectionResetError):
            return "reset while sending"
    if isinstance(err, http.client.RemoteDisconnected):  # a subclass of ConnectionResetError: test it first
        return "EOF before any byte"
    if isinstance(err, ConnectionResetError):
        return "reset before any byte"
    if isinstance(err, http.client.IncompleteRead):
        return "cut in the body"
    return type(err).__name__


class Load:
    """The clients, their counts and failures: (kind, class, start, failed at, requests before on the conn, port)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent: collections.Counter = collections.Counter()
        self.failures: list[tuple[str, str, float, float, int, int]] = []

    def run(self, kind: str) -> None:
        method, path = {"ka-post": ("POST", "/"), "slow": ("GET", "/slow")}.get(kind, ("GET", "/"))
        conn, served = None, 0
        while not self.stop.is_set():
            if conn is None or kind in ("fresh", "slow"):
                conn, served = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10), 0
            start, sending, outcome, local, stale = time.monotonic(), True, None, 0, False
            try:
                if conn.sock is None:  # first request, or the server answered "Connection: close"
                    conn.connect()
                    served = 0
                local = conn.sock.getsockname()[1]
                # a FIN (or RST) already waiting: a client that checks before reusing (urllib3, Go) would reconnect
                if served:
                    poll = select.poll()  # not select(): this process can have more than 1024 fds open
                    poll.register(conn.sock, select.POLLIN)
                    stale = bool(poll.poll(0))
                conn.request(method, path, body=b'{"n": 1}' if method == "POST" else None)
                sending = False
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    outcome = f"HTTP {response.status}"
            except (OSError, http.client.HTTPException) as err:
                outcome = classify(err, sending) + (" (closed while idle)" if stale else "")
            with self.lock:
                self.sent[kind] += 1
                if outcome:
                    self.failures.append((kind, outcome, start, time.monotonic(), served, local))
            if outcome or kind in ("fresh", "slow"):
                conn.close()
                conn = None
            else:
                served += 1


def admin_call(admin: int, method: str, path: str, body: bytes | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=30)
    headers = {"Connection": "close"} | ({"Content-Type": "text/caddyfile"} if body else {})
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status


def report(args: argparse.Namespace, load: Load, loads: list[tuple[float, float, int]], seconds: float) -> None:
    migrate = Path("/proc/sys/net/ipv4/tcp_migrate_req").read_text().strip()
    version = subprocess.run([args.caddy, "version"], capture_output=True, text=True).stdout.split()[0]
    bad = sum(1 for _, _, status in loads if status != 200)
    what = f"{len(loads)} {'GET /config/ (no reload)' if args.no_reload else 'reloads'} ({bad} not 200)"
    print(f"caddy {version} ({args.caddy}) on :{load.port}, tcp_migrate_req={migrate}, {what}, {seconds:.1f} s")
    print(f"  extra global options: {args.glob or 'none'}")
    for kind in CLIENTS:
        mine = [f for f in load.failures if f[0] == kind]
        classes = collections.Counter(f[1] for f in mine)
        print(f"  {kind:8} sent {load.sent[kind]:6}  failed {len(mine):4}  {dict(classes) or ''}")
    print(f"  backend: {_Server.lost} responses could not be written (Caddy dropped the upstream connection)")
    sends = [send for send, _, _ in loads]
    lines = collections.Counter()
    wall = time.time() - time.monotonic()  # to match tcpdump's and Caddy's clocks
    for kind, outcome, start, failed, served, local in sorted(load.failures, key=lambda f: f[3]):
        i = max(0, bisect.bisect(sends, failed) - 1)
        if i + 1 < len(sends) and sends[i + 1] - failed < failed - sends[i]:
            i += 1  # the next load is nearer
        send, done, _ = loads[i] if loads else (failed, failed, 0)
        took, at_start, at_fail = ((t - send) * 1000 for t in (done, start, failed))
        phase = "before send" if at_fail < 0 else "during load" if at_fail <= took else "after load"
        lines[(kind, outcome, phase)] += 1
        if args.failures:
            print(
                f"    {kind:8} {outcome:45} started {at_start:+8.1f} ms  failed {at_fail:+8.1f} ms  "
                f"(load took {took:6.1f} ms; {served} requests before on this connection; "
                f"client port {local}, at {wall + failed:.6f})"
            )
    for (kind, outcome, phase), n in sorted(lines.items()):
        print(f"  when: {kind:8} {outcome:45} {phase:12} {n}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--caddy", default="/usr/bin/caddy")
    parser.add_argument("--reloads", type=int, default=40)
    parser.add_argument("--no-reload", action="store_true", help="control: same load and duration, no config change")
    parser.add_argument("--global", dest="glob", action="append", default=[], help="extra global option line")
    parser.add_argument("--debug-log", type=Path, help="add the `debug` option, write Caddy's log to this file")
    parser.add_argument("--failures", action="store_true", help="print every failure with its timing")
    args = parser.parse_args()
    backends = [_Server(("127.0.0.1", 0), _Backend) for _ in range(2)]
    for b in backends:
        threading.Thread(target=b.serve_forever, daemon=True).start()
    port, admin = free_port(), free_port()
    options = [f"admin 127.0.0.1:{admin}", "auto_https off", *args.glob] + (["debug"] if args.debug_log else [])

    def caddyfile(upstream: int) -> bytes:
        site = f"bind 127.0.0.1\n\treverse_proxy 127.0.0.1:{backends[upstream].server_address[1]}"
        return ("{\n\t" + "\n\t".join(options) + f"\n}}\n:{port} {{\n\t{site}\n}}\n").encode()

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        (Path(tmp) / "Caddyfile").write_bytes(caddyfile(0))
        log = stack.enter_context(open(args.debug_log or os.devnull, "w"))
        caddy = subprocess.Popen(
            [args.caddy, "run", "--config", f"{tmp}/Caddyfile", "--adapter", "caddyfile"],
            stdout=log,
            stderr=log,
            env={"HOME": tmp, "XDG_CONFIG_HOME": tmp, "XDG_DATA_HOME": tmp},
        )
        try:
            wait_for_port(port)
            wait_for_port(admin)
            load = Load(port)
            threads = [threading.Thread(target=load.run, args=(k,)) for k, n in CLIENTS.items() for _ in range(n)]
            for t in threads:
                t.start()
            time.sleep(1)  # let every client get going
            loads, began = [], time.monotonic()
            for i in range(args.reloads):
                send = time.monotonic()
                if args.no_reload:
                    status = admin_call(admin, "GET", "/config/")
                    time.sleep(0.01)  # about what a load takes
                else:
                    status = admin_call(admin, "POST", "/load", caddyfile((i + 1) % 2))
                loads.append((send, time.monotonic(), status))
                time.sleep(0.1)
            time.sleep(2)  # slow requests started during the last load finish
            seconds = time.monotonic() - began
            load.stop.set()
            for t in threads:
                t.join()
        finally:
            caddy.terminate()
            caddy.wait()
            for b in backends:
                b.shutdown()
    report(args, load, loads, seconds)


if __name__ == "__main__":
    main()
