"""The zero-downtime swap of one app, in the order of docs/ARCHITECTURE.md, section 2.

pull -> start beside the old -> health gate -> switch (route [new, old]: every new request goes to new)
-> measured drain of the old -> route [new] only -> probation (the old stays running, unrouted, and
takes the traffic back if the new one dies or turns unhealthy; watched by probation.py while the agent
goes on with other apps) -> stop and remove the old (retire).

This module imports no SDK: Docker, Caddy, HTTP probes, the clock and the phase journal come in as
the small Protocols below, so the order of steps and every failure path can be tested over fakes.
"""

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .config import AppConfig, HealthCheck
from .errors import PermanentError, StopRequested, TemporaryError, ZddError
from .reconcile import ROLLING_BACK
from .reference import ImageRef
from .state import Replica, Running, encode_replicas
from .units import format_size, human_duration

log = logging.getLogger("zdd.swap")

ENGINE_SETTLE = 1.0  # seconds: see the health gate
DRAIN_POLL = 0.05  # seconds between reads of Caddy's in-flight counter
KILLED = 137  # the exit code of a container Docker killed (SIGKILL) after its stop timeout
RELEASE_POLL = 0.2  # seconds between checks whether the release command ended
OUTPUT_LINES = 200  # of a container removed without going live, kept for `zdd logs --failed`
DRAIN_QUIET_READS = 2  # zero readings in a row: a request Caddy accepted a moment ago is counted by then


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    address: str  # ip:port on zdd's network, what Caddy dials


class Runtime(Protocol):
    def has_image(self, ref: ImageRef) -> bool: ...
    def free_bytes(self) -> int | None: ...
    # stall_timeout: give the pull up after that long without progress (the adapter that runs it enforces it)
    def pull(self, ref: ImageRef, progress: Callable[[int, int], None], stall_timeout: float) -> None: ...
    def image_id(self, ref: ImageRef) -> str: ...
    # replica: 1..app.replicas, so that the containers of one deploy get distinct names
    def start(self, app: AppConfig, image_id: str, ref: ImageRef, deploy_id: str, replica: int) -> Container: ...
    def keep_running(self, container_id: str) -> None: ...
    def exit_reason(self, container_id: str) -> str | None: ...
    # The container started in its place when one was moved (Swarm runs a task of a failed node again
    # elsewhere), once it runs; None when it was not moved. The local engine never moves one.
    def replacement(self, container_id: str) -> Container | None: ...
    def is_running(self, container_id: str) -> bool: ...
    def stop(self, container_id: str, timeout: float) -> None: ...
    def stop_all(self, container_ids: Sequence[str], timeout: float) -> None: ...  # side by side
    def remove(self, container_id: str) -> None: ...
    def output(self, container_id: str, lines: int) -> str: ...
    def run_release(self, app: AppConfig, image_id: str, ref: ImageRef, deploy_id: str) -> tuple[str, str, bool]: ...
    def exit_code(self, container_id: str) -> int | None: ...
    def release_containers(self, app: AppConfig) -> list[tuple[str, str, str]]: ...


class Router(Protocol):
    # Seconds after route() returns until every new request takes the new route (Caddy caches the
    # answer of zdd dns that long); the old container may still get requests until then.
    switch_delay: float

    # sets: each version's container addresses, newest first; every new request goes to the first set.
    def route(self, app: AppConfig, sets: Sequence[Sequence[str]]) -> None: ...
    # Requests in flight to any of these addresses, read at once; None when Caddy lists none of them.
    def in_flight(self, addresses: Sequence[str]) -> int | None: ...


class Prober(Protocol):
    def check(self, address: str, health: HealthCheck) -> str | None: ...


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def time(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class Journal(Protocol):
    """Persists the phase an app's deploy is entering, before the step runs (crash safety)."""

    def enter(self, app: str, phase: str, **data: str) -> None: ...

    def keep_output(self, app: str, text: str) -> None:
        """Keep the output of a new container that is removed without going live ("" forgets it)."""


@dataclass(frozen=True)
class Outcome:
    running: Running
    changed: bool  # False: the requested version was already live
    # Live, and in its probation until then (epoch seconds): probation.py watches it while the agent goes
    # on with other apps; `old` is kept running, unrouted, to take the traffic back. None: the deploy is done.
    probation_until: float | None = None
    old: Running | None = None


class Swap:
    def __init__(
        self,
        runtime: Runtime,
        router: Router,
        prober: Prober,
        clock: Clock,
        journal: Journal,
        status: Callable[[str], None] = lambda text: None,
        tick: Callable[[], None] = lambda: None,
        stopping: Callable[[], bool] = lambda: False,
        engines: Mapping[str, Runtime] | None = None,
    ):
        self.runtime, self.router, self.prober, self.clock = runtime, router, prober, clock
        # The runtime of each app's engine other than the local one ("swarm": SwarmRuntime, docs/swarm.md).
        self.engines = dict(engines or {})
        self.journal, self.status = journal, status
        # Called on every poll while a deploy makes progress: the agent pings systemd's watchdog there.
        self.tick = tick
        # True once the agent was asked to stop: a probation then ends early rather than hold up the stop.
        self.stopping = stopping

    def runtime_for(self, app: AppConfig) -> Runtime:
        """The runtime that runs `app`: its engine's, the local Docker engine's by default."""
        return self.engines.get(app.engine, self.runtime)

    def deploy(self, app: AppConfig, ref: ImageRef, current: Running | None, deploy_id: str) -> Outcome:
        old_tag = current.tag if current else "(none)"
        what = f"{app.name}: {old_tag} -> {ref.version}"
        # A changed `replicas` makes a deploy of the live version a real one: it starts the new number.
        resized = current is not None and len(current.replicas) != app.replicas
        if current and current.reference == str(ref) and app.pull != "always" and not resized:
            log.info("%s: %s is already live; nothing to do", app.name, ref.version)
            return Outcome(current, changed=False)

        self.journal.keep_output(app.name, "")  # the last failure's output is kept until the next deploy
        self.journal.enter(app.name, "pulling", deploy=deploy_id, reference=str(ref))
        self._pull(app, ref, what)
        image_id = self.runtime_for(app).image_id(ref)
        if current and current.image_id == image_id and not resized:
            log.info("%s: %s is the image already live (%s); nothing to do", app.name, ref.version, image_id[:19])
            self.journal.enter(app.name, "")
            return Outcome(current, changed=False)

        try:
            self._release(app, image_id, ref, deploy_id, what)
            outcome = self._start_and_switch(app, image_id, ref, current, deploy_id, what)
        except TemporaryError:
            raise  # tried again once it answers: the release container tells the retry the command ran
        except BaseException:
            self._forget_release(app, deploy_id, what)
            raise
        self._forget_release(app, deploy_id, what)
        return outcome

    def _start_and_switch(
        self, app: AppConfig, image_id: str, ref: ImageRef, current: Running | None, deploy_id: str, what: str
    ) -> Outcome:
        self.journal.enter(app.name, "starting", deploy=deploy_id, reference=str(ref), image=image_id)
        self.status(f"{what}: starting")
        started: list[Replica] = []
        try:
            # All replicas start before any is probed: they boot side by side, so N take about as long as one.
            for number in range(1, app.replicas + 1):
                container = self.runtime_for(app).start(app, image_id, ref, deploy_id, number)
                started.append(Replica(container.id, container.name, container.address))
                log.info("%s: started %s at %s (image %s)", what, container.name, container.address, image_id[:19])
            first, *more = started
            new = Running(
                tag=ref.version,
                reference=str(ref),
                image_id=image_id,
                container_id=first.container_id,
                container_name=first.container_name,
                address=first.address,
                since=self.clock.time(),
                more=more,
            )
            self.journal.enter(app.name, "started", deploy=deploy_id, **phase_data(new, current))
            new = new.with_replicas(self._health_gate(app, started, what))  # as it passed, wherever it runs
            for replica in new.replicas:
                self.runtime_for(app).keep_running(replica.container_id)
            self.journal.enter(app.name, "switching", deploy=deploy_id, **phase_data(new, current))
            self._switch(app, new, current, what)
        except BaseException:
            self._discard(app, started, what)
            raise
        until = self._after_switch(app, new, current, deploy_id)
        return Outcome(new, changed=True, probation_until=until, old=current if until is not None else None)

    def finish(
        self, app: AppConfig, new: Running, old: Running | None, deploy_id: str, probation_until: float | None = None
    ) -> float | None:
        """How a restarted agent completes a deploy that had switched before it died: route as the
        switch did, then everything after it. Died in probation: the old one is drained already; the
        rest of the probation is returned (epoch seconds) for probation.py to watch, or None when done."""
        drained = probation_until is not None
        self.router.route(app, [new.addresses, old.addresses] if old and not drained else [new.addresses])
        return self._after_switch(app, new, old, deploy_id, probation_until)

    def _after_switch(
        self, app: AppConfig, new: Running, old: Running | None, deploy_id: str, probation_until: float | None = None
    ) -> float | None:
        """Drain the old container and route only the new one. With a probation left, journal it and
        return its end: the old stays running, unrouted, and probation.py watches the new one. Else stop
        and remove the old."""
        if old is None:
            return None
        what = f"{app.name}: {old.tag} -> {new.tag}"
        if probation_until is None:
            self.journal.enter(app.name, "draining", deploy=deploy_id, **phase_data(new, old))
            self._drain(app, old, what)
            self.router.route(app, [new.addresses])
            probation_until = self.clock.time() + app.probation
        left = probation_until - self.clock.time()
        if left > 0 and self.stopping():
            log.info("%s: probation cut short: zdd is stopping; %s has served without fault", what, new.tag)
        elif left > 0:
            self.journal.enter(
                app.name, "probation", deploy=deploy_id, until=f"{probation_until:.3f}", **phase_data(new, old)
            )
            kept = human_duration(left)
            self.status(f"{what}: probation ({old.tag} kept ready for {kept})")
            log.info("%s: probation: %s stays running, unrouted, for %s", what, old.names, kept)
            return probation_until
        self.retire(app, new, old, deploy_id)
        return None

    def retire(self, app: AppConfig, new: Running, old: Running, deploy_id: str) -> None:
        """The old version's end, once the new one has served its probation: stop it, then remove it."""
        what = f"{app.name}: {old.tag} -> {new.tag}"
        self.journal.enter(app.name, "stopping", deploy=deploy_id, **phase_data(new, old))
        self.status(f"{what}: stopping {old.tag}")
        started = self.clock.monotonic()
        self.runtime_for(app).stop_all([r.container_id for r in old.replicas], app.stop_timeout)
        took = self.clock.monotonic() - started
        for replica in old.replicas:
            self._report_stop(app, old.tag, replica, took, what)
            self.runtime_for(app).remove(replica.container_id)
            log.info("%s: removed %s", what, replica.container_name)

    def _report_stop(self, app: AppConfig, tag: str, old: Replica, took: float, what: str) -> None:
        """How the old version ended: by its SIGTERM, or killed at stop_timeout (a slow deploy's cause)."""
        try:
            code = self.runtime_for(app).exit_code(old.container_id)
        except ZddError:
            code = None  # only a log line: the stop itself succeeded
        stopping = f"{what}: stopping {tag} ({old.container_name})"
        if code == KILLED and took >= app.stop_timeout - 0.5:
            log.warning(
                "%s: it did not exit within apps.%s.stop_timeout %s of SIGTERM and was killed; make it exit on "
                "SIGTERM (close idle connections) or raise stop_timeout",
                stopping,
                app.name,
                human_duration(app.stop_timeout),
            )
        elif code == -1:
            log.info("%s: it was already gone", stopping)
        else:
            log.info("%s took %.1fs, exit code %s", stopping, took, "unknown" if code is None else code)

    def follow(self, app: AppConfig, live: Running, moved: Mapping[str, Container] | None = None) -> Running:
        """The live version where it runs now: a replica the runtime moved (Swarm ran a task of a failed or
        drained node again on another) is gated where it runs now and routed in its place. `moved`: what
        runs in place of which replica, by its id; by default the runtime's replacement() of each. Returns
        the live version to record, the same one when nothing moved; raises PermanentError if a moved one
        fails its gate (the route keeps the others, and the next call tries again)."""
        replicas = live.replicas
        if moved is None:
            moved = {r.container_id: self.runtime_for(app).replacement(r.container_id) for r in replicas}
        if not any(moved.values()):
            return live
        what = f"{app.name}: {live.tag}"
        arrived = {old: Replica(c.id, c.name, c.address) for old, c in moved.items() if c is not None}
        gated = self._health_gate(app, list(arrived.values()), f"{what}: moved")  # in order, as it passed
        now = dict(zip(arrived, gated, strict=True))
        followed = live.with_replicas([now.get(r.container_id, r) for r in replicas])
        self.router.route(app, [followed.addresses])
        for replica in (r for r in replicas if r.container_id in now):
            log.info(
                "%s: %s moved from %s to %s; routed there",
                what,
                replica.container_name,
                replica.address,
                now[replica.container_id].address,
            )
        return followed

    def old_is_gone(self, app: AppConfig, new: Running, old: Running, what: str, reason: str) -> bool:
        """Going back needs an old container running; if none is, the new one stays (Docker's restart
        policy is all that is left to it) and the probation ends."""
        try:
            if any(self.runtime_for(app).is_running(r.container_id) for r in old.replicas):
                return False
        except TemporaryError:
            return False  # cannot tell: going back is still the better bet
        log.error(
            "%s: %s, but no container of %s runs either (%s): %s stays", what, reason, old.tag, old.names, new.tag
        )
        return True

    def send_back(self, app: AppConfig, new: Running, old: Running, deploy_id: str, reason: str, after: str) -> None:
        """The first, quick part of a roll-back: journal it, route back to the old one. roll_back(...,
        sent_back=True) does the rest later (and routes again: one not confirmed here is tried there)."""
        what = f"{app.name}: {old.tag} -> {new.tag}"
        log.error("%s: %s: %s; routing back to %s", what, after, reason, old.tag)
        self.journal.enter(app.name, ROLLING_BACK, deploy=deploy_id, **phase_data(new, old))
        try:
            self.router.route(app, [self._routable(app, old)])
        except ZddError as err:
            log.warning("%s: the route back to %s is not confirmed yet (%s)", what, old.tag, err)

    def roll_back(
        self,
        app: AppConfig,
        new: Running,
        old: Running,
        deploy_id: str,
        reason: str,
        after: str,
        sent_back: bool = False,
    ) -> None:
        """The new version failed its probation (`after`: when, as the log says it): route back to the
        old one, then stop and remove the new one. Raises PermanentError, the deploy's failure."""
        what = f"{app.name}: {old.tag} -> {new.tag}"
        if not sent_back:  # else send_back said it
            log.error("%s: %s: %s; routing back to %s", what, after, reason, old.tag)
        self.status(f"{what}: rolling back to {old.tag}")
        # Journalled first: an agent that dies from here on finishes going back when it restarts.
        self.journal.enter(app.name, ROLLING_BACK, deploy=deploy_id, **phase_data(new, old))
        try:
            self.router.route(app, [self._routable(app, old)])
        except ZddError as err:
            # Never remove a container zdd dns may still answer: the converger goes back once it can.
            raise TemporaryError(
                f"{what}: {reason}; the route back to {old.tag} is not confirmed ({err}); "
                f"{_each(new, 'keeps', 'keep')} running until it is"
            ) from err
        self._wait(self.router.switch_delay)  # requests sent meanwhile may still reach the new one
        self.runtime_for(app).stop_all([r.container_id for r in new.replicas], app.stop_timeout)
        self._keep_output(app, new.replicas, f"{what}: {reason}")
        for replica in new.replicas:
            self.runtime_for(app).remove(replica.container_id)
        raise PermanentError(
            f"{what}: failed {after}: {reason}; traffic is back on {old.tag} and {_each(new, 'is', 'are')} removed"
        )

    def _pull(self, app: AppConfig, ref: ImageRef, what: str) -> None:
        if app.pull == "never" or (app.pull == "missing" and self.runtime_for(app).has_image(ref)):
            if not self.runtime_for(app).has_image(ref):
                raise PermanentError(f'{what}: image {ref} is not on this host and pull = "never"')
            return
        free = self.runtime_for(app).free_bytes()
        if free is not None and free < app.min_free_space:
            raise PermanentError(
                f"{what}: refusing to pull {ref}: {format_size(free)} free where Docker keeps images, "
                f"below min_free_space {format_size(app.min_free_space)}; free some space (docker image prune)"
            )
        self.status(f"{what}: pulling {ref}")
        started = self.clock.monotonic()
        pulled = [0]

        def progress(done: int, total: int) -> None:
            self.tick()
            if total:
                pulled[0] = total
                self.status(f"{what}: pulling {ref}: {format_size(done)} of {format_size(total)}")

        self.runtime_for(app).pull(ref, progress, app.pull_stall_timeout)
        took = self.clock.monotonic() - started
        size = f" ({format_size(pulled[0])} of new layers)" if pulled[0] else ""
        log.info("%s: pulled %s in %.1fs%s", what, ref, took, size)

    def _release(self, app: AppConfig, image_id: str, ref: ImageRef, deploy_id: str, what: str) -> None:
        """The release command, once per deploy, in a one-off container of the new image; the old version
        serves throughout. Its container stays until the deploy ends (the runner removes it): an agent
        that dies meanwhile finds it when the deploy is retried, and neither skips nor repeats the run."""
        if not app.release_command:
            return
        self.journal.enter(app.name, "releasing", deploy=deploy_id, reference=str(ref), image=image_id)
        self.status(f"{what}: release command")
        started = self.clock.monotonic()
        self._wait_for_other_releases(app, deploy_id, what, started)
        container_id, name, found = self.runtime_for(app).run_release(app, image_id, ref, deploy_id)
        if found:
            log.warning("%s: the release command already ran or runs in %s (zdd restarted): not run again", what, name)
        else:
            log.info("%s: running the release command in %s: %s", what, name, " ".join(app.release_command))
        while (code := self.runtime_for(app).exit_code(container_id)) is None:
            if self.stopping():
                raise StopRequested(
                    f"{what}: zdd is stopping; the release command runs on in {name}, and the deploy "
                    "resumes after the restart without running it again"
                )
            if self.clock.monotonic() - started > app.release_timeout:
                self.runtime_for(app).stop(container_id, 0)
                self._keep_output(app, [Replica(container_id, name, "")], f"{what}: release command timed out")
                raise PermanentError(
                    f"{what}: release command did not finish within {human_duration(app.release_timeout)} "
                    f"(release_timeout) and was killed; last output: {self._last_lines(app, container_id)}"
                )
            self.tick()
            self.clock.sleep(RELEASE_POLL)
        if code == -1:
            raise PermanentError(f"{what}: the release command's container {name} was removed before it ended")
        if code != 0:
            self._keep_output(
                app, [Replica(container_id, name, "")], f"{what}: release command exited with code {code}"
            )
            raise PermanentError(
                f"{what}: release command exited with code {code}; last output: {self._last_lines(app, container_id)}"
            )
        log.info("%s: release command finished in %.1fs", what, self.clock.monotonic() - started)

    def _wait_for_other_releases(self, app: AppConfig, deploy_id: str, what: str, started: float) -> None:
        """An earlier deploy's release command may still run (that deploy was superseded while zdd was
        stopped): two migrations must never run at once, so this one waits for it to end."""
        for container_id, name, deploy in self.runtime_for(app).release_containers(app):
            if deploy == deploy_id:
                continue
            if self.runtime_for(app).exit_code(container_id) is None:
                log.warning("%s: the release command of deploy %s still runs in %s; waiting for it", what, deploy, name)
            while self.runtime_for(app).exit_code(container_id) is None:
                if self.stopping():
                    raise StopRequested(f"{what}: zdd is stopping while the release command in {name} runs")
                if self.clock.monotonic() - started > app.release_timeout:
                    raise PermanentError(
                        f"{what}: the release command of deploy {deploy} in {name} still runs after "
                        f"{human_duration(app.release_timeout)} (release_timeout); this deploy's was not started"
                    )
                self.tick()
                self.clock.sleep(RELEASE_POLL)

    def _forget_release(self, app: AppConfig, deploy_id: str, what: str) -> None:
        """The deploy ended (live, or failed for good): its release container has told what it had to."""
        if not app.release_command:
            return
        try:
            for container_id, name, deploy in self.runtime_for(app).release_containers(app):
                if deploy == deploy_id:
                    self.runtime_for(app).remove(container_id)
                    log.debug("%s: removed %s", what, name)
        except ZddError as err:
            log.warning("%s: the release container stays for now (%s); the converger removes it", what, err)

    def _last_lines(self, app: AppConfig, container_id: str) -> str:
        try:
            lines = self.runtime_for(app).output(container_id, 3).strip().splitlines()
        except ZddError as err:
            return f"(unreadable: {err})"
        # Docker's timestamp leads each line; the journal has its own.
        return " | ".join(line.partition(" ")[2] or line for line in lines) or "(none)"

    def _health_gate(self, app: AppConfig, started: list[Replica], what: str) -> list[Replica]:
        """Probe every new replica health_interval apart until each passed health_successes times in a row,
        and return them. One moved meanwhile is gated again where it runs now, its replacement added to
        `started` (all a failed deploy discards)."""
        begun = self.clock.monotonic()
        deadline = begun + app.start_timeout
        new = list(started)
        passed = dict.fromkeys((r.container_id for r in new), 0)
        last = dict.fromkeys(passed, "no probe answered yet")  # each container's last failure
        probes = 0
        while True:
            probed = self.clock.monotonic()
            for index, replica in enumerate(new):
                if passed[replica.container_id] >= app.health_successes:
                    continue
                probes += 1
                failure = self.prober.check(replica.address, app.health)
                moved = self.runtime_for(app).replacement(replica.container_id) if failure is not None else None
                if moved is not None:
                    log.info("%s: %s moved to %s; gating it there", what, replica.container_name, moved.address)
                    new[index] = Replica(moved.id, moved.name, moved.address)
                    started.append(new[index])
                    del passed[replica.container_id]
                    passed[moved.id], last[moved.id] = 0, failure
                    continue
                # A probe that passed shows the container runs; after one that failed, Docker says whether it
                # exited (a crash ends the gate at once instead of at start_timeout).
                exited = self.runtime_for(app).exit_reason(replica.container_id) if failure is not None else None
                if exited:
                    # A stopping dockerd stops every container and its API answers a moment longer: asked
                    # again a second later, an engine going away is an outage (retried), not a crash. That
                    # later answer is the one told: Docker marks an out-of-memory kill a moment after the exit.
                    self._wait(ENGINE_SETTLE)
                    exited = self.runtime_for(app).exit_reason(replica.container_id) or exited
                    raise PermanentError(
                        f"{what}: container {replica.container_name} {exited} before it became healthy"
                    )
                if failure is None:
                    passed[replica.container_id] += 1
                else:
                    passed[replica.container_id], last[replica.container_id] = 0, failure
            pending = [r for r in new if passed[r.container_id] < app.health_successes]
            if not pending:
                # One stopped since it passed (a crash; Swarm stopping a drained node's task, which answers
                # through its stop grace) is no pass: gated again, so that it fails or is followed.
                pending = [r for r in new if not self.runtime_for(app).is_running(r.container_id)]
                for replica in pending:
                    passed[replica.container_id], last[replica.container_id] = 0, "stopped after it passed"
            self.status(f"{what}: {_gate_progress(passed, app.health_successes)}")
            if not pending:
                probed_what = probe_url(new[0].address, app) if len(new) == 1 else f"{len(new)} replicas"
                log.info(
                    "%s: healthy after %.2fs (%d probes of %s)",
                    what,
                    self.clock.monotonic() - begun,
                    probes,
                    probed_what,
                )
                return new
            if self.clock.monotonic() >= deadline:
                raise PermanentError(
                    f"{what}: health check {probe_url(pending[0].address, app)} did not pass {app.health_successes} "
                    f"times in a row within {human_duration(app.start_timeout)} ({probes} probes; "
                    f"last: {last[pending[0].container_id]})"
                )
            self.tick()
            # Probes start health_interval apart: the probe's and the tick's own time count in it.
            self.clock.sleep(max(0.0, probed + app.health_interval - self.clock.monotonic()))

    def _switch(self, app: AppConfig, new: Running, current: Running | None, what: str) -> None:
        sets = [new.addresses, current.addresses] if current else [new.addresses]
        try:
            self.router.route(app, sets)
        except ZddError:
            # Caddy refused or was unreachable: it still routes to the old containers, and the snippet
            # file must say so too before the new ones go away.
            self._restore_route(app, current)
            raise
        where = ", ".join(new.addresses)
        self.status(f"{what}: switched to {where}")
        log.info(
            "%s: switched: Caddy sends every new request to %s within %s",
            what,
            where,
            human_duration(self.router.switch_delay),
        )

    def _restore_route(self, app: AppConfig, current: Running | None) -> None:
        try:
            self.router.route(app, [current.addresses] if current else [])
        except ZddError as err:
            log.warning("%s: could not restore the previous route yet (%s); it will be retried", app.name, err)

    def _drain(self, app: AppConfig, old: Running, what: str) -> None:
        started = self.clock.monotonic()
        deadline = started + app.drain_timeout
        # Until Caddy has asked zdd dns again, a new request may still go to the old container: a zero
        # reading before then proves nothing.
        settled = started + self.router.switch_delay
        quiet, reported = 0, None
        self.status(f"{what}: draining {old.tag}")
        while True:
            try:
                in_flight = self.router.in_flight(old.addresses)
            except TemporaryError as err:
                log.warning("%s: cannot read Caddy's in-flight count (%s); retrying", what, err)
                in_flight = -1
            if in_flight is not None and in_flight >= 0 and in_flight != reported:
                reported = in_flight
                self.status(f"{what}: draining {old.tag} ({in_flight} in flight)")
            if self.clock.monotonic() < settled:
                quiet = 0
            elif in_flight is None or in_flight == 0:
                quiet += 1
                if quiet >= DRAIN_QUIET_READS:
                    log.info("%s: drained %s in %.2fs", what, old.names, self.clock.monotonic() - started)
                    return
            else:
                quiet = 0
            if self.clock.monotonic() >= deadline:
                log.warning(
                    "%s: drain timeout %s reached with %s request(s) still in flight on %s; stopping it",
                    what,
                    human_duration(app.drain_timeout),
                    in_flight,
                    old.names,
                )
                return
            self.tick()
            self.clock.sleep(DRAIN_POLL)

    def _routable(self, app: AppConfig, old: Running) -> list[str]:
        """The old version's addresses to go back to: those of its containers that run (a replica that
        died meanwhile would fail its share of requests), or all of them when Docker cannot say."""
        try:
            running = [r.address for r in old.replicas if self.runtime_for(app).is_running(r.container_id)]
        except TemporaryError:
            running = []
        return running or old.addresses

    def _wait(self, seconds: float) -> None:
        until = self.clock.monotonic() + seconds
        while self.clock.monotonic() < until:
            self.tick()
            self.clock.sleep(min(DRAIN_POLL, until - self.clock.monotonic()))

    def _discard(self, app: AppConfig, new: Sequence[Replica], what: str) -> None:
        """Remove the new containers that never went live; the old ones were never touched."""
        if not new:
            return
        self._keep_output(app, new, f"{what}: never went live")
        for replica in new:
            try:
                self.runtime_for(app).remove(replica.container_id)
                log.info("%s: removed %s; the old version keeps serving", what, replica.container_name)
            except ZddError as err:
                log.warning("%s: could not remove %s yet (%s); it will be retried", what, replica.container_name, err)

    def _keep_output(self, app: AppConfig, containers: Sequence[Replica], why: str) -> None:
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self.clock.time()))
        text = ""
        for replica in containers:
            try:
                output = self.runtime_for(app).output(replica.container_id, OUTPUT_LINES)
            except ZddError as err:
                output = f"(its output could not be read: {err})\n"
            text += f"# {replica.container_name}, removed {when}\n# {why}\n" + (output or "(no output)\n")
        try:
            self.journal.keep_output(app.name, text)
        except OSError as err:
            log.warning(
                "%s: cannot keep the output of %s: %s", app.name, ", ".join(r.container_name for r in containers), err
            )


def _each(running: Running, one: str, several: str) -> str:
    """`zdd-web-d2 is` or `zdd-web-d2, zdd-web-d2-2 are`: a version's containers with the verb that fits."""
    return f"{running.names} {one if len(running.replicas) == 1 else several}"


def _gate_progress(passed: dict[str, int], needed: int) -> str:
    """`health 2/3`, or with replicas `health 2/3, 3/3`."""
    return "health " + ", ".join(f"{min(n, needed)}/{needed}" for n in passed.values())


def probe_url(address: str, app: AppConfig) -> str:
    """What the health check asks, as the operator reads it in a failure."""
    url = f"http://{address}{app.health_path}"
    return f"{url} (Host: {app.health_host})" if app.health_host else url


def phase_data(new: Running, old: Running | None) -> dict[str, str]:
    """What a restarted agent needs to finish the deploy: both containers, by id and address."""
    return {
        "container": new.container_id,
        "address": new.address,
        "tag": new.tag,
        "reference": new.reference,
        "image": new.image_id,
        "name": new.container_name,
        "more": encode_replicas(new.more),  # replicas 2..N; the old ones are in the state's `current`
        "old": old.container_id if old else "",
    }
