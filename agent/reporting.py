"""What the agent tells the world once a deploy has ended: the notifications (agent/notify.py) and the
metrics textfile (agent/metrics.py). Fed from the ledger after the state is saved, so a hook that runs
`zdd status` sees the result it is told about."""

import logging
import socket
import time
from collections import Counter

from .config import Config
from .metrics import PhaseTimes, render, write_textfile
from .notify import Event, Notifications
from .state import HistoryEntry, State

log = logging.getLogger("zdd.agent")


class Reporting:
    def __init__(self, config: Config, state: State, host: str | None = None):
        self.state, self.host = state, host or socket.gethostname()
        self.deploys: Counter = Counter()
        self.phases = PhaseTimes()
        self._metrics_failure = ""
        self.configure(config)

    def configure(self, config: Config) -> None:
        """A reload may change the receivers; counts and timings carry over."""
        self.config = config
        previous = getattr(self, "notifications", None)
        if previous:
            previous.flush(timeout=0)  # its worker delivers what it has, then ends; a reload never waits
        self.notifications = Notifications(config.notify, self.host)

    def phase(self, app: str, phase: str) -> None:
        self.phases.enter(app, phase, time.time())

    def publish(self, ended: list[HistoryEntry]) -> None:
        for entry in ended:
            self.deploys[(entry.app, entry.result)] += 1
            self.phases.ended(entry.app, entry.ended_at or time.time())
            self.notifications.send(
                Event(
                    app=entry.app,
                    result=entry.result,
                    to=entry.tag,
                    deploy_id=entry.deploy_id,
                    previous=entry.from_tag,
                    reason=entry.reason,
                    host=self.host,
                )
            )
        if ended:
            self.write_metrics(up=True)

    def write_metrics(self, up: bool) -> None:
        path = self.config.metrics_textfile
        if path is None:
            return
        try:
            write_textfile(path, render(self.state, self.config.apps, self.deploys, self.phases, up))
            self._metrics_failure = ""
        except OSError as err:
            failure = f"metrics: cannot write {path}: {err.strerror or err}"
            if failure != self._metrics_failure:  # once per cause, not at every deploy
                log.error("%s (the directory must be writable by zdd's user)", failure)
            self._metrics_failure = failure

    def stop(self) -> None:
        self.write_metrics(up=False)
        self.notifications.flush()
