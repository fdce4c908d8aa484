"""What zdd tells systemd while it runs: WATCHDOG=1 at half the timeout, STATUS, and STOPPING.

tick() is called from the main loop and from a deploy's own polls only, never from a free-running
thread: if the agent is stuck, the pings stop and systemd restarts it.
"""

import logging
import time
from collections.abc import Callable, Mapping

from .config import AppConfig
from .state import State
from .systemd import NOTICE, Notifier

log = logging.getLogger("zdd.agent")


def idle_status(
    apps: Mapping[str, AppConfig],
    state: State,
    last_failure: str,
    probations: Mapping[str, str] | None = None,
    waiting: Mapping[str, str] | None = None,
) -> str:
    """`idle; web v42 since 10:02` (+ the last failure): what `systemctl status zdd` shows between deploys.
    An app in probation shows that instead: `web v43 in probation, 12s left (v42 kept ready)`; an app whose
    Swarm cannot be brought to agree, why its deploys wait: `api waiting: ...`."""
    parts = []
    for name in apps:
        current = state.app(name).current
        if waiting and name in waiting:
            parts.append(f"{name} waiting: {waiting[name]}")
        elif probations and name in probations:
            parts.append(f"{name} {probations[name]}")
        elif current:
            parts.append(f"{name} {current.tag} since {time.strftime('%H:%M', time.localtime(current.since))}")
        else:
            parts.append(f"{name} not deployed")
    text = "idle; " + (", ".join(parts) or "no app configured")
    return f"{text}; last deploy failed: {last_failure}" if last_failure else text


def stop_bound(app: AppConfig) -> float:
    """Seconds a deploy in progress may still need once a stop is asked (a probation ends at once; a
    pull in progress is bounded by the pull's own stall limit)."""
    return app.start_timeout + app.drain_timeout + app.stop_timeout + 120


class Heartbeat:
    def __init__(self, notifier: Notifier, monotonic: Callable[[], float] = time.monotonic):
        self.notifier, self.monotonic = notifier, monotonic
        self._last_ping = float("-inf")
        self._stop_announced = False

    def tick(self, stopping: bool, deploying: AppConfig | None, idle: Callable[[], str]) -> None:
        interval = self.notifier.watchdog_interval
        now = self.monotonic()
        if interval and now - self._last_ping >= interval / 2:
            self.notifier.watchdog()
            self._last_ping = now
        if stopping and not self._stop_announced:
            self._stop_announced = True
            self._announce_stop(deploying, idle)

    def _announce_stop(self, app: AppConfig | None, idle: Callable[[], str]) -> None:
        """STOPPING=1 at once; mid-deploy, also how much longer systemd must wait for the deploy to end."""
        if app is None:
            self.notifier.stopping(f"stopping; {idle()}")
            return
        bound = stop_bound(app)
        self.notifier.stopping(f"stopping after the deploy of {app.name} in progress", extend_usec=int(bound * 1e6))
        log.log(NOTICE, "%s: stop requested; finishing the deploy in progress first (at most %.0fs)", app.name, bound)
