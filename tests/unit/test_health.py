"""The health probe against a real HTTP server on loopback: the Host header it sends, the answers it accepts."""

import http.server
import threading

import pytest

from zdd.config import HealthCheck
from zdd.health import HttpProber


class HostCheckingApp(http.server.BaseHTTPRequestHandler):
    """Answers like a Rails or Django app with allowed hosts: 403 for a Host it does not know."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.headers.get("Host") != "app.example.com":
            status = 403
        else:
            status = {"/up": 200, "/moved": 301, "/broken": 500}.get(self.path, 404)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def app_address():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HostCheckingApp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(
    ("health", "result"),
    [
        (HealthCheck("/up", 2.0), "HTTP 403"),  # no health_host: the app refuses the container's address
        (HealthCheck("/up", 2.0, "app.example.com"), None),
        (HealthCheck("/up", 2.0, "other.example.com"), "HTTP 403"),
        (HealthCheck("/moved", 2.0, "app.example.com"), "HTTP 301"),
        (HealthCheck("/moved", 2.0, "app.example.com", (200, 301)), None),
        (HealthCheck("/broken", 2.0, "app.example.com", (200, 301)), "HTTP 500"),
        (HealthCheck("/up", 2.0, "app.example.com", (204,)), "HTTP 200"),
    ],
)
def test_probe_sends_the_host_and_accepts_the_statuses_configured(app_address, health, result):
    assert HttpProber().check(app_address, health) == result


def test_probe_of_a_closed_port_says_refused():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert HttpProber().check(f"127.0.0.1:{port}", HealthCheck("/up", 1.0)) == "connection refused"
