"""Probations, watched while the agent goes on with other apps (docs/ARCHITECTURE.md, section 2).

A deploy that has switched and drained leaves its new version in probation: the old container stays
running, unrouted, ready to take the traffic back. The agent polls each probation here, at the app's
health_interval: from the main loop, and from the ticks of another app's deploy (the ticks that ping
the watchdog while it waits on Docker, a probe or Caddy), so one app's 30 s probation no longer holds
the others' deploys and is still watched while they run. The same app's next deploy waits for it to end
(daemon.run_pending).

Imports no SDK: the checks go through the swap's Protocols, like the swap itself.
"""

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .config import AppConfig
from .errors import PermanentError, TemporaryError, ZddError
from .logcontext import deploy_context
from .state import Replica, Running
from .swap import Swap, probe_url
from .units import human_duration

log = logging.getLogger("zdd.swap")


@dataclass
class Watch:
    app: AppConfig
    deploy_id: str
    new: Running
    old: Running
    deadline: float  # monotonic: the epoch end is in the journal (a restart resumes it); in-process the
    started: float  # monotonic clock decides, so an NTP step neither stretches nor skips a probation
    failed: dict[str, int] = field(default_factory=dict)  # container id -> health checks failed in a row
    due: float = 0.0  # monotonic: the next check
    verdict: str = ""  # "passed", "kept" or "failed", once known; the end follows in the main loop
    failure: tuple[str, str] = ("", "")  # why and when it failed
    sent_back: bool = False  # the route is back on the old version already (swap.send_back)

    @property
    def what(self) -> str:
        return f"{self.app.name}: {self.old.tag} -> {self.new.tag}"


class Probations:
    def __init__(self, swap: Callable[[], Swap], on_end: Callable[[Watch, ZddError | None], None]):
        # A callable: a config reload rebuilds the swap (its adapters); the probations go on.
        self.swap, self.on_end = swap, on_end
        self.watches: dict[str, Watch] = {}
        self._polling = False

    def watch(self, app: AppConfig, deploy_id: str, new: Running, old: Running, until: float) -> None:
        """Start watching (after a deploy, or resumed by the converger after a restart) until `until`."""
        if app.name in self.watches:
            return
        clock = self.swap().clock
        now = clock.monotonic()
        left = max(0.0, until - clock.time())
        self.watches[app.name] = Watch(
            app, deploy_id, new, old, deadline=now + left, started=now - max(0.0, app.probation - left), due=now
        )

    def active(self, app: str) -> bool:
        return app in self.watches

    def due_in(self) -> float | None:
        """Seconds until the next check is due, None when no probation runs."""
        if not self.watches:
            return None
        now = self.swap().clock.monotonic()
        return max(0.0, min(w.due for w in self.watches.values()) - now)

    def status(self) -> dict[str, str]:
        """`v2 in probation, 12s left (v1 kept ready)` per app, for STATUS between deploys."""
        now = self.swap().clock.monotonic()
        return {
            name: f"{w.new.tag} in probation, {math.ceil(max(0.0, w.deadline - now))}s left ({w.old.tag} kept ready)"
            for name, w in self.watches.items()
        }

    def poll(self, nested: bool = False) -> None:
        """Check every probation that is due; end those that passed or failed. `nested`: called from the
        ticks of another app's deploy, which must not wait for a stop here (its own deadlines run):
        then only the checks, and a failed one's route back, run; the ends wait for the main loop."""
        if self._polling:  # a check's own Docker calls tick too
            return
        self._polling = True
        try:
            for watch in list(self.watches.values()):
                if self.swap().clock.monotonic() >= watch.due:
                    with deploy_context(watch.app.name, watch.new.tag, watch.deploy_id):
                        self._check(watch, nested)
        finally:
            self._polling = False

    def reconfigure(self, apps: Mapping[str, AppConfig]) -> None:
        """A reloaded config: its health settings apply to the rest of each probation (its end stays)."""
        for name, watch in self.watches.items():
            if name in apps:
                watch.app = apps[name]

    def stop_bound(self) -> float:
        """Seconds cut_short may take: each old container's stop."""
        return sum(w.app.stop_timeout + 10 for w in self.watches.values())

    def cut_short(self) -> None:
        """zdd is stopping: the new versions have served without fault so far; their old ones go now,
        rather than run on unwatched (an `apt remove` would leave them behind)."""
        for watch in list(self.watches.values()):
            with deploy_context(watch.app.name, watch.new.tag, watch.deploy_id):
                log.info(
                    "%s: probation cut short: zdd is stopping; %s has served without fault", watch.what, watch.new.tag
                )
                self._end(watch, self._retire)

    def _check(self, watch: Watch, nested: bool) -> None:
        swap, app = self.swap(), watch.app
        now = swap.clock.monotonic()
        watch.due = now + app.health_interval  # first: a check that raises is not retried at every tick
        if not watch.verdict:
            watch.verdict = self._watch(watch, now, nested)
            if not watch.verdict:
                return
            if nested:  # the end runs in the main loop, right after the deploy that ticked
                watch.due = now
                if watch.verdict == "failed":
                    # The traffic goes back now; the rest of the roll-back (stop, output, remove) waits.
                    swap.send_back(app, watch.new, watch.old, watch.deploy_id, *watch.failure)
                    watch.sent_back = True
                return
        if nested:
            return
        if watch.verdict == "passed":
            served = human_duration(app.probation)
            log.info("%s: probation passed; %s has served for %s", watch.what, watch.new.tag, served)
        if watch.verdict in ("passed", "kept"):
            self._end(watch, self._retire)
            return
        reason, after = watch.failure
        self._end(watch, lambda w: self.swap().roll_back(w.app, w.new, w.old, w.deploy_id, reason, after, w.sent_back))

    def _watch(self, watch: Watch, now: float, nested: bool = False) -> str:
        """One look at the new version: "" (it serves on), "passed" (the probation is over), "kept" (it
        failed, but the old one is gone too: it stays) or "failed" (watch.failure says why)."""
        swap, app = self.swap(), watch.app
        if now >= watch.deadline:
            return "passed"
        swap.status(f"{watch.what}: probation, {math.ceil(watch.deadline - now)}s left ({watch.old.tag} kept ready)")
        # Any container of the new version failing fails the version: the old ones take the traffic back.
        moved: set[str] = set()
        reason = next(filter(None, (self._look(watch, replica, moved) for replica in watch.new.replicas)), "")
        if not reason and moved and not nested:
            # Swarm runs a moved one again elsewhere: gated and routed there once it runs (in the main loop
            # only: a gate must not hold up another app's deploy that ticks).
            try:
                watch.new = swap.follow(app, watch.new)
            except PermanentError as err:
                reason = str(err)
            except TemporaryError as err:  # the engine cannot say where it runs: the next look asks again
                log.warning("%s: probation: cannot follow its replicas (%s)", watch.what, err)
        if not reason:
            return ""
        if swap.old_is_gone(app, watch.new, watch.old, watch.what, reason):
            return "kept"
        watch.failure = (reason, f"{now - watch.started:.1f}s into its probation of {human_duration(app.probation)}")
        return "failed"

    def _look(self, watch: Watch, replica: Replica, moved: set[str]) -> str:
        """Why one container of the new version fails ("" while it serves, or once Swarm moved it: then
        its id is added to `moved`)."""
        swap, app = self.swap(), watch.app
        try:
            exited = swap.runtime_for(app).exit_reason(replica.container_id)
        except TemporaryError as err:
            # Docker cannot say; the health check below still can.
            log.warning("%s: probation: cannot inspect %s (%s)", watch.what, replica.container_name, err)
            exited = None
        if exited:
            return f"container {replica.container_name} {exited}"
        if app.engine == "swarm" and not self._runs(watch, replica):
            # Swarm moved it (its node was drained or is down), which is not this version's failure.
            moved.add(replica.container_id)
            return ""
        failure = swap.prober.check(replica.address, app.health)
        failed = watch.failed[replica.container_id] = watch.failed.get(replica.container_id, 0) + 1 if failure else 0
        if failed >= app.health_successes:
            url = probe_url(replica.address, app)
            return f"health check {url} failed {failed} times in a row (last: {failure})"
        return ""

    def _runs(self, watch: Watch, replica: Replica) -> bool:
        """Does its engine say it runs? Yes when the engine cannot say: the health check then tells."""
        try:
            return self.swap().runtime_for(watch.app).is_running(replica.container_id)
        except TemporaryError as err:
            log.warning("%s: probation: cannot inspect %s (%s)", watch.what, replica.container_name, err)
            return True

    def _retire(self, watch: Watch) -> None:
        self.swap().retire(watch.app, watch.new, watch.old, watch.deploy_id)

    def _end(self, watch: Watch, step: Callable[[Watch], None]) -> None:
        """Run the last step (retire the old, or roll back); the deploy then ends, as on_end records it.
        A step Docker or Caddy could not finish (TemporaryError) is the converger's, from the journal."""
        del self.watches[watch.app.name]
        try:
            step(watch)
        except ZddError as err:
            self.on_end(watch, err)
        except Exception as err:  # a bug: the journal still names the phase; the converger finishes it
            log.exception("%s: internal error ending the probation", watch.what)
            self.on_end(watch, TemporaryError(f"internal error: {err!r}"))
        else:
            self.on_end(watch, None)
