"""Which images to remove after a deploy: those of versions zdd itself ran, older than the last N.

Decided from the deploy history alone (images_to_prune, kept_images: pure). Only images zdd ran are
considered: a history entry records the image id it deployed, whether it went live or failed (a failed
deploy's image is zdd's too, and would otherwise fill the disk); an image the user pulled or built for
anything else is never in that history, so never removed. prune_app carries the list out.
"""

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from .config import AppConfig
from .errors import ZddError
from .ledger import Result
from .state import HistoryEntry, State

log = logging.getLogger("zdd.prune")
RAN = (Result.SUCCEEDED, Result.FAILED)  # entries whose image zdd pulled or ran


@dataclass(frozen=True)
class Deployed:
    """An image zdd ran, by the reference it was deployed from and the image id that reference meant."""

    reference: str
    image_id: str


def kept_images(app: str, history: Iterable[HistoryEntry], current: str, rollback: str, keep: int) -> set[str]:
    """Image ids of `app` that stay: the live one, the `keep` newest before it, and the rollback target
    (what `zdd rollback` deploys) even when it is older than those."""
    newest_first = [e for e in reversed(list(history)) if e.app == app and e.result == Result.SUCCEEDED and e.image_id]
    # (kept: only versions that went live count towards keep_images; a failed one is never kept for itself)
    previous: list[str] = []
    for entry in newest_first:
        if entry.image_id != current and entry.image_id not in previous:
            previous.append(entry.image_id)
    kept = set(previous[:keep]) | ({current} if current else set())
    target = next((e.image_id for e in newest_first if e.reference == rollback), None)
    return kept | {target} if target else kept


def images_to_prune(app: str, history: Iterable[HistoryEntry], kept: set[str]) -> list[Deployed]:
    """Every (reference, image id) of `app` zdd ran, not kept and not pruned already."""
    found: list[Deployed] = []
    for entry in history:
        if entry.app != app or entry.result not in RAN or not entry.image_id or entry.image_pruned:
            continue
        deployed = Deployed(entry.reference, entry.image_id)
        if entry.image_id not in kept and deployed not in found:
            found.append(deployed)
    return found


class ImageRemover(Protocol):
    def remove_image(self, reference: str, image_id: str) -> str: ...


def prune_app(
    app: AppConfig, apps: Mapping[str, AppConfig], state: State, runtime: ImageRemover, tick: Callable[[], None]
) -> bool:
    """Remove the images of this app's versions older than its keep_images, never one that is live (for
    any app) or that `zdd rollback` needs. A failure is logged and never fails a deploy. True when it
    marked an entry pruned (state must be saved)."""
    kept = {a.current.image_id for a in state.apps.values() if a.current}
    for name, config in apps.items():
        app_state = state.app(name)
        live = app_state.current.image_id if app_state.current else ""
        kept |= kept_images(name, state.history, live, app_state.previous_reference, config.keep_images)
    marked = False
    for image in images_to_prune(app.name, state.history, kept):
        try:
            outcome = runtime.remove_image(image.reference, image.image_id)
        except ZddError as err:
            log.warning(
                "%s: could not prune image %s (%s); will retry after the next deploy", app.name, image.reference, err
            )
            break
        log.info("%s: pruning image %s (%s): %s", app.name, image.reference, image.image_id[:19], outcome)
        if not outcome.startswith("kept"):
            for entry in state.history:
                if (entry.reference, entry.image_id) == (image.reference, image.image_id):
                    entry.image_pruned = marked = True
        tick()
    return marked
