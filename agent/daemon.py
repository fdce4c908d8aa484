"""`zdd run`: the agent's main loop. Wakes on queue events, deploys one request at a time per app,
pings systemd's watchdog from this loop only, and converges with reality when it starts."""

import logging
import secrets
import signal
import threading
import time
from pathlib import Path

from .caddy import CaddyRouter
from .clock import SystemClock
from .config import AppConfig, Config, load_config
from .docker_runtime import DockerRuntime
from .errors import ConfigError, RequestError, TemporaryError, ZddError
from .health import HttpProber
from .lock import StateLock
from .logcontext import deploy_context
from .prune import images_to_prune, kept_images
from .queue import QueueFile, QueueWatcher, RequestDrop
from .reconcile import AFTER_SWITCH, plan_app
from .reference import parse_reference, parse_request
from .state import HistoryEntry, State, StateStore
from .swap import Swap
from .systemd import NOTICE, Notifier

log = logging.getLogger("zdd.agent")


def new_deploy_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


class StateJournal:
    """swap.Journal over the state file: the phase is on disk before the step it names begins."""

    def __init__(self, store: StateStore, state: State):
        self.store, self.state = store, state

    def enter(self, app: str, phase: str, **data: str) -> None:
        app_state = self.state.app(app)
        app_state.phase, app_state.phase_data = phase, dict(data)
        self.store.save(self.state)


class Agent:
    def __init__(self, config: Config, notifier: Notifier | None = None):
        self.config = config
        self.notifier = notifier or Notifier()
        self.store = StateStore(config.state_dir)
        self.state = self.store.load()
        if not self.state.instance:
            self.state.instance = secrets.token_hex(4)
        self.queue = QueueFile(config.queue_path)
        self.queue.restore(self.state.queue_offsets)
        self.drop = RequestDrop(config.requests_dir)
        self.wake = threading.Event()
        self.stop_requested = False
        self.reload_requested = False
        self.last_failure = ""
        self.runtime = DockerRuntime(config.docker_host, config.network, self.state.instance)
        self.router = CaddyRouter(config, self.state.instance)
        self.swap = Swap(
            self.runtime,
            self.router,
            HttpProber(),
            SystemClock(),
            StateJournal(self.store, self.state),
            status=self.notifier.status,
            tick=self.tick,
            stopping=lambda: self.stop_requested,
        )
        self._last_ping = 0.0
        self.deploying: AppConfig | None = None  # the app whose deploy runs now, if any
        self._stop_announced = False
        self.converged = False  # start-up reconciliation done; retried each wake-up until it is
        self._reconcile_error = ""
        self._last_converge = 0.0

    # --- systemd ---------------------------------------------------------------------------------
    def tick(self) -> None:
        """Called from the main loop and from a deploy's polls: it only runs while zdd makes progress."""
        interval = self.notifier.watchdog_interval
        now = time.monotonic()
        if interval and now - self._last_ping >= interval / 2:
            self.notifier.watchdog()
            self._last_ping = now
        if self.stop_requested and not self._stop_announced:
            self._stop_announced = True
            self._announce_stop()

    def _announce_stop(self) -> None:
        """STOPPING=1 at once; mid-deploy, also how much longer systemd must wait for the deploy to end."""
        app = self.deploying
        if app is None:
            self.notifier.stopping(f"stopping; {self.idle_status()}")
            return
        bound = app.start_timeout + app.drain_timeout + app.stop_timeout + 30  # a probation ends at once
        self.notifier.stopping(f"stopping after the deploy of {app.name} in progress", extend_usec=int(bound * 1e6))
        log.log(NOTICE, "%s: stop requested; finishing the deploy in progress first (at most %.0fs)", app.name, bound)

    def idle_status(self) -> str:
        parts = []
        for name in self.config.apps:
            current = self.state.app(name).current
            since = time.strftime("%H:%M", time.localtime(current.since)) if current else ""
            parts.append(f"{name} {current.tag} since {since}" if current else f"{name} not deployed")
        text = "idle; " + (", ".join(parts) or "no app configured")
        return f"{text}; last deploy failed: {self.last_failure}" if self.last_failure else text

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self.reload_requested = True
        else:
            self.stop_requested = True
        self.wake.set()

    # --- converging: at start-up, then every reconcile_interval while idle ------------------------
    def reconcile(self) -> None:
        """Converge every app to one serving container that Caddy routes to (docs/ARCHITECTURE.md, 4)."""
        self.runtime.ensure_network()
        for app in self.config.apps.values():
            self._reconcile_app(app, set(self.router.routed(app.name)))

    def try_reconcile(self) -> None:
        try:
            self.reconcile()
        except (TemporaryError, OSError) as err:
            # Once per distinct cause: the retry runs on every wake-up.
            level = logging.DEBUG if str(err) == self._reconcile_error else logging.ERROR
            self._reconcile_error = str(err)
            log.log(level, "reconciliation failed: %s; retrying, deploys wait until it succeeds", err)
        else:
            if self._reconcile_error:
                log.log(NOTICE, "reconciliation succeeded after: %s", self._reconcile_error)
                self._reconcile_error = ""
            self.converged = True
            self._last_converge = time.monotonic()

    def _reconcile_app(self, app: AppConfig, routed: set[str]) -> None:
        app_state = self.state.app(app.name)
        plan = plan_app(app.name, app_state, self.runtime.containers(app), routed, time.time())
        for note in plan.notes:
            log.warning("%s", note)
        deploy_id = app_state.phase_data.get("deploy", "")
        if plan.drain_and_stop and plan.current:
            self.swap.finish(app, plan.current, plan.drain_and_stop, deploy_id, plan.probation_until)
        else:
            self.router.ensure_route(app, [plan.current.address] if plan.current else [])
        for found in plan.remove:
            self.runtime.remove(found.id)
            log.info("%s: removed container %s (not live)", app.name, found.name)
        if plan.interrupted == "after-switch" and app_state.current:
            app_state.previous_tag = app_state.current.tag
            app_state.previous_reference = app_state.current.reference
        unchanged = plan.current == app_state.current and not app_state.phase and not plan.remove
        app_state.current = plan.current
        app_state.phase, app_state.phase_data = "", {}
        stale = self._settle_interrupted(app.name, deploy_id, plan.interrupted)
        if stale or not unchanged:
            self.store.save(self.state)

    def _settle_interrupted(self, app: str, deploy_id: str, interrupted: str) -> bool:
        """A deploy still marked running when no deploy runs was cut short by a crash: it finished if it
        had switched, else it is retried once (never silently dropped, never run twice after success)."""
        settled = False
        for entry in self.state.history:
            if entry.app != app or entry.result != "running":
                continue
            settled = True
            if entry.deploy_id == deploy_id and interrupted == "after-switch":
                entry.result, entry.reason, entry.ended_at = "succeeded", "finished after an interruption", time.time()
            elif entry.deploy_id == deploy_id and interrupted == "rolled-back":
                entry.result, entry.ended_at = "failed", time.time()
                entry.reason = "the new container died after the switch; the previous version serves again"
                self.last_failure = f"{app}: {entry.tag}: {entry.reason}"
            elif entry.attempts < 1:
                entry.result, entry.attempts = "queued", entry.attempts + 1
                log.warning("%s: deploy %s of %s was interrupted; retrying it once", app, entry.deploy_id, entry.tag)
            else:
                entry.result, entry.ended_at = "failed", time.time()
                entry.reason = "interrupted twice; not retried"
        return settled

    # --- the queue ---------------------------------------------------------------------------------
    def take_queue(self) -> None:
        repositories = self.config.repositories()
        entries = self.queue.claim()
        try:
            dropped = self.drop.take()
        except OSError as err:  # the drop directory itself is unusable: the queue file still works
            log.error("queue: cannot read %s: %s; will retry", self.drop.directory, err)
            dropped = []
        # Newest wins across both inputs: in the order they were written, not the order they were read.
        entries = sorted(entries + [entry for _, entry in dropped], key=lambda entry: entry.written_at)
        changed = self.state.queue_offsets != self.queue.offsets() or bool(dropped)
        self.state.queue_offsets = self.queue.offsets()  # saved with the requests below, in one write
        for entry in entries:
            line = entry.line.strip()
            if not line:
                continue
            try:
                request = parse_request(line, repositories)
            except RequestError as err:
                log.error("queue: rejected entry: %s", err)
                continue
            deploy_id = new_deploy_id()
            log.info("%s: queued %s (deploy %s)", request.app, request.ref, deploy_id)
            self.state.record(
                HistoryEntry(
                    deploy_id=deploy_id,
                    app=request.app,
                    tag=request.ref.version,
                    reference=str(request.ref),
                    requested_at=entry.claimed_at,
                    result="queued",
                    requested_by=entry.uid,
                )
            )
            changed = True
        if changed:
            self.store.save(self.state)
        self.drop.done([path for path, _ in dropped])

    def next_request(self, app: str) -> HistoryEntry | None:
        """Newest wins: earlier queued requests for the app are superseded, and the log says so."""
        queued = [e for e in self.state.history if e.app == app and e.result == "queued"]
        if not queued:
            return None
        newest = queued[-1]
        for skipped in queued[:-1]:
            skipped.result, skipped.ended_at = "superseded", time.time()
            skipped.reason = f"superseded by {newest.tag} before it started"
            log.log(NOTICE, "%s: skipping %s: %s was queued after it", app, skipped.tag, newest.tag)
        return newest

    def deploy(self, app: AppConfig, entry: HistoryEntry) -> None:
        """Run one queued request through the swap and record how it ended."""
        app_state = self.state.app(app.name)
        current = app_state.current
        entry.result, entry.started_at = "running", time.time()
        entry.from_tag = current.tag if current else ""
        self.store.save(self.state)
        what = f"{app.name}: {entry.from_tag or '(none)'} -> {entry.tag}"
        self.deploying = app
        with deploy_context(app.name, entry.tag, entry.deploy_id):
            log.log(NOTICE, "%s: deploy %s started", what, entry.deploy_id)
            try:
                ref = parse_reference(entry.reference, app.image)
                outcome = self.swap.deploy(app, ref, current, entry.deploy_id)
            except TemporaryError as err:
                if self._after_temporary_failure(app, entry, err, what):
                    return
            except ZddError as err:
                entry.result, entry.reason = "failed", str(err)
                self.last_failure = f"{what}: {err}"
                log.error("%s: deploy %s failed: %s", what, entry.deploy_id, err)
            except Exception as err:  # a bug must not kill the agent; converge instead
                entry.result, entry.reason = "failed", f"internal error: {err!r}"
                self.last_failure = f"{what}: internal error"
                log.exception("%s: deploy %s failed with an internal error", what, entry.deploy_id)
                self._reconcile_after_error(app)
            else:
                entry.image_id = outcome.running.image_id
                if outcome.changed:
                    app_state.previous_tag = current.tag if current else ""
                    app_state.previous_reference = current.reference if current else ""
                    entry.result, self.last_failure = "succeeded", ""
                    took = time.time() - entry.started_at
                    log.log(NOTICE, "%s: deploy %s succeeded in %.1fs", what, entry.deploy_id, took)
                else:
                    entry.result, entry.reason = "unchanged", f"{entry.tag} was already live"
                app_state.current = outcome.running
            finally:
                self.deploying = None
            entry.ended_at = time.time()
            app_state.phase, app_state.phase_data = "", {}
            self.store.save(self.state)
            if entry.result == "succeeded":
                self.prune_images(app)

    def _after_temporary_failure(self, app: AppConfig, entry: HistoryEntry, err: TemporaryError, what: str) -> bool:
        """dockerd, Caddy or the registry did not answer. The agent converges first (waiting until they
        answer), then: a deploy that had switched is finished, one that had not is tried once more.
        True when the deploy is left to reconciliation, with its phase journal intact."""
        self.converged = False
        app_state = self.state.app(app.name)
        if app_state.phase in AFTER_SWITCH:
            log.warning("%s: deploy %s: %s; it is live, the rest follows once that answers", what, entry.deploy_id, err)
            self.store.save(self.state)
            return True
        if entry.attempts < 1:
            entry.result, entry.reason, entry.attempts = "queued", str(err), entry.attempts + 1
            log.warning("%s: deploy %s: %s; trying it once more once that answers", what, entry.deploy_id, err)
            app_state.phase, app_state.phase_data = "", {}
            self.store.save(self.state)
            return True
        entry.result, entry.reason = "failed", str(err)
        self.last_failure = f"{what}: {err}"
        log.error("%s: deploy %s failed (after one retry): %s", what, entry.deploy_id, err)
        return False

    def prune_images(self, app: AppConfig) -> None:
        """Remove the images of this app's versions older than its keep_images, never one that is live
        (for any app) or that `zdd rollback` needs. A failure here is logged and never fails a deploy."""
        kept = {a.current.image_id for a in self.state.apps.values() if a.current}
        for name, config in self.config.apps.items():
            app_state = self.state.app(name)
            live = app_state.current.image_id if app_state.current else ""
            kept |= kept_images(name, self.state.history, live, app_state.previous_reference, config.keep_images)
        marked = False
        for image in images_to_prune(app.name, self.state.history, kept):
            try:
                outcome = self.runtime.remove_image(image.reference, image.image_id)
            except ZddError as err:
                log.warning(
                    "%s: could not prune image %s (%s); will retry after the next deploy",
                    app.name,
                    image.reference,
                    err,
                )
                break
            log.info("%s: pruning image %s (%s): %s", app.name, image.reference, image.image_id[:19], outcome)
            if not outcome.startswith("kept"):
                for entry in self.state.history:
                    if (entry.reference, entry.image_id) == (image.reference, image.image_id):
                        entry.image_pruned = marked = True
            self.tick()
        if marked:
            self.store.save(self.state)

    def _reconcile_after_error(self, app: AppConfig) -> None:
        try:
            self._reconcile_app(app, set(self.router.routed(app.name)))
        except Exception:
            log.exception("%s: could not converge after the error; will retry at the next start", app.name)

    def run_pending(self) -> None:
        for name, app in self.config.apps.items():
            if self.stop_requested:
                return
            entry = self.next_request(name)
            if entry:
                self.deploy(app, entry)
                self.notifier.status(self.idle_status())

    # --- signals and reload -------------------------------------------------------------------------
    def reload_config(self) -> None:
        self.notifier.reloading()
        try:
            config = load_config(self.config.source or Path(), state_dir=str(self.config.state_dir))
        except ConfigError as err:
            log.error("reload refused, keeping the running config: %s", err)
        else:
            if config.state_dir != self.config.state_dir:
                log.error("reload: state_dir cannot change while running; restart zdd instead")
            else:
                self.config = config
                self.router.config = config
                self.router.ensure_snippets({})
                log.log(NOTICE, "reloaded config %s (%d apps)", config.source, len(config.apps))
        self.notifier.send("READY=1")

    # --- main ---------------------------------------------------------------------------------------
    def run(self) -> int:
        lock = StateLock(self.config.state_dir)
        lock.acquire()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        watcher = QueueWatcher(self.config.queue_path, self.wake, self.config.requests_dir)
        try:
            self.queue.ensure_exists()
            self.drop.ensure_exists()
            self.router.ensure_snippets({n: [a.current.address] for n, a in self.state.apps.items() if a.current})
            self.try_reconcile()
            watcher.start()
            self.take_queue()  # what was written while zdd was down
            self.notifier.ready(self.idle_status())
            log.log(NOTICE, "zdd agent ready: %s", self.idle_status())
            self.loop()
        finally:
            watcher.stop()
            lock.release()
        return 0

    def loop(self) -> None:
        while not self.stop_requested:
            timeout = self.config.reconcile_interval  # re-check the queue and converge again, woken or not
            if self.notifier.watchdog_interval:
                timeout = min(timeout, self.notifier.watchdog_interval / 2)
            if self.queue.has_open_claims or not self.converged:
                timeout = min(timeout, 1.0)  # read late writers, then let the claimed file go
            self.wake.wait(timeout)
            self.wake.clear()
            self.tick()
            if self.reload_requested:
                self.reload_requested = False
                self.reload_config()
            if time.monotonic() - self._last_converge >= self.config.reconcile_interval:
                self.converged = False  # converge again: dockerd may have restarted a container elsewhere
            try:
                self.take_queue()  # on every wake-up: inotify may merge or drop events
                if not self.converged:
                    self.try_reconcile()
                if self.converged:
                    self.run_pending()
            except (TemporaryError, OSError) as err:
                log.error("%s; will retry", err)
            self.notifier.status(self.idle_status())
        self.tick()  # announces STOPPING=1 if the signal came while idle
        log.log(NOTICE, "zdd agent stopping: %s", self.idle_status())
