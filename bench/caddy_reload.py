"""Caddy alone, no zdd: how many requests do config loads break under load?

    .venv/bin/python -m bench.caddy_reload [--caddy BINARY] [--reloads 40] [--mode fresh|keepalive]

Four clients send requests to a Caddy that proxies to a local HTTP server while the script POSTs /load
`--reloads` times. Prints the errors by kind. This is where README's figures about Caddy versions and
net.ipv4.tcp_migrate_req come from.
"""

import argparse
import collections
import http.client
import http.server
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from tests.support.net import free_port, wait_for_port


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--caddy", default="/usr/bin/caddy")
    parser.add_argument("--reloads", type=int, default=40)
    parser.add_argument("--mode", choices=("fresh", "keepalive"), default="fresh")
    args = parser.parse_args()
    backends = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok) for _ in range(2)]
    for b in backends:
        threading.Thread(target=b.serve_forever, daemon=True).start()
    addresses = [f"127.0.0.1:{b.server_address[1]}" for b in backends]
    port, admin = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        snippet = Path(tmp) / "snippet"
        caddyfile = Path(tmp) / "Caddyfile"
        caddyfile.write_text(
            f"{{\n\tadmin 127.0.0.1:{admin}\n\tauto_https off\n}}\n:{port} {{\n\timport {snippet}\n}}\n"
        )
        snippet.write_text(f"reverse_proxy {addresses[0]}\n")
        caddy = subprocess.Popen(
            [args.caddy, "run", "--config", str(caddyfile)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={"XDG_CONFIG_HOME": tmp, "XDG_DATA_HOME": tmp},
        )
        wait_for_port(port)
        stop = threading.Event()
        errors: collections.Counter = collections.Counter()
        sent = [0]

        def client() -> None:
            conn = None
            while not stop.is_set():
                try:
                    if args.mode == "fresh" or conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    conn.request("GET", "/")
                    response = conn.getresponse()
                    response.read()
                    sent[0] += 1
                    if response.status != 200:
                        errors[f"HTTP {response.status}"] += 1
                    if args.mode == "fresh":
                        conn.close()
                except Exception as err:
                    errors[type(err).__name__] += 1
                    conn = None

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for i in range(args.reloads):
            first, second = addresses[i % 2], addresses[(i + 1) % 2]
            snippet.write_text(f"reverse_proxy {first} {second} {{\n\tlb_policy first\n}}\n")
            conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
            conn.request(
                "POST",
                "/load",
                body=caddyfile.read_bytes(),
                headers={"Content-Type": "text/caddyfile", "Connection": "close"},
            )
            conn.getresponse().read()
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join()
        caddy.terminate()
        caddy.wait()
    migrate = Path("/proc/sys/net/ipv4/tcp_migrate_req").read_text().strip()
    print(
        f"{args.caddy} ({args.mode} connections, tcp_migrate_req={migrate}): {sent[0]} requests, "
        f"{args.reloads} reloads, errors: {dict(errors) or 'none'}"
    )


if __name__ == "__main__":
    main()
