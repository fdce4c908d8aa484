"""`zdd run`: wires the adapters to the rules and runs the main loop.

The loop sleeps until the queue, a signal or a timer wakes it; then it reads the queue (intake.py),
converges when it must (converge.py), and runs the next queued deploy of each app, one at a time
(runner.py, swap.py). WATCHDOG=1 comes from this loop and from a deploy's own polls only (heartbeat.py).
"""

import logging
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path

from .caddy import CaddyRouter, snippet_fixed_addresses, snippet_instance
from .clock import SystemClock
from .config import AppConfig, Config, load_config
from .converge import Converger
from .docker_runtime import DockerRuntime
from .errors import ConfigError, ZddError
from .failed_output import FailedOutput
from .health import HttpProber
from .heartbeat import Heartbeat, idle_status, stop_bound
from .intake import Intake
from .ledger import Ledger, Result
from .lock import SnippetDirLock, StateLock
from .probation import Probations, Watch
from .progress import Progress
from .prune import prune_app
from .queue import QueueFile, QueueWatcher, RequestDrop
from .reporting import Reporting
from .routes import RouteFile, RouteTable
from .runner import DeployRunner, Ran
from .state import State, StateStore
from .swap import Swap
from .swarm_runtime import SwarmRuntime
from .systemd import NOTICE, Notifier
from .ticking import Ticking, TickingProber, TickingRuntime
from .waker import Waker

log = logging.getLogger("zdd.agent")

SWARM_FOLLOW_INTERVAL = 5.0  # seconds between looks at where Swarm runs the live tasks


class StateJournal:
    """swap.Journal over the state file: the phase is on disk before the step it names begins."""

    def __init__(
        self,
        store: StateStore,
        state: State,
        failed_output: FailedOutput,
        on_phase: Callable[[str, str], None] = lambda app, phase: None,
    ):
        self.store, self.state, self.failed_output, self.on_phase = store, state, failed_output, on_phase

    def enter(self, app: str, phase: str, **data: str) -> None:
        app_state = self.state.app(app)
        app_state.phase, app_state.phase_data = phase, dict(data)
        self.store.save(self.state)
        self.on_phase(app, phase)

    def keep_output(self, app: str, text: str) -> None:
        self.failed_output.keep(app, text)


def find_instance(config: Config, state: State) -> str:
    """This agent's mark on its containers. After lost state (a purge and reinstall, a state.toml moved
    aside), the mark the files still carry, so the live containers are adopted, not orphaned."""
    if state.instance:
        return state.instance
    routes = RouteFile(config.routes_path).load()
    if routes.instance:
        log.warning("no state: taking the instance %s of %s", routes.instance, config.routes_path)
        return routes.instance
    for name in config.apps:
        try:
            found = snippet_instance(config.snippet_path(name).read_text(encoding="utf-8"))
        except OSError:
            continue
        if found:
            log.warning("no state: taking the instance %s that %s names", found, config.snippet_path(name))
            return found
    return ""


class Agent:
    def __init__(self, config: Config, notifier: Notifier | None = None):
        self.config = config
        self.notifier = notifier or Notifier()
        self.store = StateStore(config.state_dir)
        self.state = self.store.load()
        self.state.instance = find_instance(config, self.state)
        self.adopting = not self.state.instance  # no mark anywhere: look for one on a fixed snippet's container
        self.state.instance = self.state.instance or secrets.token_hex(4)
        self.waker = Waker()
        self.stop_requested = False
        self.reload_requested = False
        self.last_failure = ""
        self.deploying = None
        self.heartbeat = Heartbeat(self.notifier)
        self.ticking = Ticking(self.tick, stopping=lambda: self.stop_requested)
        self.ledger = Ledger(self.state)
        self.reporting = Reporting(config, self.state)
        self.progress = Progress(config.state_dir)
        self.probations = Probations(lambda: self.swap, self._probation_ended)
        self.queue = QueueFile(config.queue_path)
        self.queue.restore(self.state.queue_offsets)
        self.drop = RequestDrop(config.requests_dir)
        # A lambda: a reload replaces self.config, and the intake must check against the config in force.
        self.intake = Intake(
            self.queue, self.drop, self.ledger, self.state, self.save, lambda: self.config.repositories()
        )
        self._build(config)
        self.converged = False  # start-up convergence done; retried each wake-up until it is
        self._converge_error = ""
        self._last_converge = 0.0

    def _build(self, config: Config) -> None:
        """The adapters that depend on the config: rebuilt by a reload."""
        self.config = config
        self.reporting.configure(config)
        self.docker = DockerRuntime(config.docker_host, config.network, self.state.instance, config.registry_auth)
        self.runtime = TickingRuntime(self.docker, self.ticking)
        engines = {}
        if any(app.engine == "swarm" for app in config.apps.values()):
            # The Swarm that docker_host's engine manages: zdd runs on a manager node (docs/swarm.md).
            swarm = SwarmRuntime(self.docker.client, registry_auth=config.registry_auth)
            engines["swarm"] = TickingRuntime(swarm, self.ticking, start_waits=True)
        self.router = CaddyRouter(config, self.state.instance)
        self.swap = Swap(
            self.runtime,
            self.router,
            TickingProber(HttpProber(), self.ticking),
            SystemClock(),
            StateJournal(self.store, self.state, FailedOutput(config.state_dir), self.reporting.phase),
            status=self.deploy_status,
            tick=self.tick,
            stopping=lambda: self.stop_requested,
            engines=engines,
        )
        self.converger = Converger(
            self.runtime,
            self.router,
            self.swap,
            self.state,
            self.ledger,
            self.save,
            watching=self.probations.active,
            on_probation=self.probations.watch,
        )
        self.runner = DeployRunner(self.state, self.ledger, self.swap, self.save)

    def save(self) -> None:
        self.store.save(self.state)

    def deploy_status(self, text: str) -> None:
        self.notifier.status(text)
        self.progress.write(text)

    def tick(self) -> None:
        self.heartbeat.tick(self.stop_requested, self.deploying, self.idle_status)
        if self.deploying is not None and not self.stop_requested:
            # Another app's deploy runs: its waits tick here, and the probations are watched meanwhile.
            try:
                self.probations.poll(nested=True)
            except Exception:  # a bug there must not fail the deploy that ticked
                log.exception("internal error while watching the probations; retrying")

    def idle_status(self) -> str:
        waiting = self.converger.waiting
        return idle_status(self.config.apps, self.state, self.last_failure, self.probations.status(), waiting)

    def _on_signal(self, signum: int, _frame: object) -> None:
        # Flags only: the wake-up comes from the kernel writing to the waker's pipe (waker.py).
        if signum == signal.SIGHUP:
            self.reload_requested = True
        else:
            self.stop_requested = True

    # --- converging ---------------------------------------------------------------------------------
    def try_converge(self) -> None:
        """Converge; on any failure say what is wrong (journal, STATUS) and retry at the next wake-up."""
        try:
            if self.adopting:
                self._adopt_from_fixed_snippets()
            failures = self.converger.converge(self.config.apps.values())
        except Exception as err:  # whatever it is, the agent stays up, says so, and retries
            # Once per distinct cause: the retry runs on every wake-up.
            repeated = str(err) == self._converge_error
            self._converge_error = str(err)
            if isinstance(err, ZddError):
                log.log(
                    logging.DEBUG if repeated else logging.ERROR,
                    "convergence failed: %s; retrying, deploys wait until it succeeds",
                    err,
                )
            elif not repeated:
                log.exception("convergence failed with an internal error; retrying")
            self.notifier.status(f"waiting: {err}")
            return
        if failures:
            self.last_failure = failures[-1]
        if self._converge_error:
            log.log(NOTICE, "convergence succeeded after: %s", self._converge_error)
            self._converge_error = ""
        self.converged = True
        self._last_converge = time.monotonic()

    def _adopt_from_fixed_snippets(self) -> None:
        """No state, no routes.toml, no dynamic snippet: after `zdd detach` and a purge, the snippet names
        the live container's address; that container's instance label is this agent's from now on."""
        for app in self.config.apps.values():
            try:
                addresses = snippet_fixed_addresses(self.config.snippet_path(app.name).read_text(encoding="utf-8"))
            except OSError:
                continue
            found = self.docker.containers(app, instance="")
            owner = next((c.instance for c in found if c.address and c.address in addresses), "")
            if owner:
                where = " ".join(addresses)
                log.warning("no state: adopting instance %s, whose containers serve %s at %s", owner, app.name, where)
                self.state.instance = owner
                self._build(self.config)
                # The containers that snippet names are the ones to adopt (reconcile adopts what is routed).
                self.router.routes.save(RouteTable(owner, {app.name: [addresses]}))
                break
        self.adopting = False

    # --- signals and reload -------------------------------------------------------------------------
    def reload_config(self) -> None:
        self.notifier.reloading()
        previous = self.config
        try:
            config = load_config(previous.source or Path(), state_dir=previous.state_dir_override)
            # Where the state and the snippets live cannot move under a running agent (its locks, and the
            # Caddyfile's import lines); everything else applies now. A container that runs keeps the
            # port and network it started with (its labels); a new value applies to the next deploy.
            moved = [
                key
                for key, now, before in (
                    ("state_dir", config.state_dir, previous.state_dir),
                    ("caddy.snippet_dir", config.snippet_dir, previous.snippet_dir),
                )
                if now != before
            ]
            if moved:
                raise ConfigError(f"{', '.join(moved)} cannot change while zdd runs; restart zdd to apply it")
            self._build(config)
        except ZddError as err:
            self._build(previous)
            log.error("reload refused, keeping the running config: %s", err)
        else:
            self.probations.reconfigure(config.apps)
            self.router.ensure_snippets({})
            self.converged = False  # converge with the new settings (e.g. a new caddy.resolver)
            log.log(NOTICE, "reloaded config %s (%d apps)", config.source, len(config.apps))
        self.notifier.send("READY=1")

    # --- main ---------------------------------------------------------------------------------------
    def run(self) -> int:
        state_lock = StateLock(self.config.state_dir)
        state_lock.acquire()
        snippet_lock = SnippetDirLock(self.config.snippet_dir, self.config.state_dir)
        watcher = QueueWatcher(self.config.queue_path, self.waker.wake, self.config.requests_dir)
        try:
            snippet_lock.acquire()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, self._on_signal)
            self.waker.wake_on_signals()
            self.queue.ensure_exists()
            self.drop.ensure_exists()
            self.router.ensure_snippets({n: [a.current.addresses] for n, a in self.state.apps.items() if a.current})
            # Converging may finish a deploy a crash cut short (its drain, the rest of its probation): ask
            # systemd for that time before READY=1, or TimeoutStartSec would kill the agent mid-way.
            bound = max((stop_bound(app) + app.probation for app in self.config.apps.values()), default=0)
            if bound:
                self.notifier.send(f"EXTEND_TIMEOUT_USEC={int(bound * 1e6)}")
            self.try_converge()
            watcher.start()
            try:
                self.intake.take()  # what was written while zdd was down
            except (ZddError, OSError) as err:
                log.error("queue: %s; will retry", err)
            self.notifier.ready(self.idle_status())
            log.log(NOTICE, "zdd agent ready: %s", self.idle_status())
            self.reporting.publish(self.ledger.take_ended())
            self.reporting.write_metrics(up=True)
            self.loop()
        finally:
            self.reporting.stop()
            watcher.stop()
            snippet_lock.release()
            state_lock.release()
            self.waker.close()
        return 0

    def loop(self) -> None:
        while not self.stop_requested:
            timeout = self.reconcile_interval()  # re-check the queue and converge again, woken or not
            if self.notifier.watchdog_interval:
                timeout = min(timeout, self.notifier.watchdog_interval / 2)
            if self.queue.has_open_claims or not self.converged:
                timeout = min(timeout, 1.0)  # read late writers, then let the claimed file go
            due = self.probations.due_in()
            if due is not None:
                timeout = min(timeout, due)
            self.waker.wait(timeout)
            self.tick()
            if time.monotonic() - self._last_converge >= self.reconcile_interval():
                self.converged = False  # converge again: dockerd may have restarted a container elsewhere
            try:
                if self.reload_requested:
                    self.reload_requested = False
                    self.reload_config()
                self.intake.take()  # on every wake-up: inotify may merge or drop events
                self.probations.poll()  # a watched app's own checks: whatever converging the others needs
                if not self.converged:
                    self.try_converge()
                if self.converged:
                    self.run_pending()
            except ZddError as err:
                log.error("%s; will retry", err)
            except OSError as err:
                log.error("%s; will retry", err)
            except Exception:  # a bug must not kill the agent (systemd would restart it in a loop)
                log.exception("internal error in the main loop; will retry")
            self.reporting.publish(self.ledger.take_ended())  # after the save: a hook reading the state sees it
            if self.converged:
                self.notifier.status(self.idle_status())
        self.tick()  # announces STOPPING=1 if the signal came while idle
        try:
            if self.probations.watches:  # their old containers' stops, beyond TimeoutStopSec if need be
                self.notifier.send(f"EXTEND_TIMEOUT_USEC={int(self.probations.stop_bound() * 1e6)}")
            self.probations.cut_short()
        except Exception:  # the journal says "probation": the next start finishes what this could not
            log.exception("internal error while ending the probations; the next start finishes them")
        self.reporting.publish(self.ledger.take_ended())
        log.log(NOTICE, "zdd agent stopping: %s", self.idle_status())

    def reconcile_interval(self) -> float:
        """How often the agent converges while idle: a Swarm moves tasks by itself (a node fails or is
        drained), and its events do not cover tasks, so an agent with Swarm apps looks every few seconds."""
        if any(app.engine == "swarm" for app in self.config.apps.values()):
            return min(self.config.reconcile_interval, SWARM_FOLLOW_INTERVAL)
        return self.config.reconcile_interval

    def run_pending(self) -> None:
        for name, app in self.config.apps.items():
            if self.stop_requested or not self.converged:
                return
            if self.probations.active(name) or name in self.converger.waiting:
                continue  # its next deploy waits for the probation's verdict (or its Swarm); other apps' do not
            if self.state.app(name).phase:  # a deploy's end left to the converger (an outage cut it short)
                self.converged = False
                return
            entry = self.ledger.next_request(name)
            if not entry:
                continue
            self.deploying = app
            try:
                ran = self.runner.run(app, entry)
            finally:
                self.deploying = None
            if ran.probation and ran.probation.old and ran.probation.probation_until is not None:
                self.probations.watch(
                    app, entry.deploy_id, ran.probation.running, ran.probation.old, ran.probation.probation_until
                )
            self._after(app, ran, entry.result == Result.SUCCEEDED)
            if ran.converge_first:
                return
            self.notifier.status(self.idle_status())

    def _probation_ended(self, watch: Watch, error: ZddError | None) -> None:
        ran = self.runner.end_probation(watch, error)
        self._after(watch.app, ran, error is None)

    def _after(self, app: AppConfig, ran: Ran, succeeded: bool) -> None:
        """What a deploy's end changes for the agent: the last failure for STATUS, pruning, converging."""
        if ran.failure:
            self.last_failure = ran.failure
        elif succeeded and not ran.probation:
            self.last_failure = ""
            # A Swarm app's images are on its nodes, each node's own to prune (docs/swarm.md).
            if app.engine == "local" and prune_app(app, self.config.apps, self.state, self.runtime, self.tick):
                self.save()
        if ran.converge_first:
            self.converged = False
