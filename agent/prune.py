"""Which images to remove after a deploy: those of versions zdd itself ran, older than the last N.

Pure: decided from the deploy history alone. Only images of versions that went live are considered (a
history entry that succeeded records the image id it ran); an image the user pulled or built for
anything else is never in that history, so never removed. The daemon carries the list out.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from .state import HistoryEntry


@dataclass(frozen=True)
class Deployed:
    """An image zdd ran, by the reference it was deployed from and the image id that reference meant."""

    reference: str
    image_id: str


def kept_images(app: str, history: Iterable[HistoryEntry], current: str, rollback: str, keep: int) -> set[str]:
    """Image ids of `app` that stay: the live one, the `keep` newest before it, and the rollback target
    (what `zdd rollback` deploys) even when it is older than those."""
    newest_first = [e for e in reversed(list(history)) if e.app == app and e.result == "succeeded" and e.image_id]
    previous: list[str] = []
    for entry in newest_first:
        if entry.image_id != current and entry.image_id not in previous:
            previous.append(entry.image_id)
    kept = set(previous[:keep]) | ({current} if current else set())
    target = next((e.image_id for e in newest_first if e.reference == rollback), None)
    return kept | {target} if target else kept


def images_to_prune(app: str, history: Iterable[HistoryEntry], kept: set[str]) -> list[Deployed]:
    """Every (reference, image id) of `app` that went live, is not kept and was not pruned already."""
    found: list[Deployed] = []
    for entry in history:
        if entry.app != app or entry.result != "succeeded" or not entry.image_id or entry.image_pruned:
            continue
        deployed = Deployed(entry.reference, entry.image_id)
        if entry.image_id not in kept and deployed not in found:
            found.append(deployed)
    return found
