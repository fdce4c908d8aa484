"""A webhook receiver on loopback: answers the statuses queued in `answers` (then 204), optionally after
`delay` seconds, and keeps each JSON body it got."""

import http.server
import json
import threading
import time
from dataclasses import dataclass, field


@dataclass
class WebhookReceiver:
    answers: list[int] = field(default_factory=list)
    bodies: list[dict] = field(default_factory=list)
    delay: float = 0.0

    def __enter__(self) -> "WebhookReceiver":
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(receiver.delay)
                receiver.bodies.append(body)
                self.send_response(receiver.answers.pop(0) if receiver.answers else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/secret-token"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
