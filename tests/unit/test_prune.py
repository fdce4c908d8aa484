"""Which images a deploy prunes: from the history alone, never the live one or the rollback target."""

import pytest

from zdd.prune import Deployed, images_to_prune, kept_images
from zdd.state import HistoryEntry


def entry(tag: str, result: str = "succeeded", app: str = "web", image: str | None = None, **extra) -> HistoryEntry:
    return HistoryEntry(
        deploy_id=f"d-{app}-{tag}-{result}",
        app=app,
        tag=tag,
        reference=f"r/{app}:{tag}",
        requested_at=0.0,
        result=result,
        image_id=f"sha256:{tag}" if image is None else image,
        **extra,
    )


def tags(pruned: list[Deployed]) -> list[str]:
    return [p.reference.rpartition(":")[2] for p in pruned]


HISTORY = [entry(f"v{n}") for n in range(1, 7)]  # v1 .. v6 went live in turn; v6 is live, v5 the rollback


@pytest.mark.parametrize(
    "keep, rollback, pruned",
    [
        (3, "r/web:v5", ["v1", "v2"]),  # live v6 + v5, v4, v3
        (1, "r/web:v5", ["v1", "v2", "v3", "v4"]),
        (0, "r/web:v5", ["v1", "v2", "v3", "v4"]),  # keep 0 still keeps what rollback deploys
        (0, "r/web:v2", ["v1", "v3", "v4", "v5"]),  # after `zdd rollback` to v2 ... v2 is the target
        (0, "", ["v1", "v2", "v3", "v4", "v5"]),
        (10, "r/web:v5", []),
    ],
)
def test_keeps_the_live_image_the_rollback_target_and_the_newest_n(keep, rollback, pruned):
    kept = kept_images("web", HISTORY, "sha256:v6", rollback, keep)
    assert tags(images_to_prune("web", HISTORY, kept)) == pruned


def test_images_zdd_ran_are_candidates_including_failed_deploys_but_only_live_ones_are_kept():
    history = [
        entry("v1"),
        entry("nopull", "failed", image=""),  # failed before it had an image: nothing to remove
        entry("bad", "failed"),  # pulled and ran, then failed its health gate: zdd's image, removed
        entry("v2", "unchanged"),  # was already live: its image is recorded by the succeeded entry
        entry("v3", "superseded", image=""),
        entry("v4"),
    ]
    kept = kept_images("web", history, "sha256:v4", "", 1)  # keep 1: a failed version never counts
    assert kept == {"sha256:v4", "sha256:v1"}
    assert tags(images_to_prune("web", history, kept)) == ["bad"]
    kept = kept_images("web", history, "sha256:v4", "", 0)
    assert tags(images_to_prune("web", history, kept)) == ["v1", "bad"]


def test_an_image_another_app_runs_is_never_pruned():
    history = [entry("v1"), entry("v1", app="api", image="sha256:v1"), entry("v2")]
    kept = kept_images("web", history, "sha256:v2", "", 0) | kept_images("api", history, "sha256:v1", "", 0)
    assert images_to_prune("web", history, kept) == []


def test_an_image_already_pruned_is_not_tried_again():
    history = [entry("v1", image_pruned=True), entry("v2"), entry("v3")]
    kept = kept_images("web", history, "sha256:v3", "", 0)
    assert tags(images_to_prune("web", history, kept)) == ["v2"]


def test_a_version_deployed_twice_counts_once():
    history = [entry("v1"), entry("v2"), entry("v1"), entry("v3")]
    history[2].deploy_id = "again"
    kept = kept_images("web", history, "sha256:v3", "", 1)
    assert kept == {"sha256:v3", "sha256:v1"}
    assert tags(images_to_prune("web", history, kept)) == ["v2"]


def test_two_names_of_one_image_are_both_removed():
    history = [entry("v1"), entry("stable", image="sha256:v1"), entry("v2")]
    kept = kept_images("web", history, "sha256:v2", "", 0)
    assert tags(images_to_prune("web", history, kept)) == ["v1", "stable"]
