"""Telling people how each deploy ended: a hook command and/or a webhook, from a worker thread of their
own, so that a slow or dead receiver never holds up the queue. A failure is logged, never the deploy's.
"""

import http.client
import json
import logging
import os
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from . import __version__
from .config import NotifyConfig

log = logging.getLogger("zdd.notify")

BACKOFF = 1.0  # seconds before the second webhook attempt; doubled for each one after
FLUSH_TIMEOUT = 10.0  # what a stopping agent gives notifications still queued


@dataclass(frozen=True)
class Event:
    app: str
    result: str  # succeeded | failed | unchanged | superseded | agent-failed
    to: str  # the version asked for
    deploy_id: str = ""
    previous: str = ""  # the version live before it
    reason: str = ""
    host: str = ""

    def environment(self) -> dict[str, str]:
        """The hook command's variables (besides zdd's own environment)."""
        return {
            "ZDD_APP": self.app,
            "ZDD_FROM": self.previous,
            "ZDD_TO": self.to,
            "ZDD_RESULT": self.result,
            "ZDD_REASON": self.reason,
            "ZDD_DEPLOY_ID": self.deploy_id,
            "ZDD_HOST": self.host,
        }

    def body(self) -> bytes:
        """The webhook's JSON, with a one-line `text` chat receivers show as it is."""
        change = f"{self.previous} -> {self.to}" if self.previous else self.to
        if self.app:
            text = f"{self.host}: {self.app}: {change}: {self.result}" + (f" ({self.reason})" if self.reason else "")
        else:  # about zdd itself (agent-failed)
            text = f"{self.host}: zdd: {self.result}: {self.reason}"
        fields = {
            "app": self.app,
            "from": self.previous,
            "to": self.to,
            "result": self.result,
            "reason": self.reason,
            "deploy_id": self.deploy_id,
            "host": self.host,
            "text": text,
        }
        return json.dumps(fields).encode()


def run_hook(command: tuple[str, ...], event: Event, timeout: float) -> str | None:
    """Run the hook; None if it exited 0, else why not (for the log)."""
    try:
        done = subprocess.run(
            command,
            env={**os.environ, **event.environment()},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return f"did not finish within {timeout:g}s (notify.command_timeout); killed"
    except OSError as err:
        return f"cannot run it: {err.strerror or err}"
    if done.returncode != 0:
        output = done.stderr.decode(errors="replace").strip().splitlines()
        return f"exited with code {done.returncode}" + (f": {output[-1]}" if output else "")
    return None


def post_webhook(
    url: str, body: bytes, timeout: float, attempts: int, sleep: Callable[[float], None] = time.sleep
) -> str | None:
    """POST with backoff (1 s, 2 s, 4 s ...) until a 2xx; None on success, else the last failure."""
    failure = ""
    for attempt in range(attempts):
        if attempt:
            sleep(BACKOFF * 2 ** (attempt - 1))
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": f"zdd/{__version__}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read(65536)
                return None
        except urllib.error.HTTPError as err:
            failure = f"HTTP {err.code}"
            if 400 <= err.code < 500 and err.code not in (408, 429):
                break  # the receiver refuses this request: asking again would not change its answer
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as err:
            failure = str(getattr(err, "reason", err)) or type(err).__name__
    return f"{failure} after {attempt + 1} attempt(s)"


class Notifications:
    """Deliver events in order from a worker thread; `flush` waits a bounded time for the rest."""

    def __init__(self, config: NotifyConfig, host: str):
        self.config, self.host = config, host
        self._queue: queue.Queue[Event | None] = queue.Queue()
        self._worker: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.config.command or self.config.webhook)

    def send(self, event: Event) -> None:
        if not self.enabled:
            return
        if self._worker is None:
            self._worker = threading.Thread(target=self._deliver_all, name="zdd-notify", daemon=True)
            self._worker.start()
        self._queue.put(event)

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Let the worker end after what is queued; wait for it up to `timeout` (0: do not wait)."""
        if self._worker is None:
            return
        self._queue.put(None)
        if not timeout:
            self._worker = None
            return
        self._worker.join(timeout)
        if self._worker.is_alive():
            log.warning("notify: %d notification(s) not delivered before zdd stopped", self._queue.qsize())
        self._worker = None

    def deliver(self, event: Event) -> bool:
        """Both receivers, one after the other; each failure logged with the app, versions and result.
        True if every configured receiver took it."""
        what = f"notify: {event.app}: {event.previous or '(none)'} -> {event.to} {event.result}"
        if not event.app:
            what = f"notify: zdd {event.result}"
        delivered = True
        if self.config.command:
            failure = run_hook(self.config.command, event, self.config.command_timeout)
            if failure:
                log.warning("%s: hook %s %s", what, self.config.command[0], failure)
                delivered = False
        if self.config.webhook:
            failure = post_webhook(
                self.config.webhook, event.body(), self.config.webhook_timeout, self.config.webhook_attempts
            )
            if failure:
                log.warning("%s: webhook %s failed: %s", what, _without_secret(self.config.webhook), failure)
                delivered = False
        return delivered

    def _deliver_all(self) -> None:
        while (event := self._queue.get()) is not None:
            try:
                self.deliver(event)
            except Exception:  # a receiver's bug must not end the deliveries after it
                log.exception("notify: %s: internal error", event.app)


def _without_secret(url: str) -> str:
    """Webhooks carry their secret in the path, the query or a user:password@: the log names the host."""
    parts = urllib.parse.urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}/..."
