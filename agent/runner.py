"""One queued request through the swap, and how it ended, in the ledger and in the journal."""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .config import AppConfig
from .errors import StopRequested, TemporaryError, ZddError
from .ledger import Ledger
from .logcontext import deploy_context
from .probation import Watch
from .reconcile import LEFT_TO_CONVERGE
from .reference import parse_reference
from .state import HistoryEntry, Running, State
from .swap import Outcome, Swap
from .systemd import NOTICE

log = logging.getLogger("zdd.agent")


@dataclass(frozen=True)
class Ran:
    failure: str = ""  # for STATUS: what failed, when the deploy did
    converge_first: bool = False  # something did not answer (or a bug): converge before the next deploy
    probation: Outcome | None = None  # live and in probation: the agent watches it (probation.py)


class DeployRunner:
    def __init__(
        self,
        state: State,
        ledger: Ledger,
        swap: Swap,
        save: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ):
        self.state, self.ledger, self.swap, self.save, self.clock = state, ledger, swap, save, clock

    def run(self, app: AppConfig, entry: HistoryEntry) -> Ran:
        app_state = self.state.app(app.name)
        current = app_state.current
        self.ledger.start(entry, current.tag if current else "")
        self.save()
        what = f"{app.name}: {entry.from_tag or '(none)'} -> {entry.tag}"
        ran = Ran()
        with deploy_context(app.name, entry.tag, entry.deploy_id):
            log.log(NOTICE, "%s: deploy %s started", what, entry.deploy_id)
            try:
                ref = parse_reference(entry.reference, app.image)
                outcome = self.swap.deploy(app, ref, current, entry.deploy_id)
            except TemporaryError as err:
                ran = self._after_temporary_failure(app, entry, err, what)
                if app_state.phase in LEFT_TO_CONVERGE:
                    self.save()
                    return ran  # the phase journal stays: the converger finishes the deploy, or its roll-back
            except ZddError as err:
                self.ledger.failed(entry, str(err), app_state.phase_data.get("image", ""))
                ran = Ran(failure=f"{what}: {err}")
                log.error("%s: deploy %s failed: %s", what, entry.deploy_id, err)
            except Exception as err:  # a bug must not kill the agent: converge, go on
                log.exception("%s: deploy %s: internal error", what, entry.deploy_id)
                if app_state.phase in LEFT_TO_CONVERGE:
                    # Live already: the state must keep saying so; the converger finishes it.
                    self.save()
                    return Ran(failure=f"{what}: internal error", converge_first=True)
                self.ledger.failed(entry, f"internal error: {err!r}", app_state.phase_data.get("image", ""))
                ran = Ran(failure=f"{what}: internal error", converge_first=True)
            else:
                if outcome.probation_until is not None:
                    # The entry stays running and the phase journal says "probation" until it ends.
                    log.log(NOTICE, "%s: deploy %s is live; its probation decides", what, entry.deploy_id)
                    self.save()
                    return Ran(probation=outcome)
                self._succeeded(app, entry, outcome.running, current, outcome.changed, what)
            app_state.phase, app_state.phase_data = "", {}
            self.save()
        return ran

    def end_probation(self, watch: Watch, error: ZddError | None) -> Ran:
        """The probation of a live version ended: passed (its old container retired), failed (traffic
        back on the old one), or cut short by an outage (the converger finishes it from the journal)."""
        app, app_state = watch.app, self.state.app(watch.app.name)
        entry = next((e for e in self.state.history if e.deploy_id == watch.deploy_id), None)
        what = watch.what
        with deploy_context(app.name, watch.new.tag, watch.deploy_id):
            if isinstance(error, TemporaryError):
                log.warning("%s: deploy %s: %s; the rest follows once that answers", what, watch.deploy_id, error)
                self.save()
                return Ran(converge_first=True)
            ran = Ran()
            if error is not None:
                log.error("%s: deploy %s failed: %s", what, watch.deploy_id, error)
                if entry:
                    self.ledger.failed(entry, str(error), watch.new.image_id)
                ran = Ran(failure=f"{what}: {error}")
            elif entry:
                self._succeeded(app, entry, watch.new, watch.old, True, what)
            else:  # its history entry was trimmed away meanwhile: the state must still say what serves
                app_state.previous_tag, app_state.previous_reference = watch.old.tag, watch.old.reference
                app_state.current = watch.new
            app_state.phase, app_state.phase_data = "", {}
            self.save()
        return ran

    def _succeeded(
        self, app: AppConfig, entry: HistoryEntry, new: Running, old: Running | None, changed: bool, what: str
    ) -> None:
        app_state = self.state.app(app.name)
        if changed:
            app_state.previous_tag = old.tag if old else ""
            app_state.previous_reference = old.reference if old else ""
            log.log(NOTICE, "%s: deploy %s succeeded in %.1fs", what, entry.deploy_id, self.clock() - entry.started_at)
        self.ledger.succeeded(entry, new.image_id, changed)
        app_state.current = new

    def _after_temporary_failure(self, app: AppConfig, entry: HistoryEntry, err: TemporaryError, what: str) -> Ran:
        """dockerd, Caddy, zdd dns or the registry did not answer. The agent converges first (waiting
        until they answer), then: a deploy that had switched is finished, one that had not is tried once
        more."""
        phase = self.state.app(app.name).phase
        if isinstance(err, StopRequested):
            self.ledger.requeue(entry, str(err))
            log.warning("%s: deploy %s: %s", what, entry.deploy_id, err)
            return Ran(converge_first=True)
        if phase in LEFT_TO_CONVERGE:
            log.warning("%s: deploy %s: %s; it is live, the rest follows once that answers", what, entry.deploy_id, err)
            return Ran(converge_first=True)
        if self.ledger.retry_once(entry, str(err)):
            log.warning("%s: deploy %s: %s; trying it once more once that answers", what, entry.deploy_id, err)
            return Ran(converge_first=True)
        log.error("%s: deploy %s failed (after one retry): %s", what, entry.deploy_id, err)
        return Ran(failure=f"{what}: {err}", converge_first=True)
