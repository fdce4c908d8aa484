"""Convergence: make what runs, what zdd dns answers and what state.toml says agree, for every app.

At start-up, after an outage (dockerd, Caddy or zdd dns not answering), and every reconcile_interval
while idle (dockerd may restart a container on another IP). reconcile.plan_app decides; this carries the
plan out: finish a deploy that had switched, route back after a failed probation, adopt a serving
container after lost state, remove what never went live, settle the ledger. (docs/ARCHITECTURE.md, 4.)
"""

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from .caddy import CaddyRouter
from .config import AppConfig
from .docker_runtime import DockerRuntime
from .errors import PermanentError, TemporaryError
from .ledger import TERMINAL, Ledger, Result
from .reconcile import ROLLING_BACK, Found, Interrupted, Plan, plan_app, slot_restarts
from .state import Running, State
from .swap import Container, Swap
from .systemd import NOTICE

log = logging.getLogger("zdd.agent")


class Converger:
    def __init__(
        self,
        runtime: DockerRuntime,
        router: CaddyRouter,
        swap: Swap,
        state: State,
        ledger: Ledger,
        save: Callable[[], None],
        clock: Callable[[], float] = time.time,
        watching: Callable[[str], bool] = lambda app: False,
        on_probation: Callable[[AppConfig, str, Running, Running, float], None] | None = None,
    ):
        self.runtime, self.router, self.swap = runtime, router, swap
        self.state, self.ledger, self.save, self.clock = state, ledger, save, clock
        # An app whose probation the agent watches is left alone (probation.py ends it); one found in
        # probation after a restart is handed to the watch for the rest of it.
        self.watching, self.on_probation = watching, on_probation
        # Apps on a Swarm the last convergence could not bring to agree, with why: their deploys wait.
        self.waiting: dict[str, str] = {}
        self.refused: set[str] = set()  # Swarm tasks that failed the gate when their slot's task was followed

    def converge(self, apps: Iterable[AppConfig]) -> list[str]:
        """Converge every app; returns the deploys it found failed (for STATUS). Raises ZddError when
        Docker, zdd dns or Caddy cannot be brought to agree yet: the caller retries."""
        self.runtime.ensure_network()
        failures = []
        for app in apps:
            try:
                failure = self.converge_app(app)
            except TemporaryError as err:
                if app.engine == "local":
                    raise
                # A Swarm app's own trouble (its manager, the Swarm's quorum) holds up only that app.
                if self.waiting.get(app.name) != str(err):
                    log.error("%s: convergence failed: %s; retrying, its deploys wait until it succeeds", app.name, err)
                self.waiting[app.name] = str(err)
                continue
            if self.waiting.pop(app.name, None):
                log.log(NOTICE, "%s: convergence succeeded again", app.name)
            if failure:
                failures.append(failure)
        return failures

    def converge_app(self, app: AppConfig) -> str:
        if self.watching(app.name):
            return ""
        app_state = self.state.app(app.name)
        found = self._unrefused(self.swap.runtime_for(app).containers(app))
        if app_state.current and not app_state.phase:
            # A Swarm slot of the live version that runs a new task (its node failed or was drained, or its
            # app exited): the new task is gated where it runs before it is routed in its place.
            # A task whose gate failed is not gated again (Swarm replaces a task that exits, with a new id):
            # a gate holds the main loop for up to start_timeout.
            restarted = slot_restarts(app_state.current, found)
            moved = {old: Container(new.id, new.name, new.address) for old, new in restarted.items()}
            try:
                followed = self.swap.follow(app, app_state.current, moved)
            except PermanentError as err:  # the route keeps the others; a new task in the slot is gated again
                self.refused |= {new.id for new in restarted.values()}
                found = self._unrefused(found)
                log.error("%s; it stays unrouted", err)
                followed = app_state.current
            if followed != app_state.current:
                app_state.current = followed
                self.save()
        routed = {address for addresses in self.router.routed(app.name) for address in addresses}
        plan = plan_app(app.name, app_state, found, routed, self.clock())
        for note in plan.notes:
            log.warning("%s", note)
        deploy_id = app_state.phase_data.get("deploy", "")
        image_id = app_state.phase_data.get("image", "")
        if plan.drain_and_stop and plan.current:
            try:
                until = self.swap.finish(
                    app,
                    plan.routable(plan.current),
                    plan.routable(plan.drain_and_stop),
                    deploy_id,
                    plan.probation_until,
                )
                if until is not None and self.on_probation:
                    # Live, with probation left: the state keeps saying "probation" until the watch ends it.
                    self._remove(app, plan.remove, kept_groups(found, plan))
                    self.on_probation(app, deploy_id, plan.current, plan.drain_and_stop, until)
                    return ""
                if until is not None:  # a converger built without a watcher (unit tests) ends it now: the old one goes
                    self.swap.retire(app, plan.current, plan.drain_and_stop, deploy_id)
            except PermanentError as err:
                if app_state.phase != ROLLING_BACK:
                    # Not a verdict on the version (e.g. Caddy refused a reload): keep the journal, retry.
                    raise TemporaryError(f"{app.name}: finishing deploy {deploy_id}: {err}") from err
                # The rest of its probation failed: the swap routed back and journalled it; settle that.
                log.error("%s: deploy %s failed: %s", app.name, deploy_id, err)
                return self.converge_app(app) or f"{app.name}: {err}"
        else:
            # Route first, remove after: never remove a container zdd dns may still answer.
            self.router.ensure_route(app, [plan.routable(plan.current).addresses] if plan.current else [])
        self._remove(app, plan.remove, kept_groups(found, plan))
        previous = app_state.current
        if plan.interrupted == Interrupted.AFTER_SWITCH and previous and previous != plan.current:
            app_state.previous_tag, app_state.previous_reference = previous.tag, previous.reference
        unchanged = plan.current == previous and not app_state.phase and not plan.remove
        app_state.current = plan.current
        app_state.phase, app_state.phase_data = "", {}
        settled = self.ledger.settle(app.name, deploy_id, plan.interrupted, image_id)
        if settled or not unchanged:
            self.save()
        self._remove_ended_releases(app)
        failed = [e for e in settled if e.result == Result.FAILED]
        return f"{app.name}: {failed[-1].tag}: {failed[-1].reason}" if failed else ""

    def _unrefused(self, found: list[Found]) -> list[Found]:
        """The tasks that failed their gate count as not running: never routed, never followed again."""
        return [replace(c, running=False) if c.id in self.refused else c for c in found]

    def _remove(self, app: AppConfig, containers: list[Found], kept: set[str]) -> None:
        removed: set[str] = set()
        for found in containers:
            if found.group and found.group in kept | removed:
                continue  # a task of a Swarm colour that serves: removing it would scale the colour to 0
            self.swap.runtime_for(app).remove(found.id)
            if found.group:
                removed.add(found.group)
                log.info("%s: scaled %s to 0 tasks (not live; kept for going back)", app.name, found.group)
            else:
                log.info("%s: removed container %s (not live)", app.name, found.name)

    def _remove_ended_releases(self, app: AppConfig) -> None:
        """A release container stays while its deploy may still be retried (it tells the retry that the
        command ran); once that deploy has ended, it goes."""
        pending = {e.deploy_id for e in self.state.history if e.app == app.name and e.result not in TERMINAL}
        runtime = self.swap.runtime_for(app)
        for container_id, name, deploy in runtime.release_containers(app):
            if deploy in pending:
                continue
            if runtime.exit_code(container_id) is None:  # never kill a migration half-way
                log.warning("%s: the release command of ended deploy %s still runs in %s", app.name, deploy, name)
                continue
            runtime.remove(container_id)
            log.info("%s: removed release container %s (deploy %s has ended)", app.name, name, deploy)


def kept_groups(found: list[Found], plan: Plan) -> set[str]:
    """The Swarm colours the plan keeps: those with a task, or a slot (its task not running again yet), in
    its live or draining version."""
    replicas = [r for running in (plan.current, plan.drain_and_stop) if running for r in running.replicas]
    ids, names = {r.container_id for r in replicas}, {r.container_name for r in replicas}
    return {c.group for c in found if c.group and (c.id in ids or c.name in names)}
