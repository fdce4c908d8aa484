"""Blocking calls that keep the agent alive: each runs in a worker thread while the caller ticks.

systemd restarts the agent when WATCHDOG=1 stops (WatchdogSec=30s), and the pings come from the main
loop only. A Docker call against a hung dockerd blocks for docker-py's 60 s timeout; a pull from a
registry that stalls mid-layer blocks with no end; a health probe blocks for health_timeout. Through
these wrappers the caller keeps ticking while the call runs, and gives up on a call that takes longer
than it may (TemporaryError: the agent converges and retries later instead of being killed). The worker
thread is abandoned then; docker-py's own timeout ends it.
"""

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .config import HealthCheck
from .errors import TemporaryError

T = TypeVar("T")

CALL_LIMIT = 90.0  # seconds a Docker call may take beyond its own expected duration (docker-py's is 60)
TICK = 0.2  # seconds between ticks while a call runs


class Ticking:
    def __init__(
        self,
        tick: Callable[[], None],
        monotonic: Callable[[], float] = time.monotonic,
        stopping: Callable[[], bool] = lambda: False,
    ):
        self.tick, self.monotonic, self.stopping = tick, monotonic, stopping

    def call(
        self,
        what: str,
        fn: Callable[[], T],
        expected: float = 0.0,
        progress: list[float] | None = None,
        stall: float = 0.0,
        abandon_on_stop: bool = False,
        on_tick: Callable[[], None] = lambda: None,
    ) -> T:
        """Run `fn` and tick until it returns. `expected`: how long it may legitimately take, plus
        CALL_LIMIT. With `progress` (a list whose first item the call updates with monotonic times), the
        limit is instead `stall` seconds without progress. `on_tick` runs on this thread at each tick."""
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["value"] = fn()
            except BaseException as err:  # handed to the caller below
                outcome["error"] = err

        worker = threading.Thread(target=run, name=f"zdd-{what}", daemon=True)
        started = self.monotonic()
        worker.start()
        while worker.is_alive():
            self.tick()
            on_tick()
            now = self.monotonic()
            if progress is not None:
                if now - max(progress[0], started) > stall:
                    raise TemporaryError(f"{what}: no progress for {stall:g}s (pull_stall_timeout); given up")
            elif now - started > expected + CALL_LIMIT:
                raise TemporaryError(f"{what}: Docker did not answer within {expected + CALL_LIMIT:.0f}s; given up")
            if abandon_on_stop and self.stopping():
                raise TemporaryError(f"{what}: zdd is stopping; it is tried again after the restart")
            worker.join(TICK)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]


class TickingRuntime:
    """swap.Runtime (and the converger's calls) over a real runtime, each call through Ticking."""

    def __init__(self, runtime: Any, ticking: Ticking, start_waits: bool = False):
        self.runtime, self.ticking = runtime, ticking
        # SwarmRuntime's start of the first replica waits for the idle colour's last tasks to stop, then
        # for Swarm to run every new task; the local engine's start is one Docker call.
        self.start_waits = start_waits

    def pull(self, ref: Any, progress: Callable[[int, int], None], stall_timeout: float) -> None:
        last: list[float] = [self.ticking.monotonic(), 0, 0]  # when progress last came, bytes done, bytes to do

        def on_progress(done: int, total: int) -> None:
            # From the worker thread: plain stores only. The watchdog is pinged, and `progress` (the deploy's
            # status) is told, from the waiting main thread alone, so a pull abandoned in the background
            # can neither hide a hung loop nor write a status after its deploy moved on.
            last[:] = [self.ticking.monotonic(), done, total]

        shown = [0, 0]

        def report() -> None:
            if [last[1], last[2]] != shown:
                shown[:] = [int(last[1]), int(last[2])]
                progress(*shown)

        self.ticking.call(
            f"pull {ref}",
            lambda: self.runtime.pull(ref, on_progress, stall_timeout),
            progress=last,
            stall=stall_timeout,
            abandon_on_stop=True,
            on_tick=report,
        )
        report()  # the last figures, also of a pull that ended before the first tick

    def start(self, app: Any, image_id: str, ref: Any, deploy_id: str, replica: int = 1) -> Any:
        expected = app.stop_timeout + app.start_timeout if self.start_waits else 0.0
        return self.ticking.call(
            f"start {app.name}", lambda: self.runtime.start(app, image_id, ref, deploy_id, replica), expected
        )

    def stop(self, container_id: str, timeout: float) -> None:
        self.ticking.call(f"stop {container_id[:12]}", lambda: self.runtime.stop(container_id, timeout), timeout)

    def stop_all(self, container_ids: Sequence[str], timeout: float) -> None:
        what = f"stop {len(container_ids)} containers"
        self.ticking.call(what, lambda: self.runtime.stop_all(container_ids, timeout), timeout)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.runtime, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.ticking.call(name, lambda: method(*args, **kwargs))

        return call


class TickingProber:
    """swap.Prober: a probe blocks for up to health_timeout, which may be longer than the watchdog."""

    def __init__(self, prober: Any, ticking: Ticking):
        self.prober, self.ticking = prober, ticking

    def check(self, address: str, health: HealthCheck) -> str | None:
        return self.ticking.call("health probe", lambda: self.prober.check(address, health), health.timeout)
