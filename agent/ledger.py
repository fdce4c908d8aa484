"""The deploy requests and how each one ended: the rules over state.history, with no I/O.

A request is queued when its line is taken from the queue; the newest queued request of an app runs and
the older ones are superseded; a running one ends succeeded, unchanged or failed. A deploy cut short by
a crash or an outage is settled from what the converger found: finished if it had switched, failed if
the new version died in service, otherwise queued again once: never silently dropped, never run twice.
"""

import logging
import secrets
import time
from collections.abc import Callable
from enum import StrEnum

from .reconcile import Interrupted
from .state import HistoryEntry, State
from .systemd import NOTICE

log = logging.getLogger("zdd.ledger")


class Result(StrEnum):
    """How a request stands. Stored as its string value in state.toml."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    UNCHANGED = "unchanged"
    FAILED = "failed"
    SUPERSEDED = "superseded"


TERMINAL = (Result.SUCCEEDED, Result.UNCHANGED, Result.FAILED, Result.SUPERSEDED)


def new_deploy_id(now: float) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + "-" + secrets.token_hex(2)


class Ledger:
    def __init__(self, state: State, clock: Callable[[], float] = time.time):
        self.state, self.clock = state, clock
        self.ended: list[HistoryEntry] = []  # ended since take_ended(): for notifications and metrics

    def take_ended(self) -> list[HistoryEntry]:
        ended, self.ended = self.ended, []
        return ended

    def record(self, app: str, tag: str, reference: str, requested_at: float, requested_by: int) -> HistoryEntry:
        entry = HistoryEntry(
            deploy_id=new_deploy_id(self.clock()),
            app=app,
            tag=tag,
            reference=reference,
            requested_at=requested_at,
            result=Result.QUEUED,
            requested_by=requested_by,
        )
        self.state.record(entry)
        return entry

    def next_request(self, app: str) -> HistoryEntry | None:
        """Newest wins: earlier queued requests of the app are superseded, and the log says so."""
        queued = [e for e in self.state.history if e.app == app and e.result == Result.QUEUED]
        if not queued:
            return None
        newest = queued[-1]
        for skipped in queued[:-1]:
            self._end(skipped, Result.SUPERSEDED, f"superseded by {newest.tag} before it started")
            log.log(NOTICE, "%s: skipping %s: %s was queued after it", app, skipped.tag, newest.tag)
        return newest

    def start(self, entry: HistoryEntry, from_tag: str) -> None:
        entry.result, entry.started_at, entry.from_tag = Result.RUNNING, self.clock(), from_tag

    def succeeded(self, entry: HistoryEntry, image_id: str, changed: bool, reason: str = "") -> None:
        entry.image_id = image_id
        if changed:
            self._end(entry, Result.SUCCEEDED, reason)
        else:
            self._end(entry, Result.UNCHANGED, reason or f"{entry.tag} was already live")

    def failed(self, entry: HistoryEntry, reason: str, image_id: str = "") -> None:
        entry.image_id = entry.image_id or image_id  # its image is zdd's to prune later, like any other
        self._end(entry, Result.FAILED, reason)

    def requeue(self, entry: HistoryEntry, reason: str) -> None:
        """Back in the queue as it was: zdd stopped it on purpose, which is no attempt of its own."""
        entry.result, entry.reason = Result.QUEUED, reason

    def retry_once(self, entry: HistoryEntry, reason: str) -> bool:
        """A deploy that never went live was cut short (crash, outage): queue it again, once."""
        if entry.attempts >= 1:
            self._end(entry, Result.FAILED, f"{reason}; interrupted twice, not retried")
            return False
        entry.result, entry.reason, entry.attempts = Result.QUEUED, reason, entry.attempts + 1
        return True

    def settle(self, app: str, deploy_id: str, interrupted: Interrupted, image_id: str = "") -> list[HistoryEntry]:
        """Deploys still marked running when none runs were cut short; end each as the converger found
        it. Returns the entries it changed."""
        settled = []
        for entry in self.state.history:
            if entry.app != app or entry.result != Result.RUNNING:
                continue
            settled.append(entry)
            this = entry.deploy_id == deploy_id
            if this and interrupted == Interrupted.AFTER_SWITCH:
                self.succeeded(entry, entry.image_id or image_id, changed=True, reason="finished after an interruption")
            elif this and interrupted == Interrupted.ROLLED_BACK:
                reason = "the new version died or failed its probation after the switch; the previous version serves"
                self.failed(entry, reason, image_id)
            elif self.retry_once(entry, "interrupted before it went live"):
                log.warning("%s: deploy %s of %s was interrupted; retrying it once", app, entry.deploy_id, entry.tag)
        return settled

    def last_ended(self, app: str) -> HistoryEntry | None:
        ended = [e for e in self.state.history if e.app == app and e.result in TERMINAL]
        return ended[-1] if ended else None

    def _end(self, entry: HistoryEntry, result: Result, reason: str) -> None:
        entry.result, entry.reason, entry.ended_at = result, reason, self.clock()
        self.ended.append(entry)
