"""An app that, like many servers, finishes its SIGTERM only once its idle keep-alive connections close:
Python's ThreadingHTTPServer speaking HTTP/1.1, whose server_close() waits for every connection's thread.
A proxy that keeps idle connections to it open keeps it from exiting until the stop timeout kills it.
Built FROM postgres.BASE (python3); `/` answers the tag, `/up` ok, POST /cgi-bin/post the tag."""

import docker

from tests.support import postgres

REPOSITORY = "zdd-it/lingering"
SERVER = """
import http.server, signal, threading

VERSION = open("/www/index.html").read().strip()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def answer(self):
        body = b"ok\\n" if self.path == "/up" else VERSION.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.answer()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.answer()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler)
server.daemon_threads = False  # server_close() joins each connection's thread: it waits for idle ones
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
server.serve_forever()
server.server_close()
print("stopped: every connection closed", flush=True)
"""


def build(client: docker.DockerClient, tags: tuple[str, ...] = ("l1", "l2")) -> dict[str, str]:
    postgres.build_base(client)
    built = {}
    for tag in tags:
        files = {"/www/index.html": (tag, 0o644), "/app/server.py": (SERVER, 0o644)}
        built[tag] = postgres.build_from_base(client, f"{REPOSITORY}:{tag}", files, "exec python3 /app/server.py")
    return built
