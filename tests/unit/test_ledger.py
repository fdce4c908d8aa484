"""The ledger's rules: newest wins, how a run ends, and how a deploy cut short is settled."""

import pytest

from zdd.ledger import Ledger, Result
from zdd.reconcile import Interrupted
from zdd.state import State


def ledger_with(*requests: tuple[str, str]) -> Ledger:
    ledger = Ledger(State(), clock=lambda: 1000.0)
    for app, tag in requests:
        ledger.record(app, tag, f"r/{app}:{tag}", requested_at=1.0, requested_by=-1)
    return ledger


def results(ledger: Ledger) -> list[tuple[str, str, str]]:
    return [(e.app, e.tag, e.result) for e in ledger.state.history]


def test_newest_queued_request_of_an_app_wins_and_the_others_are_superseded():
    ledger = ledger_with(("web", "v1"), ("api", "a1"), ("web", "v2"), ("web", "v3"))
    entry = ledger.next_request("web")
    assert entry.tag == "v3"
    assert results(ledger) == [
        ("web", "v1", "superseded"),
        ("api", "a1", "queued"),  # another app's request is not touched
        ("web", "v2", "superseded"),
        ("web", "v3", "queued"),
    ]
    assert ledger.state.history[0].reason == "superseded by v3 before it started"
    assert ledger.next_request("db") is None


@pytest.mark.parametrize(
    ("end", "expected", "reason"),
    [
        (lambda ledger, e: ledger.succeeded(e, "sha256:2", changed=True), Result.SUCCEEDED, ""),
        (lambda ledger, e: ledger.succeeded(e, "sha256:2", changed=False), Result.UNCHANGED, "v2 was already live"),
        (lambda ledger, e: ledger.failed(e, "health check failed", "sha256:2"), Result.FAILED, "health check failed"),
    ],
)
def test_a_run_ends_with_its_result_reason_and_image(end, expected, reason):
    ledger = ledger_with(("web", "v2"))
    entry = ledger.next_request("web")
    ledger.start(entry, from_tag="v1")
    assert (entry.result, entry.from_tag, entry.started_at) == (Result.RUNNING, "v1", 1000.0)
    end(ledger, entry)
    assert (entry.result, entry.reason, entry.image_id, entry.ended_at) == (expected, reason, "sha256:2", 1000.0)
    assert ledger.last_ended("web") is entry


def test_retry_once_then_fail():
    ledger = ledger_with(("web", "v2"))
    entry = ledger.next_request("web")
    ledger.start(entry, "v1")
    assert ledger.retry_once(entry, "Docker engine unavailable") and entry.result == Result.QUEUED
    ledger.start(entry, "v1")
    assert not ledger.retry_once(entry, "Docker engine unavailable")
    assert entry.result == Result.FAILED and entry.reason.endswith("interrupted twice, not retried")


@pytest.mark.parametrize(
    ("interrupted", "same_deploy", "attempts", "expected", "reason"),
    [
        (Interrupted.AFTER_SWITCH, True, 0, Result.SUCCEEDED, "finished after an interruption"),
        (Interrupted.ROLLED_BACK, True, 0, Result.FAILED, "failed its probation after the switch"),
        (Interrupted.BEFORE_SWITCH, True, 0, Result.QUEUED, "interrupted before it went live"),
        (Interrupted.BEFORE_SWITCH, True, 1, Result.FAILED, "interrupted twice, not retried"),
        (Interrupted.NONE, False, 0, Result.QUEUED, "interrupted before it went live"),  # no phase survived
        (Interrupted.AFTER_SWITCH, False, 0, Result.QUEUED, "interrupted before it went live"),  # another deploy
    ],
)
def test_settle_a_deploy_cut_short(interrupted, same_deploy, attempts, expected, reason):
    ledger = ledger_with(("web", "v2"))
    entry = ledger.next_request("web")
    ledger.start(entry, "v1")
    entry.attempts = attempts
    settled = ledger.settle("web", entry.deploy_id if same_deploy else "other", interrupted, image_id="sha256:2")
    assert settled == [entry]
    assert entry.result == expected and reason in entry.reason
    if expected == Result.SUCCEEDED:
        assert entry.image_id == "sha256:2"  # so that pruning sees it


def test_settle_touches_nothing_when_no_deploy_was_running():
    ledger = ledger_with(("web", "v2"))
    assert ledger.settle("web", "", Interrupted.NONE) == []
    assert results(ledger) == [("web", "v2", "queued")]
