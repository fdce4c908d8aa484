"""Intake: what writers left in the queue file and in `zdd deploy`'s request drop, into the ledger.

Both inputs are read on every wake-up (inotify may merge or drop events), their lines put in the order
they were written (newest wins across both), each valid line recorded as a queued request, each invalid
one refused with one log line. The ledger is saved before the drop's files go and before the claim
offsets move on, so a crash in between reads a request again, never loses it.
"""

import logging
from collections.abc import Callable, Mapping

from .errors import RequestError
from .ledger import Ledger
from .queue import QueueFile, RequestDrop
from .reference import parse_request
from .state import State

log = logging.getLogger("zdd.intake")


class Intake:
    def __init__(
        self,
        queue: QueueFile,
        drop: RequestDrop,
        ledger: Ledger,
        state: State,
        save: Callable[[], None],
        repositories: Callable[[], Mapping[str, str]],
    ):
        self.queue, self.drop, self.ledger, self.state = queue, drop, ledger, state
        self.save, self.repositories = save, repositories

    def take(self) -> int:
        """Read both inputs; returns how many requests were queued."""
        entries = self.queue.claim()
        try:
            dropped = self.drop.take()
        except OSError as err:  # the drop directory itself is unusable: the queue file still works
            log.error("queue: cannot read %s: %s; will retry", self.drop.directory, err)
            dropped = []
        entries = sorted(entries + [entry for _, entry in dropped], key=lambda entry: entry.written_at)
        changed = self.state.queue_offsets != self.queue.offsets() or bool(dropped)
        self.state.queue_offsets = self.queue.offsets()  # saved with the requests below, in one write
        queued = 0
        repositories = self.repositories()
        for entry in entries:
            line = entry.line.strip()
            if not line:
                continue
            try:
                request = parse_request(line, repositories)
            except RequestError as err:
                log.error("queue: rejected entry: %s", err)
                continue
            recorded = self.ledger.record(
                request.app, request.ref.version, str(request.ref), entry.claimed_at, entry.uid
            )
            log.info("%s: queued %s (deploy %s)", request.app, request.ref, recorded.deploy_id)
            queued += 1
        if changed or queued:
            self.save()
        self.drop.done([path for path, _ in dropped])
        return queued
