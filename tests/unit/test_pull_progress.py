import pytest

from zdd.pull_progress import PullTally


def downloading(layer: str, current: int, total: int) -> dict:
    return {"status": "Downloading", "id": layer, "progressDetail": {"current": current, "total": total}}


# Messages as Docker streams them, and the (downloaded, to download) after the last one.
CASES = [
    ("nothing yet", [{"status": "Pulling from acme/web", "id": "v2"}], (0, 0)),
    ("a layer waiting has no size", [{"status": "Pulling fs layer", "id": "a", "progressDetail": {}}], (0, 0)),
    ("one layer half way", [downloading("a", 500, 1000)], (500, 1000)),
    (
        "two layers, one done",
        [downloading("a", 500, 1000), downloading("b", 10, 3000), {"status": "Download complete", "id": "a"}],
        (1010, 4000),
    ),
    ("extracting counts as downloaded", [downloading("a", 1, 1000), {"status": "Extracting", "id": "a"}], (1000, 1000)),
    ("already on the host: nothing to fetch", [{"status": "Already exists", "id": "a", "progressDetail": {}}], (0, 0)),
    ("a current past its total is capped", [downloading("a", 2000, 1000)], (1000, 1000)),
    ("a zero total is not a size", [downloading("a", 0, 0)], (0, 0)),
    (
        "the summary lines",
        [downloading("a", 5, 10), {"status": "Digest: sha256:ab"}, {"status": "Status: ok"}],
        (5, 10),
    ),
]


@pytest.mark.parametrize(("messages", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_tally_of_a_pull(messages, expected):
    tally = PullTally()
    for message in messages:
        got = tally.update(message)
    assert got == expected
